package main

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"
)

// memoryKeySlots keeps slots in memory: the embedded mode's one process
// is every worker there is.
type memoryKeySlots struct {
	mu    sync.Mutex
	lease map[string]map[string]time.Time // scope → holder → end of lease
	now   func() time.Time
}

func newMemoryKeySlots(now func() time.Time) *memoryKeySlots {
	return &memoryKeySlots{lease: map[string]map[string]time.Time{}, now: now}
}

// live drops the ended leases of scope and returns the rest.
func (s *memoryKeySlots) live(scope string) map[string]time.Time {
	holders := s.lease[scope]
	if holders == nil {
		holders = map[string]time.Time{}
		s.lease[scope] = holders
	}
	now := s.now()
	for h, end := range holders {
		if !end.After(now) {
			delete(holders, h)
		}
	}
	return holders
}

func (s *memoryKeySlots) acquire(_ context.Context, scope, holder string, limit int, lease time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	holders := s.live(scope)
	if _, holds := holders[holder]; !holds && len(holders) >= limit {
		return false, nil
	}
	holders[holder] = s.now().Add(lease)
	return true, nil
}

func (s *memoryKeySlots) renew(_ context.Context, scope, holder string, lease time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	holders := s.live(scope)
	if _, holds := holders[holder]; !holds {
		return false, nil
	}
	holders[holder] = s.now().Add(lease)
	return true, nil
}

func (s *memoryKeySlots) release(_ context.Context, scope, holder string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.lease[scope], holder)
	if len(s.lease[scope]) == 0 {
		delete(s.lease, scope)
	}
	return nil
}

func (s *memoryKeySlots) held(_ context.Context, scope string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.live(scope))
	if n == 0 {
		delete(s.lease, scope)
	}
	return n, nil
}

// memoryParkedTasks keeps parked tasks in memory.
type memoryParkedTasks struct {
	mu     sync.Mutex
	tasks  map[string]*memoryParked
	parked int64 // orders tasks of the same priority
	now    func() time.Time
}

type memoryParked struct {
	scope     string
	msg       taskMessage
	priority  uint8
	seq       int64
	at        time.Time // when the task was first parked
	claimedAt time.Time
}

func newMemoryParkedTasks(now func() time.Time) *memoryParkedTasks {
	return &memoryParkedTasks{tasks: map[string]*memoryParked{}, now: now}
}

func (p *memoryParkedTasks) park(_ context.Context, scope string, m taskMessage) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := parkedID(m)
	if _, parked := p.tasks[id]; parked {
		return nil // a duplicate delivery of the same park
	}
	p.parked++
	p.tasks[id] = &memoryParked{scope: scope, msg: m, priority: priorityLevels[m.Priority], seq: p.parked, at: m.ParkedAt}
	return nil
}

func (p *memoryParkedTasks) claim(_ context.Context, scope string, n int, stale time.Duration) ([]taskMessage, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	claimedBefore := p.now().Add(-stale)
	var open []*memoryParked
	for _, t := range p.tasks {
		if t.scope == scope && t.claimedAt.Before(claimedBefore) {
			open = append(open, t)
		}
	}
	slices.SortFunc(open, func(a, b *memoryParked) int {
		return cmp.Or(cmp.Compare(b.priority, a.priority), a.at.Compare(b.at), cmp.Compare(a.seq, b.seq))
	})
	var out []taskMessage
	for _, t := range open[:min(n, len(open))] {
		t.claimedAt = p.now()
		out = append(out, t.msg)
	}
	return out, nil
}

func (p *memoryParkedTasks) remove(_ context.Context, _, parked string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.tasks, parked)
	return nil
}

// restore has nothing to repair: one map holds the tasks and their order.
func (p *memoryParkedTasks) restore(context.Context, time.Time) (int, error) { return 0, nil }

func (p *memoryParkedTasks) waiting(context.Context) (map[string]int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for _, t := range p.tasks {
		out[t.scope]++
	}
	return out, nil
}
