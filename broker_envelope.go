package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// A task envelope is one AMQP message carrying several tasks. Submits that
// arrive together are published together (see amqpBroker.publish): one
// message, one confirm, one delivery and one ack for all of them, instead
// of one of each per task. RabbitMQ's work is mostly per message, so under
// load this cuts its CPU per task (docs/performance.md). A lone submit
// still travels as an ordinary single-task message.
//
// The worker pool never sees an envelope: the consumer splits it into one
// delivery per task, and settles the message once every part is settled.
const taskEnvelopeContentType = "application/vnd.errand.tasks+json"

// maxEnvelopeTasks bounds the tasks in one envelope. A consumer holds up
// to its prefetch (WORKERS) messages, so up to this many times WORKERS
// tasks (envelopeHoldLimit sends back those that wait too long), and a
// message is acked only when its last task ends: the bound keeps small
// both the tasks that wait behind a started envelope's first one and what
// one lost connection sends back to the queue. Fuller envelopes would
// save the broker a little more per task, at the price of both.
const maxEnvelopeTasks = 16

// envelopePublisher groups concurrent publishes into envelopes. An
// envelope has one priority, so for a classic queue, which serves
// priorities, it keeps one batcher per level. A quorum queue delivers in
// arrival order whatever the priority, so there one batcher serves all
// and its envelopes are fuller.
type envelopePublisher struct {
	byPriority bool
	batchers   map[uint8]*batcher[taskMessage, struct{}]
	closeOnce  sync.Once
}

// newEnvelopePublisher publishes each batch with publishBatch, which
// sends a batch of one as an ordinary task message.
func newEnvelopePublisher(byPriority bool, publishBatch func(context.Context, []taskMessage) []batchOutcome[struct{}]) *envelopePublisher {
	e := &envelopePublisher{byPriority: byPriority, batchers: map[uint8]*batcher[taskMessage, struct{}]{}}
	levels := []uint8{0} // and a message without a priority
	if byPriority {
		for _, level := range priorityLevels {
			levels = append(levels, level)
		}
	}
	for _, level := range levels {
		e.batchers[level] = newBatcher(2, maxEnvelopeTasks, publishBatch)
	}
	return e
}

// publish sends m in the next envelope of its priority and returns once
// that envelope's confirm is in.
func (e *envelopePublisher) publish(ctx context.Context, m taskMessage) error {
	level := uint8(0)
	if e.byPriority {
		level = priorityLevels[m.Priority]
	}
	_, err := e.batchers[level].do(ctx, m)
	return err
}

// close stops the batchers; their callers must be done.
func (e *envelopePublisher) close() {
	e.closeOnce.Do(func() {
		for _, b := range e.batchers {
			b.close()
		}
	})
}

// publishEnvelope publishes one batch of tasks and tells every caller the
// outcome of its confirm. A batch of one is an ordinary task message, with
// its trace context in the headers as well as the body.
func (b *amqpBroker) publishEnvelope(ctx context.Context, batch []taskMessage) []batchOutcome[struct{}] {
	// The publish timeout bounds the batch, whose callers' contexts it
	// does not have.
	var err error
	if len(batch) == 1 {
		err = b.publishTask(ctx, batch[0])
	} else {
		err = b.publishTasks(ctx, batch)
	}
	if err == nil && b.onEnvelope != nil {
		b.onEnvelope(len(batch))
	}
	out := make([]batchOutcome[struct{}], len(batch))
	for i := range out {
		out[i].err = err
	}
	return out
}

// publishTasks publishes msgs, which share a priority, as one envelope.
// Each task's trace context travels in its own part of the body.
func (b *amqpBroker) publishTasks(ctx context.Context, msgs []taskMessage) error {
	body, err := encodeTaskEnvelope(msgs)
	if err != nil {
		return err
	}
	id := fmt.Sprintf("%s+%d", msgs[0].ID, len(msgs)-1)
	return b.publishTo(ctx, b.queue, id, amqp.Publishing{
		ContentType: taskEnvelopeContentType,
		Priority:    priorityLevels[msgs[0].Priority],
		Timestamp:   msgs[0].EnqueuedAt,
		Body:        body,
	}, nil)
}

// encodeTaskEnvelope encodes msgs as a JSON array of task messages.
func encodeTaskEnvelope(msgs []taskMessage) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, m := range msgs {
		body, err := encodeTaskMessage(m)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(body)
	}
	buf.WriteByte(']')
	return buf.Bytes(), nil
}

// amqpDeliveries turns a message into the deliveries of its tasks: one
// for a task message, one per task for an envelope. An envelope that does
// not decode is handed on whole, and the worker dead-letters it.
func amqpDeliveries(d amqp.Delivery) []delivery {
	single := amqpDelivery(d)
	if d.ContentType != taskEnvelopeContentType {
		return []delivery{single}
	}
	bodies, err := splitTaskEnvelope(d.Body)
	if err != nil {
		return []delivery{single}
	}
	settlement := newEnvelopeSettlement(len(bodies), single.ack, func() error { return single.reject(true) })
	return settlement.parts(bodies, single.headers, d.Redelivered)
}

// splitTaskEnvelope returns the task bodies of an envelope. The bodies are
// checked by the worker, as those of single messages are; only the array
// itself is checked here.
func splitTaskEnvelope(body []byte) ([][]byte, error) {
	var parts []json.RawMessage
	if err := json.Unmarshal(body, &parts); err != nil {
		return nil, fmt.Errorf("decode task envelope: %w", err)
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("decode task envelope: no tasks")
	}
	bodies := make([][]byte, len(parts))
	for i, p := range parts {
		bodies[i] = p
	}
	return bodies, nil
}

// envelopeSettlement settles one envelope message once all its parts are
// settled. Every part acked: the message is acked. Any part rejected (its
// run aborted by shutdown, its result not stored, its dead letter not
// published): the whole message goes back to the queue. When it comes
// back, marked redelivered, the worker finds the stored result of every
// part that finished and acks those without running them again, and
// requeues the rest one by one with their delivery counted, which is
// exactly what happens to a single message that is rejected.
type envelopeSettlement struct {
	ack     func() error
	requeue func() error

	mu       sync.Mutex
	pending  int
	rejected bool
}

func newEnvelopeSettlement(parts int, ack, requeue func() error) *envelopeSettlement {
	return &envelopeSettlement{ack: ack, requeue: requeue, pending: parts}
}

// parts makes one delivery per task body, each settling through e.
func (e *envelopeSettlement) parts(bodies [][]byte, headers map[string]string, redelivered bool) []delivery {
	out := make([]delivery, len(bodies))
	for i, body := range bodies {
		var settled atomic.Bool
		settle := func(acked bool) error {
			if settled.Swap(true) {
				return fmt.Errorf("task %d of its envelope was settled twice", i)
			}
			return e.settlePart(acked)
		}
		out[i] = delivery{
			body:        body,
			headers:     headers,
			redelivered: redelivered,
			ack:         func() error { return settle(true) },
			// A rejected part cannot be dead-lettered alone; the envelope
			// is requeued instead (see envelopeSettlement).
			reject: func(bool) error { return settle(false) },
		}
	}
	return out
}

// settlePart records one part's end; the last part's call settles the
// message and returns that outcome.
func (e *envelopeSettlement) settlePart(acked bool) error {
	e.mu.Lock()
	e.pending--
	if !acked {
		e.rejected = true
	}
	last, rejected := e.pending == 0, e.rejected
	e.mu.Unlock()
	switch {
	case !last:
		return nil
	case rejected:
		return e.requeue()
	default:
		return e.ack()
	}
}

// envelopeHoldLimit bounds how long a consumer holds an envelope none of
// whose tasks a worker has taken. A consumer holds up to its prefetch in
// messages, so up to maxEnvelopeTasks times that in tasks, and behind
// long tasks they would sit there while other workers have nothing to
// do, and their messages stay unacked toward RabbitMQ's consumer_timeout
// (30 minutes by default), which closes the channel and sends back every
// unacked message, running tasks included. Past the limit such an
// envelope's tasks go back to the queue as single messages, which any
// worker can take, and the envelope is acked.
const envelopeHoldLimit = 30 * time.Second

// heldMessage is what the consumer knows of a message whose tasks it holds.
type heldMessage struct {
	arrived time.Time
	// started: a worker has taken one of its tasks. The message is then
	// acked only when that task ends, and if it comes back meanwhile
	// (a rejected part, a lost connection) every task in it comes back,
	// so none of them may go out a second way.
	started bool
	// republishable: an envelope that has not come back from the queue. A
	// redelivered task needs the worker's check for a stored result and
	// its delivery count, which a fresh copy would not get.
	republishable bool
}

// heldTask is a delivered task that no worker has taken yet.
type heldTask struct {
	delivery
	msg *heldMessage
}

// heldTasks are the tasks a consumer has received and no worker has taken
// yet, in arrival order; the tasks of one message are next to each other.
type heldTasks []heldTask

// hold adds the tasks of a message that arrived at now.
func (h heldTasks) hold(d amqp.Delivery, now time.Time) heldTasks {
	parts := amqpDeliveries(d)
	msg := &heldMessage{arrived: now, republishable: len(parts) > 1 && !d.Redelivered}
	for _, part := range parts {
		h = append(h, heldTask{delivery: part, msg: msg})
	}
	return h
}

// take removes the first task, which a worker has taken, and marks its
// message started.
func (h heldTasks) take() heldTasks {
	h[0].msg.started = true
	h[0] = heldTask{} // let the delivery go once its task is done
	return h[1:]
}

// requeue sends every held task back to the queue.
func (h heldTasks) requeue() {
	for _, t := range h {
		_ = t.reject(true)
	}
}

// republishStale sends back to the queue the tasks of every envelope in held
// that arrived envelopeHold or more before now, is republishable and has no
// task started, and returns the rest of held in order. Each task goes as
// a single message (which is never republished again) and its part of the
// envelope is acked once the broker has confirmed the copy, so the
// envelope is acked once all are. A crash in between runs the task twice,
// as any redelivered task can.
func (b *amqpBroker) republishStale(ctx context.Context, held heldTasks, now time.Time) heldTasks {
	kept := held[:0]
	republished := 0
	for i := 0; i < len(held); {
		msg := held[i].msg
		if now.Sub(msg.arrived) < b.envelopeHold {
			kept = append(kept, held[i:]...) // later messages arrived later still
			break
		}
		// A message's tasks are next to each other in held.
		j := i + 1
		for j < len(held) && held[j].msg == msg {
			j++
		}
		if msg.started || !msg.republishable {
			kept = append(kept, held[i:j]...)
		} else {
			left := b.republish(ctx, held[i:j])
			republished += j - i - len(left)
			kept = append(kept, left...)
		}
		i = j
	}
	clear(held[len(kept):])
	if republished > 0 {
		b.log.Info("sent the tasks of envelopes that waited for a worker back to the queue", "tasks", republished, "waited_at_least", b.envelopeHold.String())
		if b.onRepublish != nil {
			b.onRepublish(republished)
		}
	}
	return kept
}

// republish publishes each of tasks as a single message, all at once, acks
// the part of every one the broker confirmed, and returns the others.
// Shutdown does not cut a publish short (the publish timeout bounds it):
// a publish abandoned unconfirmed may still reach the queue, and the task
// would then also go back with its envelope. The same holds for the
// copies of an envelope of which some publishes failed: its remaining
// tasks are tried again at the next check, but if a worker takes one
// first and the envelope later comes back, the copied tasks come with it.
func (b *amqpBroker) republish(ctx context.Context, tasks []heldTask) []heldTask {
	ctx = context.WithoutCancel(ctx)
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, h := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := decodeTaskMessage(h.body)
			if err == nil {
				err = b.publishTask(ctx, m)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	var left []heldTask
	for i, h := range tasks {
		if errs[i] != nil {
			b.log.Warn("could not send a long-held envelope task back to the queue; keeping it", "error", errs[i])
			left = append(left, h)
			continue
		}
		if err := h.ack(); err != nil {
			b.log.Warn("acking a republished envelope task failed; the envelope comes back and the task may run twice", "error", err)
		}
	}
	return left
}
