package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// publish sends m to the work queue as a persistent, mandatory message
// and waits for the broker's confirm: when it returns nil, RabbitMQ has
// the message on a durable queue. Publishes that overlap share a message
// (an envelope) and its confirm; m's own call still returns only once
// that confirm is in.
func (b *amqpBroker) publish(ctx context.Context, m taskMessage) error {
	return b.envelopes.publish(ctx, m)
}

func (b *amqpBroker) publishTask(ctx context.Context, m taskMessage) error {
	body, err := encodeTaskMessage(m)
	if err != nil {
		return err
	}
	return b.publishTo(ctx, b.queue, m.ID, amqp.Publishing{
		Headers:   traceHeaders(m),
		Priority:  priorityLevels[m.Priority],
		Type:      m.Type,
		Timestamp: m.EnqueuedAt,
		Body:      body,
	}, nil)
}

// publishDelayed puts m on a delay queue whose messages all wait the same
// time (delayLevel of delay) and are then dead-lettered back onto the work
// queue. The wait holds no worker and survives any restart, because it is
// RabbitMQ's. A queue expires messages only from its head, so each wait
// has its own queue, and a task due in 2 s never waits behind one due in
// an hour; unused delay queues delete themselves.
func (b *amqpBroker) publishDelayed(ctx context.Context, m taskMessage, delay time.Duration) error {
	body, err := encodeTaskMessage(m)
	if err != nil {
		return err
	}
	wait := delayLevel(delay).Milliseconds()
	delayQueue := fmt.Sprintf("%s.delay.%dms", b.queue, wait)
	declare := func(ch *amqp.Channel) error {
		return b.declareQueue(ch, delayQueue, amqp.Table{
			"x-message-ttl":             wait,
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": b.queue,
			"x-expires":                 wait + time.Hour.Milliseconds(),
		})
	}
	return b.publishTo(ctx, delayQueue, m.ID, amqp.Publishing{
		Headers:   traceHeaders(m),
		Priority:  priorityLevels[m.Priority],
		Type:      m.Type,
		Timestamp: m.EnqueuedAt,
		Body:      body,
	}, declare)
}

// Delay queue waits. Up to fineDelay a task waits its delay rounded up to
// 100 ms, and up to coarseDelay rounded up to a second, so it is due
// within that much of its time. A longer delay waits in a queue of
// coarseDelay times a power of two, the largest not past its time (up to
// maxDelayLevel, under RabbitMQ's largest message TTL); the worker that
// gets it early sends it back for the rest (see workerPool.waitForETA).
// So a handful of queues serve any horizon, and a task takes a few hops
// at most.
const (
	fineDelay     = 10 * time.Second
	coarseDelay   = 15 * time.Minute
	maxDelayLevel = coarseDelay << 11 // about 21 days
)

// delayLevel is the wait of the delay queue for delay.
func delayLevel(delay time.Duration) time.Duration {
	switch {
	case delay <= fineDelay:
		return max(100*time.Millisecond, roundUp(delay, 100*time.Millisecond))
	case delay <= coarseDelay:
		return roundUp(delay, time.Second)
	}
	level := coarseDelay
	for level*2 <= delay && level < maxDelayLevel {
		level *= 2
	}
	return level
}

func roundUp(d, unit time.Duration) time.Duration {
	return (d + unit - 1) / unit * unit
}

// publishDead puts a message body on the dead-letter queue with the reason
// it can never run, in the x-errand-reason header.
func (b *amqpBroker) publishDead(ctx context.Context, body []byte, id, reason string) error {
	return b.publishTo(ctx, b.deadQueue, id, amqp.Publishing{
		Headers:   amqp.Table{"x-errand-reason": reason},
		Timestamp: time.Now(), // when it died: the reason's time
		Body:      body,
	}, nil)
}

// publishTo publishes msg to queue (through the default exchange) and
// waits, within the publish timeout, for its confirm. declare, when not
// nil, declares the queue first on the publishing channel.
func (b *amqpBroker) publishTo(ctx context.Context, queue, id string, msg amqp.Publishing, declare func(*amqp.Channel) error) error {
	ctx, cancel := context.WithTimeoutCause(ctx, b.publishTimeout, errConfirmTimeout)
	defer cancel()
	err := b.publishOnce(ctx, queue, id, msg, declare)
	if errors.Is(err, errUnroutable) && declare != nil {
		// A delay queue that expired since this connection last declared
		// it: declare it again, and publish once more.
		b.forgetDeclared(queue)
		err = b.publishOnce(ctx, queue, id, msg, declare)
	}
	return err
}

// errConfirmTimeout ends a publish whose confirm took PUBLISH_TIMEOUT (not
// the caller's own deadline).
var errConfirmTimeout = errors.New("no confirm within PUBLISH_TIMEOUT")

// errUnroutable is a message the broker returned: its queue is missing.
var errUnroutable = errors.New("unroutable")

// publishOnce is one try of publishTo, within ctx's deadline.
func (b *amqpBroker) publishOnce(ctx context.Context, queue, id string, msg amqp.Publishing, declare func(*amqp.Channel) error) error {
	p, err := b.publisher()
	if err != nil {
		return err
	}
	if declare != nil {
		if err := p.declareFresh(queue, declare); err != nil {
			b.dropPublisher(p)
			return fmt.Errorf("%w: declare %s: %w", errBrokerUnavailable, queue, err)
		}
	}
	if msg.ContentType == "" {
		msg.ContentType = "application/json"
	}
	msg.DeliveryMode = amqp.Persistent
	msg.MessageId = id
	c := p.channel()
	confirm, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue,
		true,  // mandatory: an unroutable message comes back instead of vanishing
		false, // immediate
		msg)
	if err != nil {
		b.dropPublisher(p)
		return fmt.Errorf("%w: publish %s: %w", errBrokerUnavailable, id, err)
	}
	acked, err := confirm.WaitContext(ctx)
	if err != nil {
		if errors.Is(context.Cause(ctx), errConfirmTimeout) {
			b.leaveSilentNode(p)
		}
		return fmt.Errorf("%w: %w: wait for confirm of %s: %w", errBrokerUnavailable, errPublishUnconfirmed, id, err)
	}
	if !acked && c.ch.IsClosed() {
		// amqp091 resolves the confirms still awaited on a channel that
		// closed as nacks: the broker may have the message.
		b.dropPublisher(p)
		return fmt.Errorf("%w: %w: channel closed awaiting the confirm of %s", errBrokerUnavailable, errPublishUnconfirmed, id)
	}
	if !acked {
		// A definite refusal. RabbitMQ 3.10 goes on nacking, on the same
		// channel, every publish to a quorum queue whose leader's node
		// died, although another member leads it by then; a publisher
		// opened afresh finds the new leader.
		b.retirePublisher(p)
		return fmt.Errorf("%w: broker nacked %s", errBrokerUnavailable, id)
	}
	if c.wasReturned(id) {
		return fmt.Errorf("%w: %s was %w (queue %s missing)", errBrokerUnavailable, id, errUnroutable, queue)
	}
	return nil
}

// traceHeaders puts the message's trace context in AMQP headers.
func traceHeaders(m taskMessage) amqp.Table {
	if len(m.Trace) == 0 {
		return nil
	}
	h := amqp.Table{}
	for k, v := range m.Trace {
		h[k] = v
	}
	return h
}
