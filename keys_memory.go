package main

import (
	"context"
	"sync"
	"time"
)

// memoryKeyStore is the embedded default's keyStore: the same rules as
// redisKeyStore, kept in a map.
type memoryKeyStore struct {
	mu     sync.Mutex
	keys   map[string]memoryKey
	now    func() time.Time
	writes writesSinceSweep
}

func newMemoryKeyStore() *memoryKeyStore {
	return &memoryKeyStore{keys: map[string]memoryKey{}, now: time.Now}
}

// sweep drops expired keys every sweepEvery writes. The caller holds s.mu.
func (s *memoryKeyStore) sweep() {
	if s.writes.sweepDue() {
		deleteExpired(s.keys, s.now(), func(k memoryKey) time.Time { return k.expires })
	}
}

type memoryKey struct {
	value   string
	expires time.Time
}

func (s *memoryKeyStore) reserveKey(_ context.Context, key, value string, ttl time.Duration) (string, error) {
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

func (s *memoryKeyStore) swapKey(_ context.Context, key, old, value string) (bool, error) {
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

func (s *memoryKeyStore) getKey(_ context.Context, key string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[key]; ok && s.now().Before(k.expires) {
		return k.value, nil
	}
	return "", nil
}
