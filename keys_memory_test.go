package main

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMemoryKeyStoreSweeps: expired idempotency keys are dropped by the
// sweep too, not only when they are read again.
func TestMemoryKeyStoreSweeps(t *testing.T) {
	s := newMemoryKeyStore()
	clock := time.Now()
	s.now = func() time.Time { return clock }
	ctx := context.Background()
	for i := range sweepEvery {
		if _, err := s.reserveKey(ctx, fmt.Sprint("old-", i), "v", time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	clock = clock.Add(2 * time.Minute)
	for i := range sweepEvery {
		if _, err := s.reserveKey(ctx, fmt.Sprint("new-", i), "v", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys) != sweepEvery {
		t.Errorf("after expiry and %d reservations: %d keys kept, want %d", sweepEvery, len(s.keys), sweepEvery)
	}
}
