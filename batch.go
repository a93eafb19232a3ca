package main

import (
	"context"
	"errors"
	"sync"
)

// batcher groups concurrent calls into batches served by one round trip
// each. A few goroutines each take one waiting call, add whatever else is
// already waiting (up to maxBatch), and serve them together. At low load a
// batch is one call and adds no delay; under load one round trip serves
// many callers, saving both errand's and the server's per-request work.
type batcher[Req, Resp any] struct {
	calls    chan batchCall[Req, Resp]
	stop     chan struct{}
	serving  sync.WaitGroup
	maxBatch int
	// serve handles one batch and returns one outcome per request, in
	// order. A batch of several callers gets context.Background(), since
	// their contexts may end while it is in flight, so serve must bound
	// its own work; a request served alone gets its caller's context.
	serve func(ctx context.Context, reqs []Req) []batchOutcome[Resp]
	// alone, when set and true, has do serve each request by itself on
	// its caller's goroutine (see serveAloneWhen).
	alone func() bool
}

type batchCall[Req, Resp any] struct {
	req  Req
	done chan batchOutcome[Resp] // buffered: serving never blocks on a caller that gave up
}

// batchOutcome is the answer to one request of a batch.
type batchOutcome[Resp any] struct {
	resp Resp
	err  error
}

func newBatcher[Req, Resp any](servers, maxBatch int, serve func(context.Context, []Req) []batchOutcome[Resp]) *batcher[Req, Resp] {
	b := &batcher[Req, Resp]{calls: make(chan batchCall[Req, Resp]), stop: make(chan struct{}), maxBatch: maxBatch, serve: serve}
	for range servers {
		b.serving.Add(1)
		go func() {
			defer b.serving.Done()
			b.loop()
		}()
	}
	return b
}

// serveAloneWhen makes do serve each request as a batch of its own, on
// the caller's goroutine, whenever alone reports true: for servers on
// which batches cost more than the requests one by one. Requests served
// alone run concurrently, as many as there are callers, each under its
// caller's context. It must be called before the first do.
func (b *batcher[Req, Resp]) serveAloneWhen(alone func() bool) *batcher[Req, Resp] {
	b.alone = alone
	return b
}

// do queues req and waits for its outcome, or for ctx to end. A request
// already handed to a batch may still be carried out after ctx ends; one
// served alone stops with ctx.
func (b *batcher[Req, Resp]) do(ctx context.Context, req Req) (Resp, error) {
	var zero Resp
	if b.alone != nil && b.alone() {
		if err := ctx.Err(); err != nil {
			return zero, err
		}
		out := b.serve(ctx, []Req{req})[0]
		return out.resp, out.err
	}
	c := batchCall[Req, Resp]{req: req, done: make(chan batchOutcome[Resp], 1)}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case out := <-c.done:
		return out.resp, out.err
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func (b *batcher[Req, Resp]) loop() {
	calls := make([]batchCall[Req, Resp], 0, b.maxBatch)
	reqs := make([]Req, 0, b.maxBatch)
	for {
		calls, reqs = calls[:0], reqs[:0]
		select {
		case c := <-b.calls:
			calls = append(calls, c)
		case <-b.stop:
			return
		}
	fill:
		for len(calls) < b.maxBatch {
			select {
			case c := <-b.calls:
				calls = append(calls, c)
			default:
				break fill
			}
		}
		for _, c := range calls {
			reqs = append(reqs, c.req)
		}
		outcomes := b.serve(context.Background(), reqs)
		for i, c := range calls {
			c.done <- outcomes[i]
		}
	}
}

// close stops serving. Callers must be done by then.
func (b *batcher[Req, Resp]) close() {
	close(b.stop)
	b.serving.Wait()
}

// forEachLimit calls f(0) to f(n-1), at most limit at once, and joins
// their errors.
func forEachLimit(n, limit int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	slots := make(chan struct{}, limit)
	for i := range n {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			errs[i] = f(i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
