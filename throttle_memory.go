package main

import (
	"context"
	"sync"
	"time"
)

// memoryThrottle keeps each type's next free start in memory: the
// embedded mode's one process is every worker there is.
type memoryThrottle struct {
	mu   sync.Mutex
	next map[string]time.Time
	now  func() time.Time
}

func newMemoryThrottle(now func() time.Time) *memoryThrottle {
	return &memoryThrottle{next: map[string]time.Time{}, now: now}
}

func (m *memoryThrottle) reserve(_ context.Context, taskType string, interval time.Duration) (time.Duration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	slot := m.next[taskType]
	if slot.Before(now) {
		slot = now
	}
	m.next[taskType] = slot.Add(interval)
	return slot.Sub(now), nil
}
