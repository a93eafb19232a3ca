package main

import (
	"context"
	"errand/tasks"
	"sync"
	"time"
)

// progressInterval is the least time between two progress writes of one
// task. A task may report as often as it likes: each report replaces the
// last, so the ones in between need not reach Redis, and a task that
// loops through its steps in microseconds costs the worker one status
// write (its end) instead of one per step. It is far below what anyone
// polling a status can see.
const progressInterval = 20 * time.Millisecond

// progressWriter throttles a task's progress reports to one write per
// progressInterval. A report that comes too soon is kept and written when
// the interval is up (unless a newer one replaces it first), so the last
// reported step always shows while the task runs.
type progressWriter struct {
	write    func(tasks.Progress)
	interval time.Duration // progressInterval, but for tests

	mu        sync.Mutex // held across writes, so they land in order
	lastWrite time.Time
	pending   *tasks.Progress
	timer     *time.Timer
	stopped   bool
}

// newProgressWriter starts throttling from since, the time of the task's
// last status write, with at most one write per interval.
func newProgressWriter(since time.Time, interval time.Duration, write func(tasks.Progress)) *progressWriter {
	return &progressWriter{write: write, interval: interval, lastWrite: since}
}

// report is the task's tasks.ReportFunc.
func (w *progressWriter) report(_ context.Context, pr tasks.Progress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return // a run abandoned after its time limit reports no more
	}
	wait := w.interval - time.Since(w.lastWrite)
	if wait <= 0 {
		w.pending = nil
		w.writeLocked(pr)
		return
	}
	w.pending = &pr
	if w.timer == nil {
		w.timer = time.AfterFunc(wait, w.flush)
	}
}

// flush writes the report that came too soon, if it is still wanted.
func (w *progressWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = nil
	if w.stopped || w.pending == nil {
		return
	}
	pr := *w.pending
	w.pending = nil
	w.writeLocked(pr)
}

func (w *progressWriter) writeLocked(pr tasks.Progress) {
	w.write(pr)
	w.lastWrite = time.Now()
}

// stop drops any report not yet written and waits for a write under way,
// so nothing is written after it returns.
func (w *progressWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.pending = nil
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}
