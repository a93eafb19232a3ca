package main

import (
	"context"
	"slices"
	"strings"
	"sync"
	"time"
)

// memorySchedules is the embedded default's scheduleStore.
type memorySchedules struct {
	mu     sync.Mutex
	byID   map[string]schedule
	claims map[memoryTick]tickClaim
}

type memoryTick struct {
	id   string
	tick int64 // Unix milliseconds
}

type tickClaim struct {
	fire      bool
	claimedAt time.Time
	taskID    string
}

func newMemorySchedules() *memorySchedules {
	return &memorySchedules{byID: map[string]schedule{}, claims: map[memoryTick]tickClaim{}}
}

func (m *memorySchedules) createSchedule(_ context.Context, s schedule) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.byID[s.id()]; ok {
		return errScheduleExists
	}
	m.byID[s.id()] = s
	return nil
}

func (m *memorySchedules) getSchedule(_ context.Context, owner, name string) (schedule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.byID[scheduleID(owner, name)]
	if !ok {
		return schedule{}, errNotFound
	}
	return s, nil
}

func (m *memorySchedules) listSchedules(_ context.Context, owner string) ([]schedule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []schedule{}
	for _, s := range m.byID {
		if s.Owner == owner {
			out = append(out, s)
		}
	}
	slices.SortFunc(out, func(a, b schedule) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

func (m *memorySchedules) deleteSchedule(_ context.Context, owner, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := scheduleID(owner, name)
	if _, ok := m.byID[id]; !ok {
		return errNotFound
	}
	delete(m.byID, id)
	for k := range m.claims {
		if k.id == id {
			delete(m.claims, k)
		}
	}
	return nil
}

func (m *memorySchedules) setPaused(_ context.Context, owner, name string, paused bool, nextRun time.Time) (schedule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id := scheduleID(owner, name)
	s, ok := m.byID[id]
	if !ok {
		return schedule{}, errNotFound
	}
	s.Paused, s.NextRun = paused, mongoTime(nextRun)
	m.byID[id] = s
	return s, nil
}

func (m *memorySchedules) dueSchedules(_ context.Context, now time.Time) ([]schedule, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []schedule
	for _, s := range m.byID {
		if !s.Paused && !s.NextRun.After(now) {
			out = append(out, s)
		}
	}
	return out, nil
}

func (m *memorySchedules) nextDue(context.Context) (time.Time, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var earliest time.Time
	for _, s := range m.byID {
		if !s.Paused && (earliest.IsZero() || s.NextRun.Before(earliest)) {
			earliest = s.NextRun
		}
	}
	return earliest, nil
}

func (m *memorySchedules) claimTick(_ context.Context, id string, due, tick, next time.Time, fire bool, now time.Time) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.byID[id]; ok && s.NextRun.Equal(due) {
		s.NextRun = mongoTime(next)
		m.byID[id] = s
	}
	key := memoryTick{id: id, tick: tick.UnixMilli()}
	if _, taken := m.claims[key]; taken {
		return false, nil
	}
	m.claims[key] = tickClaim{fire: fire, claimedAt: now}
	return true, nil
}

func (m *memorySchedules) stuckTicks(_ context.Context, stuckBefore time.Time) ([]stuckTick, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []stuckTick
	for key, c := range m.claims {
		if !c.fire || c.taskID != "" || !c.claimedAt.Before(stuckBefore) {
			continue
		}
		if s, ok := m.byID[key.id]; ok {
			out = append(out, stuckTick{schedule: s, tick: time.UnixMilli(key.tick).UTC()})
		}
	}
	return out, nil
}

func (m *memorySchedules) skipTick(_ context.Context, id string, tick time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := memoryTick{id: id, tick: tick.UnixMilli()}
	if c, ok := m.claims[key]; ok {
		c.fire = false
		m.claims[key] = c
	}
	return nil
}

func (m *memorySchedules) settleTick(_ context.Context, id string, fired firedTick) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := memoryTick{id: id, tick: fired.Tick.UnixMilli()}
	c := m.claims[key]
	c.taskID = fired.TaskID
	m.claims[key] = c
	for k := range m.claims {
		if k.id == id && k.tick < fired.Tick.Add(-keptClaims).UnixMilli() {
			delete(m.claims, k)
		}
	}
	if s, ok := m.byID[id]; ok {
		s.LastFired = &fired
		m.byID[id] = s
	}
	return nil
}
