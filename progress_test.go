package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"errand/tasks"
)

// progressLog records what a progressWriter wrote.
type progressLog struct {
	mu     sync.Mutex
	writes []int
}

func (l *progressLog) write(pr tasks.Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes = append(l.writes, pr.Current)
}

func (l *progressLog) snapshot() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]int(nil), l.writes...)
}

// testProgressInterval is long enough that a test's back-to-back reports
// surely fall within one interval, even on a loaded machine.
const testProgressInterval = 300 * time.Millisecond

func TestProgressWriterKeepsTheLatestReport(t *testing.T) {
	var got progressLog
	w := newProgressWriter(time.Now(), testProgressInterval, got.write)
	for i := 1; i <= 10; i++ {
		w.report(context.Background(), tasks.Progress{Current: i, Total: 10})
	}
	if n := len(got.snapshot()); n != 0 {
		t.Fatalf("reports right after the last write were written at once: %v", got.snapshot())
	}
	waitFor(t, 5*time.Second, "the held-back report to be written", func() bool { return len(got.snapshot()) > 0 })
	if writes := got.snapshot(); len(writes) != 1 || writes[0] != 10 {
		t.Fatalf("writes = %v, want only the latest report [10]", writes)
	}

	// Once the interval has passed, a report is written at once.
	time.Sleep(testProgressInterval)
	w.report(context.Background(), tasks.Progress{Current: 11, Total: 20})
	if writes := got.snapshot(); len(writes) != 2 || writes[1] != 11 {
		t.Fatalf("writes = %v, want [10 11]", writes)
	}
	w.stop()
}

func TestProgressWriterWritesNothingAfterStop(t *testing.T) {
	var got progressLog
	w := newProgressWriter(time.Now(), testProgressInterval, got.write)
	w.report(context.Background(), tasks.Progress{Current: 1, Total: 2})
	w.stop()
	time.Sleep(2 * testProgressInterval)
	w.report(context.Background(), tasks.Progress{Current: 2, Total: 2})
	if writes := got.snapshot(); len(writes) != 0 {
		t.Fatalf("writes after stop: %v", writes)
	}
}
