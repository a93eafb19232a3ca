package main

import (
	"context"
	"sync"
	"time"
)

// revocationStore keeps the cancels of tasks (see POST
// /api/tasks/{task_id}/cancel), where every worker process finds them: a
// queued or scheduled task that was cancelled never runs, and a running
// one is stopped by the process that runs it. Its implementations are
// redisRevocations and memoryRevocations.
type revocationStore interface {
	// revoke records that the task id is cancelled and tells every
	// watcher.
	revoke(ctx context.Context, id string, r revocation) error
	// revoked returns the task's cancel, or nil.
	revoked(ctx context.Context, id string) (*revocation, error)
	// watch sends the id of every task cancelled from now until ctx ends.
	// A cancel it misses (a lost connection) is still found by revoked.
	watch(ctx context.Context) <-chan string
}

// memoryRevocations is the embedded default's revocationStore.
type memoryRevocations struct {
	mu       sync.Mutex
	cancels  map[string]memoryRevocation
	watchers map[chan string]struct{}
	ttl      time.Duration
	now      func() time.Time
}

type memoryRevocation struct {
	r       revocation
	expires time.Time
}

func newMemoryRevocations(ttl time.Duration) *memoryRevocations {
	return &memoryRevocations{cancels: map[string]memoryRevocation{}, watchers: map[chan string]struct{}{}, ttl: ttl, now: time.Now}
}

func (m *memoryRevocations) revoke(_ context.Context, id string, r revocation) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	for k, v := range m.cancels {
		if !now.Before(v.expires) {
			delete(m.cancels, k)
		}
	}
	m.cancels[id] = memoryRevocation{r: r, expires: now.Add(m.ttl)}
	for w := range m.watchers {
		select {
		case w <- id:
		default: // a watcher that cannot keep up finds it through revoked
		}
	}
	return nil
}

func (m *memoryRevocations) revoked(_ context.Context, id string) (*revocation, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.cancels[id]
	if !ok || !m.now().Before(v.expires) {
		return nil, nil
	}
	r := v.r
	return &r, nil
}

func (m *memoryRevocations) watch(ctx context.Context) <-chan string {
	ch := make(chan string, 64)
	m.mu.Lock()
	m.watchers[ch] = struct{}{}
	m.mu.Unlock()
	go func() {
		<-ctx.Done()
		m.mu.Lock()
		delete(m.watchers, ch)
		close(ch) // under mu: no revoke sends to it after this
		m.mu.Unlock()
	}()
	return ch
}
