package main

import (
	"container/heap"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// memoryBroker is the embedded default's queue: a priority queue in
// memory with the same delivery rules as the AMQP broker (priority order,
// FIFO within a priority, manual acks, requeue on reject, dead letters).
// It lives and dies with the process, which the embedded mode says at
// start.
type memoryBroker struct {
	mu    sync.Mutex
	ready messageHeap
	seq   uint64
	wake  chan struct{} // closed and replaced whenever a message is ready
	dead  []deadLetter
	// sweepMu lets one sweep of the dead letters run at a time.
	sweepMu sync.Mutex
	closed  bool
	queue   string // the name queueDepths reports
}

type queuedMessage struct {
	body        []byte
	priority    uint8
	seq         uint64
	redelivered bool
}

type messageHeap []queuedMessage

func (h messageHeap) Len() int { return len(h) }
func (h messageHeap) Less(i, j int) bool {
	if h[i].priority != h[j].priority {
		return h[i].priority > h[j].priority
	}
	return h[i].seq < h[j].seq
}
func (h messageHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *messageHeap) Push(x any)   { *h = append(*h, x.(queuedMessage)) }
func (h *messageHeap) Pop() any {
	old := *h
	m := old[len(old)-1]
	*h = old[:len(old)-1]
	return m
}

func newMemoryBroker() *memoryBroker {
	return &memoryBroker{wake: make(chan struct{}), queue: "errand.tasks"}
}

func (b *memoryBroker) publish(_ context.Context, m taskMessage) error {
	body, err := encodeTaskMessage(m)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return errBrokerUnavailable
	}
	b.enqueue(queuedMessage{body: body, priority: priorityLevels[m.Priority]})
	return nil
}

// enqueue adds a message and wakes waiting consumers. The caller holds b.mu.
func (b *memoryBroker) enqueue(m queuedMessage) {
	if m.seq == 0 {
		b.seq++
		m.seq = b.seq
	}
	heap.Push(&b.ready, m)
	close(b.wake)
	b.wake = make(chan struct{})
}

// publishDelayed re-queues m after delay. Like everything embedded, a
// pending retry is lost if the process stops.
func (b *memoryBroker) publishDelayed(_ context.Context, m taskMessage, delay time.Duration) error {
	body, err := encodeTaskMessage(m)
	if err != nil {
		return err
	}
	time.AfterFunc(delay, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.closed {
			b.enqueue(queuedMessage{body: body, priority: priorityLevels[m.Priority]})
		}
	})
	return nil
}

func (b *memoryBroker) publishDead(_ context.Context, body []byte, _, reason string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dead = append(b.dead, deadLetter{body: body, reason: reason, deadAt: time.Now()})
	return nil
}

// sweepDead visits the oldest scan dead letters in order and removes
// those visit asks to. visit runs without the broker's lock (a requeue
// publishes); sweeps take turns, and only they remove dead letters, so
// the ones visited are still first when the sweep removes them.
func (b *memoryBroker) sweepDead(ctx context.Context, scan int, visit func(deadLetter) (bool, error)) error {
	b.sweepMu.Lock()
	defer b.sweepMu.Unlock()
	b.mu.Lock()
	visiting := slices.Clone(b.dead[:min(scan, len(b.dead))])
	b.mu.Unlock()
	remove := make([]bool, len(visiting))
	var err error
	for i, d := range visiting {
		if err = ctx.Err(); err != nil {
			break
		}
		if remove[i], err = visit(d); err != nil {
			break
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	kept := make([]deadLetter, 0, len(b.dead))
	for i, d := range b.dead {
		if i >= len(remove) || !remove[i] {
			kept = append(kept, d)
		}
	}
	b.dead = kept
	return err
}

func (b *memoryBroker) ping(context.Context) error { return nil }

// consume hands messages to out until ctx ends, keeping at most prefetch
// of them unsettled, as an AMQP consumer with that QoS would.
func (b *memoryBroker) consume(ctx context.Context, prefetch int, out chan<- delivery) error {
	slots := make(chan struct{}, prefetch)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		m, ok := b.next(ctx)
		if !ok {
			return nil
		}
		d := b.deliveryFor(m, func() { <-slots })
		select {
		case out <- d:
		case <-ctx.Done():
			_ = d.reject(true)
			return nil
		}
	}
}

// next blocks until a message is ready or ctx ends.
func (b *memoryBroker) next(ctx context.Context) (queuedMessage, bool) {
	for {
		b.mu.Lock()
		if b.ready.Len() > 0 {
			m := heap.Pop(&b.ready).(queuedMessage)
			b.mu.Unlock()
			return m, true
		}
		wake := b.wake
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return queuedMessage{}, false
		}
	}
}

func (b *memoryBroker) deliveryFor(m queuedMessage, release func()) delivery {
	var once sync.Once
	settle := func(f func()) error {
		settled := false
		once.Do(func() { f(); release(); settled = true })
		if !settled {
			return fmt.Errorf("delivery already settled")
		}
		return nil
	}
	return delivery{
		body:        m.body,
		redelivered: m.redelivered,
		ack:         func() error { return settle(func() {}) },
		reject: func(requeue bool) error {
			return settle(func() {
				b.mu.Lock()
				defer b.mu.Unlock()
				if requeue {
					m.redelivered = true
					b.enqueue(m)
				} else {
					b.dead = append(b.dead, deadLetter{body: m.body, reason: "rejected", deadAt: time.Now()})
				}
			})
		},
	}
}

func (b *memoryBroker) queueDepths(context.Context) (map[string]int, error) {
	ready, dead := b.depth()
	return map[string]int{b.queue: ready, b.queue + ".dead": dead}, nil
}

// depth returns the number of ready messages and dead letters.
func (b *memoryBroker) depth() (ready, dead int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ready.Len(), len(b.dead)
}

func (b *memoryBroker) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}
