package main

import (
	"context"
	"sync"
)

// batcher groups concurrent calls: each loop takes one waiting call, adds
// whatever else is waiting (up to maxBatch) and serves them with one round
// trip, as errand's batcher does.
type batcher[Req any] struct {
	calls    chan batchCall[Req]
	stop     chan struct{}
	serving  sync.WaitGroup
	maxBatch int
}

type batchCall[Req any] struct {
	req  Req
	done chan error // buffered: a loop never blocks on a caller that gave up
}

// newBatcher starts one loop per serve function.
func newBatcher[Req any](maxBatch int, serves []func(context.Context, []Req) error) *batcher[Req] {
	b := &batcher[Req]{calls: make(chan batchCall[Req]), stop: make(chan struct{}), maxBatch: maxBatch}
	for _, serve := range serves {
		b.serving.Add(1)
		go func() {
			defer b.serving.Done()
			b.loop(serve)
		}()
	}
	return b
}

func (b *batcher[Req]) do(ctx context.Context, req Req) error {
	c := batchCall[Req]{req: req, done: make(chan error, 1)}
	select {
	case b.calls <- c:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-c.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *batcher[Req]) loop(serve func(context.Context, []Req) error) {
	for {
		var calls []batchCall[Req]
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
		reqs := make([]Req, len(calls))
		for i, c := range calls {
			reqs[i] = c.req
		}
		// A batch is its callers', whose contexts may end while it is in
		// flight: it is bounded by its own timeout.
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		err := serve(ctx, reqs)
		cancel()
		for _, c := range calls {
			c.done <- err
		}
	}
}

// close stops the loops; callers must be done by then.
func (b *batcher[Req]) close() {
	close(b.stop)
	b.serving.Wait()
}
