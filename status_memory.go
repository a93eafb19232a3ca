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
	keys    map[string]memoryKey
	now     func() time.Time
	writes  int // since the last sweep
}

// sweepEvery is how many writes pass between sweeps of expired entries;
// lookups drop expired entries too, but only the ones they touch.
const sweepEvery = 4096

// sweep drops expired statuses and idempotency keys. The caller holds s.mu.
func (s *memoryStatusStore) sweep() {
	s.writes++
	if s.writes < sweepEvery {
		return
	}
	s.writes = 0
	now := s.now()
	for id, e := range s.entries {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			delete(s.entries, id)
		}
	}
	for k, v := range s.keys {
		if !now.Before(v.expires) {
			delete(s.keys, k)
		}
	}
}

type memoryKey struct {
	value   string
	expires time.Time
}

type memoryStatus struct {
	status  taskStatus
	expires time.Time // zero: never
}

func newMemoryStatusStore() *memoryStatusStore {
	return &memoryStatusStore{entries: map[string]memoryStatus{}, keys: map[string]memoryKey{}, now: time.Now}
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
	return nil
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

func (s *memoryStatusStore) deletePending(_ context.Context, taskID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.lookup(taskID); ok && e.status.Status == statePending {
		delete(s.entries, taskID)
	}
	return nil
}

func (s *memoryStatusStore) reserveKey(_ context.Context, key, value string, ttl time.Duration) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweep()
	now := s.now()
	if k, ok := s.keys[key]; ok && now.Before(k.expires) {
		return k.value, nil
	}
	s.keys[key] = memoryKey{value: value, expires: now.Add(ttl)}
	return "", nil
}

func (s *memoryStatusStore) swapKey(_ context.Context, key, old, value string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[key]
	if !ok || !s.now().Before(k.expires) || k.value != old {
		return false, nil
	}
	if value == "" {
		delete(s.keys, key)
	} else {
		s.keys[key] = memoryKey{value: value, expires: k.expires}
	}
	return true, nil
}

func (s *memoryStatusStore) getKey(_ context.Context, key string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[key]; ok && s.now().Before(k.expires) {
		return k.value, nil
	}
	return "", nil
}

func (s *memoryStatusStore) ping(context.Context) error { return nil }
