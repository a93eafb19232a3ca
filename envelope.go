package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
)

// A task envelope is one AMQP message carrying several tasks. Submits that
// arrive together are published together (see amqpBroker.publish): one
// message, one confirm, one delivery and one ack for all of them, instead
// of one of each per task. RabbitMQ's work is mostly per message, so under
// load this cuts its CPU per task (README, Performance). A lone submit
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
