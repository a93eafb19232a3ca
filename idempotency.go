package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// An Idempotency-Key maps to a keyReservation in the status store: the
// task id it stands for, a fingerprint of the request, and whether the
// task's message was confirmed by the broker. A reservation that stays
// unpublished past the submitter's staleAfter belongs to a request that
// died mid-way (its API process crashed between reserving and
// publishing); the next request with the key takes it over and publishes
// the task under the same id, so a client's retry always ends with a
// queued task rather than an id that never runs.
type keyReservation struct {
	taskID      string
	fingerprint string
	published   bool
	at          time.Time
}

func (r keyReservation) encode() string {
	state := "reserved"
	if r.published {
		state = "published"
	}
	return fmt.Sprintf("%s %s %s %d", r.taskID, r.fingerprint, state, r.at.UnixMilli())
}

func decodeReservation(v string) (keyReservation, bool) {
	f := strings.Fields(v)
	if len(f) != 4 || (f[2] != "reserved" && f[2] != "published") {
		return keyReservation{}, false
	}
	ms, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return keyReservation{}, false
	}
	return keyReservation{taskID: f[0], fingerprint: f[1], published: f[2] == "published", at: time.UnixMilli(ms)}, true
}

// keyClaim is what claimKey decided.
type keyClaim struct {
	key    string // the store key; "" without an Idempotency-Key
	taskID string
	// replay: the task was queued by an earlier request; answer with it.
	replay bool
	// value is the reservation this request holds and must publish under.
	value string
}

// idempotencyFingerprint identifies a request's content, so a key reused
// for a different request is refused.
func idempotencyFingerprint(taskType, priority string, args []byte) string {
	sum := sha256.Sum256(append([]byte(taskType+"\x00"+priority+"\x00"), args...))
	return hex.EncodeToString(sum[:16])
}

// claimKey resolves an Idempotency-Key: it reserves it for newID, finds
// the task an earlier request queued, waits for one still in flight, or
// takes over one that died.
func (s taskSubmitter) claimKey(ctx context.Context, owner, idempotencyKey, fingerprint, newID string) (keyClaim, error) {
	sum := sha256.Sum256([]byte(owner + "\x00" + idempotencyKey))
	key := hex.EncodeToString(sum[:])
	mine := keyReservation{taskID: newID, fingerprint: fingerprint, at: s.now()}
	existing, err := s.statuses.reserveKey(ctx, key, mine.encode(), s.keyTTL)
	for {
		if err != nil {
			return keyClaim{}, fmt.Errorf("%w: idempotency key: %v", errStatusUnavailable, err)
		}
		if existing == "" {
			return keyClaim{key: key, taskID: newID, value: mine.encode()}, nil
		}
		r, ok := decodeReservation(existing)
		if !ok || r.fingerprint != fingerprint {
			return keyClaim{}, errIdempotencyMismatch
		}
		if r.published {
			return keyClaim{key: key, taskID: r.taskID, replay: true}, nil
		}
		if s.now().Sub(r.at) > s.staleAfter {
			taken := keyReservation{taskID: r.taskID, fingerprint: fingerprint, at: s.now()}
			swapped, err := s.statuses.swapKey(ctx, key, existing, taken.encode())
			if err != nil {
				return keyClaim{}, fmt.Errorf("%w: idempotency key: %v", errStatusUnavailable, err)
			}
			if swapped {
				s.log.WarnContext(ctx, "taking over an idempotency key whose request never finished", "task_id", r.taskID)
				return keyClaim{key: key, taskID: r.taskID, value: taken.encode()}, nil
			}
		} else {
			// Another request with the key is publishing right now.
			select {
			case <-ctx.Done():
				return keyClaim{}, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
		existing, err = s.statuses.getKey(ctx, key)
		if err == nil && existing == "" {
			// Released: that request failed. Try to reserve it again.
			mine.at = s.now()
			existing, err = s.statuses.reserveKey(ctx, key, mine.encode(), s.keyTTL)
		}
	}
}

// settleKey records the claim's outcome: published, or released for a
// retry of the request when the task was not queued.
func (s taskSubmitter) settleKey(ctx context.Context, c keyClaim, published bool) {
	if c.key == "" || c.replay {
		return
	}
	next := ""
	if published {
		r, _ := decodeReservation(c.value)
		r.published = true
		next = r.encode()
	}
	if _, err := s.statuses.swapKey(ctx, c.key, c.value, next); err != nil {
		// A reservation left unpublished is taken over by the next request
		// with the key, so this costs at most a duplicate message.
		s.log.WarnContext(ctx, "idempotency key not updated", "task_id", c.taskID, "published", published, "error", err)
	}
}
