package main

import (
	"context"
	"sync"
)

// statusWatcher tells of every status written for a task, as it is
// written, to whoever watches it (GET /api/tasks/{task_id}/events). Its
// implementations are redisStatusWatcher and the memory status store.
type statusWatcher interface {
	// watch follows the task id's status until ctx ends.
	watch(ctx context.Context, id string) *statusUpdates
}

// statusUpdates holds the latest status written for a watched task. A
// watcher that falls behind loses only statuses that a later one
// replaced, never the last: statuses never move backwards, so the latest
// is the one that counts.
type statusUpdates struct {
	mu      sync.Mutex
	latest  *taskStatus
	changed chan struct{} // a token whenever latest changes
}

func newStatusUpdates() *statusUpdates {
	return &statusUpdates{changed: make(chan struct{}, 1)}
}

// offer records st if it ranks at least as high as what is held.
func (u *statusUpdates) offer(st taskStatus) {
	u.mu.Lock()
	if u.latest != nil && stateRank(u.latest.Status) > stateRank(st.Status) {
		u.mu.Unlock()
		return
	}
	u.latest = &st
	u.mu.Unlock()
	select {
	case u.changed <- struct{}{}:
	default:
	}
}

// take returns the latest status and forgets it; false when none came
// since the last take.
func (u *statusUpdates) take() (taskStatus, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.latest == nil {
		return taskStatus{}, false
	}
	st := *u.latest
	u.latest = nil
	return st, true
}

// watchers are the statusUpdates of the tasks being watched, by task id.
type watchers struct {
	mu   sync.Mutex
	byID map[string]map[*statusUpdates]struct{}
}

// add registers u for id and reports whether it is id's first watcher.
func (w *watchers) add(id string, u *statusUpdates) (first bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.byID == nil {
		w.byID = map[string]map[*statusUpdates]struct{}{}
	}
	if w.byID[id] == nil {
		w.byID[id] = map[*statusUpdates]struct{}{}
		first = true
	}
	w.byID[id][u] = struct{}{}
	return first
}

// remove unregisters u and reports whether id has no watcher left.
func (w *watchers) remove(id string, u *statusUpdates) (last bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.byID[id], u)
	if len(w.byID[id]) == 0 {
		delete(w.byID, id)
		return true
	}
	return false
}

// offer passes st to the watchers of its task.
func (w *watchers) offer(st taskStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for u := range w.byID[st.TaskID] {
		u.offer(st)
	}
}
