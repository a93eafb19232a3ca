package main

import (
	"context"
	"sync"
	"time"
)

// memoryStatusStore is the embedded default's statusStore: the same rules
// as redisStatusStore, kept in a map.
type memoryStatusStore struct {
	mu      sync.Mutex
	entries map[string]memoryStatus
	now     func() time.Time
	writes  writesSinceSweep
	// watched are the watchers of tasks, told of every status written.
	watched watchers
}

// sweepEvery is how many writes pass between sweeps of a memory store's
// expired entries; lookups drop expired entries too, but only the ones
// they touch.
const sweepEvery = 4096

// writesSinceSweep counts a memory store's writes between sweeps.
type writesSinceSweep int

// sweepDue counts one write and reports whether it is time to sweep.
func (n *writesSinceSweep) sweepDue() bool {
	*n++
	if *n < sweepEvery {
		return false
	}
	*n = 0
	return true
}

// deleteExpired drops the entries of m whose expiry is due by now; a zero
// expiry never is.
func deleteExpired[K comparable, V any](m map[K]V, now time.Time, expiry func(V) time.Time) {
	for k, v := range m {
		if e := expiry(v); !e.IsZero() && !now.Before(e) {
			delete(m, k)
		}
	}
}

// sweep drops expired statuses every sweepEvery writes. The caller holds
// s.mu.
func (s *memoryStatusStore) sweep() {
	if s.writes.sweepDue() {
		deleteExpired(s.entries, s.now(), func(e memoryStatus) time.Time { return e.expires })
	}
}

type memoryStatus struct {
	status  taskStatus
	expires time.Time // zero: never
}

func newMemoryStatusStore() *memoryStatusStore {
	return &memoryStatusStore{entries: map[string]memoryStatus{}, now: time.Now}
}

// lookup returns the live entry for taskID, dropping it if it expired.
// The caller holds s.mu.
func (s *memoryStatusStore) lookup(taskID string) (memoryStatus, bool) {
	e, ok := s.entries[taskID]
	if ok && !e.expires.IsZero() && !s.now().Before(e.expires) {
		delete(s.entries, taskID)
		return memoryStatus{}, false
	}
	return e, ok
}

func (s *memoryStatusStore) put(_ context.Context, st taskStatus, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.lookup(st.TaskID); ok && stateRank(cur.status.Status) > stateRank(st.Status) {
		return nil
	}
	s.sweep()
	e := memoryStatus{status: st}
	if ttl > 0 {
		e.expires = s.now().Add(ttl)
	}
	s.entries[st.TaskID] = e
	s.watched.offer(st)
	return nil
}

func (s *memoryStatusStore) watch(ctx context.Context, id string) *statusUpdates {
	u := newStatusUpdates()
	s.watched.add(id, u)
	go func() {
		<-ctx.Done()
		s.watched.remove(id, u)
	}()
	return u
}

func (s *memoryStatusStore) get(_ context.Context, taskID string) (taskStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.lookup(taskID)
	if !ok {
		return taskStatus{}, errStatusNotFound
	}
	return e.status, nil
}

func (s *memoryStatusStore) deletePending(_ context.Context, taskID, _ string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.lookup(taskID); ok && stateRank(e.status.Status) == 0 {
		delete(s.entries, taskID)
	}
	return nil
}

func (s *memoryStatusStore) ping(context.Context) error { return nil }

func (s *memoryStatusStore) listLive(_ context.Context, q taskQuery) (taskPage, error) {
	s.mu.Lock()
	var live []taskStatus
	for _, e := range s.entries {
		if !e.status.final() && q.matches(e.status) {
			live = append(live, e.status)
		}
	}
	s.mu.Unlock()
	return pageOf(live, q), nil
}
