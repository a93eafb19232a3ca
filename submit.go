package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// taskPublisher puts a task on the queue, now or after a delay; nil means
// the broker confirmed it.
type taskPublisher interface {
	publish(ctx context.Context, m taskMessage) error
	publishDelayed(ctx context.Context, m taskMessage, delay time.Duration) error
}

// keyStore keeps Idempotency-Keys. Its implementations are
// redisKeyStore and memoryKeyStore.
type keyStore interface {
	// reserveKey stores value under key unless the key holds a value
	// already, which it returns ("" when value was stored).
	reserveKey(ctx context.Context, key, value string, ttl time.Duration) (existing string, err error)
	// swapKey replaces the key's value with value if it still holds old
	// (an empty value deletes it), keeping its expiry, and reports whether
	// it did.
	swapKey(ctx context.Context, key, old, value string) (bool, error)
	// getKey returns the key's value, "" when it has none.
	getKey(ctx context.Context, key string) (string, error)
}

// taskSubmitter accepts tasks: it records each as PENDING and queues it.
type taskSubmitter struct {
	statuses  statusStore
	keys      keyStore
	publisher taskPublisher
	log       *slog.Logger
	now       func() time.Time
	metrics   *metrics
	tracing   *tracing
	// keyTTL is how long an Idempotency-Key keeps pointing at its task.
	keyTTL time.Duration
	// keyTakeoverAfter is how long a reserved, unpublished key may be in
	// flight before another request takes it over (see keyReservation).
	keyTakeoverAfter time.Duration
}

// submitterConfig is what a taskSubmitter needs from errand's settings.
type submitterConfig struct {
	resultTTL      time.Duration
	publishTimeout time.Duration
}

func newTaskSubmitter(statuses statusStore, keys keyStore, publisher taskPublisher, cfg submitterConfig,
	log *slog.Logger, m *metrics, tr *tracing, now func() time.Time) taskSubmitter {
	return taskSubmitter{
		statuses: statuses, keys: keys, publisher: publisher, log: log, now: now, metrics: m, tracing: tr,
		// A key outlives the task's result, so a retry after the result
		// has expired still finds its task rather than making another.
		keyTTL: max(cfg.resultTTL, time.Hour),
		// A request that has held its key for longer than two full
		// publish attempts has died.
		keyTakeoverAfter: max(15*time.Second, 2*(cfg.publishTimeout+statusOpTimeout)),
	}
}

// taskSpec is a task as a client asked for it, its arguments checked
// against its type.
type taskSpec struct {
	Type     string
	Args     json.RawMessage
	Priority string
	// RunAt is when the task is due; zero, or a time already past, is now.
	RunAt time.Time
	// When is RunAt as the client gave it ("countdown 5", an eta), so a
	// retry of the same request matches its Idempotency-Key although its
	// countdown ends later.
	When string
	// CallbackURL is where the task's final status is POSTed; "" for none.
	CallbackURL string
	// ConcurrencyKey groups tasks whose running is limited together; ""
	// for none.
	ConcurrencyKey string
}

// submission is the outcome of a submit.
type submission struct {
	id string
	// status is the task's state: PENDING for a new task; for a replay,
	// the state the earlier request's task has reached.
	status string
	// replayed is true when an earlier request with the same
	// Idempotency-Key made the task; id is that task's.
	replayed bool
}

// submit queues a task and returns its id once the broker has confirmed
// it. With an idempotency key, the first request reserves the key for its
// task id and every later one with the same key and request gets that id
// back.
func (s taskSubmitter) submit(ctx context.Context, spec taskSpec, idempotencyKey string) (submission, error) {
	msg := taskMessage{Type: spec.Type, Args: spec.Args, Priority: spec.Priority, Owner: taskOwner(ctx), ETA: spec.RunAt,
		CallbackURL: spec.CallbackURL, ConcurrencyKey: spec.ConcurrencyKey}
	claim, err := s.claimKey(ctx, msg.Owner, idempotencyKey, idempotencyFingerprint(spec))
	if err != nil {
		return submission{}, err
	}
	if claim.replay {
		sub := s.replay(ctx, claim.taskID)
		if claim.unconfirmed && stateRank(sub.status) == 0 {
			// Whether it was queued is still unknown: say so again, rather
			// than 202, which only a confirm earns.
			return submission{}, &unconfirmedError{taskID: claim.taskID,
				err: fmt.Errorf("%w: the publish of %s, for an earlier request with this key", errPublishUnconfirmed, claim.taskID)}
		}
		return sub, nil
	}
	msg.ID = claim.taskID
	state, err := s.enqueue(ctx, msg)
	// A task whose publish was not confirmed keeps its key: a retry with
	// it gets this task, which may be queued, rather than a second one.
	s.settleKey(ctx, claim, err)
	if err != nil {
		return submission{}, err
	}
	// A line of its own per submit only at debug level: the request's
	// access-log line names the task.
	s.log.DebugContext(ctx, "task queued", "task_id", msg.ID, "task_type", msg.Type, "priority", msg.Priority, "request_id", requestID(ctx))
	return submission{id: msg.ID, status: state}, nil
}

// claimKey resolves an Idempotency-Key: it reserves it for a new task
// id, finds the task an earlier request queued, waits for one still in
// flight, or takes over one that died. Without a key the claim is just a
// new task id.
func (s taskSubmitter) claimKey(ctx context.Context, owner, idempotencyKey, fingerprint string) (keyClaim, error) {
	if idempotencyKey == "" {
		return keyClaim{taskID: newUUID()}, nil
	}
	sum := sha256.Sum256([]byte(owner + "\x00" + idempotencyKey))
	key := hex.EncodeToString(sum[:])
	newID := newUUID()
	mine := keyReservation{taskID: newID, fingerprint: fingerprint, state: keyReserved, at: s.now()}
	existing, err := s.keys.reserveKey(ctx, key, mine.encode(), s.keyTTL)
	for {
		if err != nil {
			return keyClaim{}, fmt.Errorf("%w: idempotency key: %w", errStatusUnavailable, err)
		}
		if existing == "" {
			return keyClaim{key: key, taskID: newID, value: mine.encode()}, nil
		}
		r, ok := decodeReservation(existing)
		if !ok || r.fingerprint != fingerprint {
			return keyClaim{}, errIdempotencyMismatch
		}
		if r.state != keyReserved {
			return keyClaim{key: key, taskID: r.taskID, replay: true, unconfirmed: r.state == keyUnconfirmed}, nil
		}
		if s.now().Sub(r.at) > s.keyTakeoverAfter {
			taken := keyReservation{taskID: r.taskID, fingerprint: fingerprint, state: keyReserved, at: s.now()}
			swapped, err := s.keys.swapKey(ctx, key, existing, taken.encode())
			if err != nil {
				return keyClaim{}, fmt.Errorf("%w: idempotency key: %w", errStatusUnavailable, err)
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
		existing, err = s.keys.getKey(ctx, key)
		if err == nil && existing == "" {
			// Released: that request failed. Try to reserve it again.
			mine.at = s.now()
			existing, err = s.keys.reserveKey(ctx, key, mine.encode(), s.keyTTL)
		}
	}
}

// replay is the answer to a request whose Idempotency-Key an earlier
// request used: that request's task, in its current state.
func (s taskSubmitter) replay(ctx context.Context, id string) submission {
	sub := submission{id: id, status: statePending, replayed: true}
	if st, err := s.statuses.get(ctx, id); err == nil {
		sub.status = st.Status
	}
	return sub
}

// enqueue records msg as PENDING (or SCHEDULED, when it is due later) and
// publishes it, and returns that state. The status is written first, so a
// fast worker's PROGRESS or SUCCESS can never be overwritten by it, and
// removed again if the publish fails, so no status claims a task that was
// never queued.
func (s taskSubmitter) enqueue(ctx context.Context, msg taskMessage) (string, error) {
	// The producer span is the parent of the worker's consumer span: its
	// context travels with the message.
	ctx, span := s.tracing.tracer.Start(ctx, "publish "+msg.Type, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "rabbitmq"), attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.message.id", msg.ID), attribute.String("errand.task_type", msg.Type)))
	defer span.End()
	msg.Trace = propagation.MapCarrier{}
	s.tracing.propagator.Inject(ctx, propagation.MapCarrier(msg.Trace))
	msg.EnqueuedAt = s.now()
	delay := msg.ETA.Sub(msg.EnqueuedAt)
	first := taskStatus{TaskID: msg.ID, Status: statePending, TaskType: msg.Type, Owner: msg.Owner, TraceID: traceID(ctx), UpdatedAt: msg.EnqueuedAt,
		Args: msg.Args, Priority: msg.Priority, CreatedAt: &msg.EnqueuedAt, CallbackURL: msg.CallbackURL,
		ConcurrencyKey: msg.ConcurrencyKey}
	if delay > 0 {
		first.Status, first.ScheduledFor = stateScheduled, &msg.ETA
	} else {
		msg.ETA = time.Time{}
	}
	if err := s.statuses.put(ctx, first, 0); err != nil {
		return "", fmt.Errorf("%w: record %s %s: %w", errStatusUnavailable, first.Status, msg.ID, err)
	}
	publishStart := time.Now()
	var err error
	if delay > 0 {
		err = s.publisher.publishDelayed(ctx, msg, delay)
	} else {
		err = s.publisher.publish(ctx, msg)
	}
	s.metrics.observePublish(ctx, msg.Type, msg.Priority, delay > 0, publishStart, err)
	if errors.Is(err, errPublishUnconfirmed) {
		// The broker may have the message: its status stays, so the task
		// can be followed, and is not said to be refused.
		span.SetStatus(codes.Error, err.Error())
		s.log.WarnContext(ctx, "publish not confirmed; the task may run", "task_id", msg.ID, "error", err)
		return "", &unconfirmedError{taskID: msg.ID, err: fmt.Errorf("queue %s %s: %w", msg.Type, msg.ID, err)}
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		s.removePending(ctx, msg.ID, msg.Owner)
		return "", fmt.Errorf("queue %s %s: %w", msg.Type, msg.ID, err)
	}
	return first.Status, nil
}

// removePending undoes the PENDING status of a task that was not queued.
func (s taskSubmitter) removePending(ctx context.Context, id, owner string) {
	// The client may be gone already, but the pending status must still
	// go, so the undo gets a context of its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusOpTimeout)
	defer cancel()
	if err := s.statuses.deletePending(ctx, id, owner); err != nil {
		s.log.Error("pending status of an unqueued task not removed", "task_id", id, "error", err)
	}
}

// settleKey records the outcome of the claim's publish (err): published;
// unconfirmed, when the task may be queued; or else released, for a
// retry of the request, since the task was not queued.
func (s taskSubmitter) settleKey(ctx context.Context, c keyClaim, err error) {
	if c.key == "" || c.replay {
		return
	}
	// The outcome is recorded even when the client has gone: the next
	// request with the key depends on it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusOpTimeout)
	defer cancel()
	next := ""
	if err == nil || errors.Is(err, errPublishUnconfirmed) {
		r, _ := decodeReservation(c.value)
		r.state = keyPublished
		if err != nil {
			r.state = keyUnconfirmed
		}
		next = r.encode()
	}
	if _, swapErr := s.keys.swapKey(ctx, c.key, c.value, next); swapErr != nil {
		// A reservation left unpublished is taken over by the next request
		// with the key, so this costs at most a duplicate message.
		s.log.WarnContext(ctx, "idempotency key not updated", "task_id", c.taskID, "outcome", cmp.Or(next, "released"), "error", swapErr)
	}
}

// newUUID returns a random (version 4) UUID, the form Celery's task ids
// have.
func newUUID() string {
	var raw [16]byte
	_, _ = rand.Read(raw[:])    // crypto/rand.Read never fails on supported platforms
	raw[6] = raw[6]&0x0f | 0x40 // version 4
	raw[8] = raw[8]&0x3f | 0x80 // variant 10xx
	var text [36]byte
	hex.Encode(text[0:8], raw[0:4])
	hex.Encode(text[9:13], raw[4:6])
	hex.Encode(text[14:18], raw[6:8])
	hex.Encode(text[19:23], raw[8:10])
	hex.Encode(text[24:36], raw[10:16])
	text[8], text[13], text[18], text[23] = '-', '-', '-', '-'
	return string(text[:])
}

// An Idempotency-Key maps to a keyReservation in the key store: the
// task id it stands for, a fingerprint of the request, and whether the
// task's message was confirmed by the broker. A reservation that stays
// unpublished past the submitter's keyTakeoverAfter belongs to a request that
// died mid-way (its API process crashed between reserving and
// publishing); the next request with the key takes it over and publishes
// the task under the same id, so a client's retry always ends with a
// queued task rather than an id that never runs.
type keyReservation struct {
	taskID      string
	fingerprint string
	state       keyState
	at          time.Time
}

// keyState is where a reservation's task stands.
type keyState string

const (
	keyReserved  keyState = "reserved"  // being published
	keyPublished keyState = "published" // confirmed by the broker
	// keyUnconfirmed: published, but the broker's confirm never came, so
	// the task may be queued or not; the key stays with it.
	keyUnconfirmed keyState = "unconfirmed"
)

func (r keyReservation) encode() string {
	return fmt.Sprintf("%s %s %s %d", r.taskID, r.fingerprint, r.state, r.at.UnixMilli())
}

func decodeReservation(v string) (keyReservation, bool) {
	f := strings.Fields(v)
	if len(f) != 4 {
		return keyReservation{}, false
	}
	state := keyState(f[2])
	if state != keyReserved && state != keyPublished && state != keyUnconfirmed {
		return keyReservation{}, false
	}
	ms, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return keyReservation{}, false
	}
	return keyReservation{taskID: f[0], fingerprint: f[1], state: state, at: time.UnixMilli(ms)}, true
}

// keyClaim is what claimKey decided.
type keyClaim struct {
	key    string // the store key; "" without an Idempotency-Key
	taskID string
	// replay: the task was queued by an earlier request; answer with it.
	replay bool
	// unconfirmed: that request's publish was not confirmed.
	unconfirmed bool
	// value is the reservation this request holds and must publish under.
	value string
}

// idempotencyFingerprint identifies a request's content, so a key reused
// for a different request is refused. The due time counts only when the
// request names one, so the fingerprints of requests without one are what
// they were before tasks could be scheduled.
func idempotencyFingerprint(spec taskSpec) string {
	head := spec.Type + "\x00" + spec.Priority + "\x00"
	if spec.When != "" {
		head += spec.When + "\x00"
	}
	if spec.CallbackURL != "" {
		head += "callback " + spec.CallbackURL + "\x00"
	}
	if spec.ConcurrencyKey != "" {
		head += "key " + spec.ConcurrencyKey + "\x00"
	}
	sum := sha256.Sum256(append([]byte(head), spec.Args...))
	return hex.EncodeToString(sum[:16])
}
