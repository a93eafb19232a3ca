package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Queue types (QUEUE_TYPE). Classic queues honour the three priorities
// strictly through x-max-priority. Quorum queues are replicated by Raft,
// confirm faster under load, and count redeliveries themselves, but on
// RabbitMQ 3.x they deliver in arrival order whatever the priority.
const (
	queueClassic = "classic"
	queueQuorum  = "quorum"
)

// queueArgs are the declare arguments of one of errand's queues, extra
// merged in: the queue type, and for a classic work queue its priorities.
func (b *amqpBroker) queueArgs(extra amqp.Table) amqp.Table {
	args := amqp.Table{}
	if b.queueType != queueClassic {
		// Classic is RabbitMQ's default; naming it would make queues
		// declared before QUEUE_TYPE existed look inequivalent.
		args["x-queue-type"] = b.queueType
	}
	for k, v := range extra {
		args[k] = v
	}
	return args
}

// declareTopology declares the durable work queue and its dead-letter
// queue. Rejected messages (poison, or out of retries) go to the latter.
func (b *amqpBroker) declareTopology(ch *amqp.Channel) error {
	if err := b.declareQueue(ch, b.deadQueue, nil); err != nil {
		return err
	}
	work := amqp.Table{
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": b.deadQueue,
	}
	if b.queueType == queueClassic {
		work["x-max-priority"] = int32(maxPriority)
	}
	return b.declareQueue(ch, b.queue, work)
}

// declareQueue declares a durable queue of the configured type. A queue
// that exists with other arguments (another QUEUE_TYPE, say) is an error
// RabbitMQ answers by closing the channel; the message says what to do.
func (b *amqpBroker) declareQueue(ch *amqp.Channel, name string, extra amqp.Table) error {
	_, err := ch.QueueDeclare(name,
		true,  // durable
		false, // autoDelete
		false, // exclusive
		false, // noWait
		b.queueArgs(extra))
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && amqpErr.Code == amqp.PreconditionFailed {
		return fmt.Errorf("declare queue %s as %s: it exists with other settings (a queue keeps its type; delete it or set QUEUE_TYPE to match): %w", name, b.queueType, err)
	}
	if err != nil {
		return fmt.Errorf("declare queue %s: %w", name, err)
	}
	return nil
}

// queueDepths reads the ready-message counts of the work and dead-letter
// queues with a passive declare on a short-lived channel.
func (b *amqpBroker) queueDepths(ctx context.Context) (map[string]int, error) {
	p, err := b.publisher()
	if err != nil {
		return nil, err
	}
	type answer struct {
		depths map[string]int
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		ch, err := p.conn.Channel()
		if err != nil {
			done <- answer{err: fmt.Errorf("open channel: %w", err)}
			return
		}
		defer ch.Close()
		depths := map[string]int{}
		for _, q := range []string{b.queue, b.deadQueue} {
			info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
			if err != nil {
				done <- answer{err: fmt.Errorf("inspect queue %s: %w", q, err)}
				return
			}
			depths[q] = info.Messages
		}
		done <- answer{depths: depths}
	}()
	select {
	case a := <-done:
		return a.depths, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sweepDead visits the oldest scan dead letters on a channel of its own:
// each is taken with basic.get and left unacknowledged, acked when visit
// removes it; closing the channel gives every other one back. A classic
// queue puts them back where they were; a quorum queue puts them behind
// the ones the sweep did not reach. While a sweep holds them, other
// sweeps do not see them.
func (b *amqpBroker) sweepDead(ctx context.Context, scan int, visit func(deadLetter) (bool, error)) error {
	p, err := b.publisher()
	if err != nil {
		return err
	}
	ch, err := p.conn.Channel()
	if err != nil {
		return fmt.Errorf("%w: open channel: %w", errBrokerUnavailable, err)
	}
	defer ch.Close()
	for range scan {
		if err := ctx.Err(); err != nil {
			return err
		}
		d, ok, err := ch.Get(b.deadQueue, false) // no auto-ack
		if err != nil {
			return fmt.Errorf("%w: get from %s: %w", errBrokerUnavailable, b.deadQueue, err)
		}
		if !ok {
			return nil
		}
		remove, err := visit(deadLetterOf(d))
		if err != nil {
			return err
		}
		if remove {
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("%w: ack dead letter: %w", errBrokerUnavailable, err)
			}
		}
	}
	return nil
}

// deadLetterOf reads a dead letter's reason: errand's own header, or the
// broker's x-death record for a message RabbitMQ dead-lettered itself.
func deadLetterOf(d amqp.Delivery) deadLetter {
	dl := deadLetter{body: d.Body}
	if reason, ok := d.Headers["x-errand-reason"].(string); ok {
		dl.reason = reason
		dl.deadAt = d.Timestamp
		return dl
	}
	if deaths, ok := d.Headers["x-death"].([]any); ok && len(deaths) > 0 {
		if death, ok := deaths[0].(amqp.Table); ok {
			reason, _ := death["reason"].(string)
			dl.reason = "dead-lettered by RabbitMQ: " + reason
			dl.deadAt, _ = death["time"].(time.Time)
			return dl
		}
	}
	dl.reason = "unknown"
	return dl
}
