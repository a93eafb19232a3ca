package main

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestMemoryStatusStoreSweeps: expired entries the embedded store never
// reads again are still dropped, so a long-running embedded errand does
// not grow without bound.
func TestMemoryStatusStoreSweeps(t *testing.T) {
	s := newMemoryStatusStore()
	clock := time.Now()
	s.now = func() time.Time { return clock }
	ctx := context.Background()
	for i := range sweepEvery {
		if err := s.put(ctx, taskStatus{TaskID: fmt.Sprint("old-", i), Status: stateSuccess}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	clock = clock.Add(2 * time.Minute)
	for i := range sweepEvery {
		_ = s.put(ctx, taskStatus{TaskID: fmt.Sprint("new-", i), Status: statePending}, 0)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.entries) != sweepEvery {
		t.Errorf("after expiry and %d writes: %d statuses kept, want %d", sweepEvery, len(s.entries), sweepEvery)
	}
}
