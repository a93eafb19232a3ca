package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestBatcherAnswersEachCallerItsOwnOutcome: concurrent calls are grouped
// into batches no larger than maxBatch, and every caller gets the outcome
// of its own request, errors included.
func TestBatcherAnswersEachCallerItsOwnOutcome(t *testing.T) {
	const maxBatch = 8
	var mu sync.Mutex
	var sizes []int
	release := make(chan struct{})
	b := newBatcher(2, maxBatch, func(_ context.Context, reqs []int) []batchOutcome[string] {
		<-release // hold the servers so calls pile up into batches
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		out := make([]batchOutcome[string], len(reqs))
		for i, r := range reqs {
			if r%7 == 0 {
				out[i].err = fmt.Errorf("request %d refused", r)
				continue
			}
			out[i].resp = fmt.Sprint("done ", r)
		}
		return out
	})
	defer b.close()

	const calls = 100
	var wg sync.WaitGroup
	errs := make(chan error, calls)
	for r := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := b.do(context.Background(), r)
			switch {
			case r%7 == 0 && (err == nil || err.Error() != fmt.Sprintf("request %d refused", r)):
				errs <- fmt.Errorf("request %d: got %q, %v; want its own error", r, resp, err)
			case r%7 != 0 && (err != nil || resp != fmt.Sprint("done ", r)):
				errs <- fmt.Errorf("request %d: got %q, %v; want %q", r, resp, err, fmt.Sprint("done ", r))
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	mu.Lock()
	defer mu.Unlock()
	total, batched := 0, false
	for _, n := range sizes {
		if n < 1 || n > maxBatch {
			t.Errorf("batch of %d, want 1 to %d", n, maxBatch)
		}
		total += n
		batched = batched || n > 1
	}
	if total != calls {
		t.Errorf("batches served %d requests, want %d", total, calls)
	}
	if !batched {
		t.Errorf("every batch held one request (%v): calls waiting together were not grouped", sizes)
	}
}

// TestBatcherCallerGivesUp: a caller whose context ends stops waiting,
// and the batcher keeps serving others.
func TestBatcherCallerGivesUp(t *testing.T) {
	busy, block := make(chan struct{}), make(chan struct{})
	b := newBatcher(1, 4, func(_ context.Context, reqs []string) []batchOutcome[string] {
		if reqs[0] == "slow" {
			close(busy)
			<-block
		}
		out := make([]batchOutcome[string], len(reqs))
		for i, r := range reqs {
			out[i].resp = r
		}
		return out
	})
	defer b.close()
	go func() { _, _ = b.do(context.Background(), "slow") }()
	<-busy // the only server is now busy with "slow"
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.do(ctx, "impatient"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call with an ended context: %v, want context.DeadlineExceeded", err)
	}
	close(block)
	if resp, err := b.do(context.Background(), "next"); err != nil || resp != "next" {
		t.Fatalf("call after one gave up: %q, %v", resp, err)
	}
}

// TestBatcherServesAloneWhenTold: while its alone function says so, a
// batcher serves every request as a batch of one on the caller's
// goroutine, all at once (its one serving goroutine could not run two),
// and it batches again once it says otherwise.
func TestBatcherServesAloneWhenTold(t *testing.T) {
	const callers = 8
	var alone atomic.Bool
	alone.Store(true)
	var mu sync.Mutex
	var sizes []int
	inFlight := make(chan struct{}, callers)
	release := make(chan struct{})
	b := newBatcher(1, callers, func(_ context.Context, reqs []int) []batchOutcome[int] {
		mu.Lock()
		sizes = append(sizes, len(reqs))
		mu.Unlock()
		inFlight <- struct{}{}
		<-release
		out := make([]batchOutcome[int], len(reqs))
		for i, r := range reqs {
			out[i].resp = 10 * r
		}
		return out
	}).serveAloneWhen(alone.Load)
	defer b.close()

	run := func() {
		t.Helper()
		var wg sync.WaitGroup
		for r := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if resp, err := b.do(context.Background(), r); err != nil || resp != 10*r {
					t.Errorf("request %d: %d, %v; want %d", r, resp, err, 10*r)
				}
			}()
		}
		wg.Wait()
	}

	go func() {
		defer close(release)
		for range callers { // every caller inside serve at the same time
			select {
			case <-inFlight:
			case <-time.After(5 * time.Second):
				return // they were not: the sizes below tell
			}
		}
	}()
	run()
	mu.Lock()
	if len(sizes) != callers || slices.Max(sizes) != 1 {
		t.Errorf("served alone: batches of %v, want %d of one request", sizes, callers)
	}
	sizes = nil
	mu.Unlock()

	alone.Store(false)
	release = make(chan struct{})
	go func() {
		<-inFlight // the first batch holds the only serving goroutine
		time.Sleep(50 * time.Millisecond)
		close(release)
		for range inFlight {
		}
	}()
	run()
	close(inFlight)
	mu.Lock()
	defer mu.Unlock()
	if slices.Max(sizes) < 2 {
		t.Errorf("batched again: batches of %v, want calls that waited grouped", sizes)
	}
}

// TestBatcherAloneRequestStopsWithItsCaller: a request served alone is
// served under its caller's context, so it stops when the caller gives
// up; a batch never sees a caller's context, so its work goes on for the
// others.
func TestBatcherAloneRequestStopsWithItsCaller(t *testing.T) {
	var alone atomic.Bool
	served := make(chan context.Context, 1)
	b := newBatcher(1, 4, func(ctx context.Context, reqs []int) []batchOutcome[int] {
		served <- ctx
		out := make([]batchOutcome[int], len(reqs))
		select {
		case <-ctx.Done():
			out[0].err = ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		return out
	}).serveAloneWhen(alone.Load)
	defer b.close()

	for _, mode := range []bool{true, false} {
		alone.Store(mode)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := b.do(ctx, 1)
			done <- err
		}()
		serveCtx := <-served
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("alone %v: do after its caller gave up: %v, want context.Canceled", mode, err)
		}
		select {
		case <-serveCtx.Done():
			if !mode {
				t.Error("a batch's work ended with one caller's context")
			}
		case <-time.After(100 * time.Millisecond):
			if mode {
				t.Error("a request served alone went on after its caller gave up")
			}
		}
	}
}
