package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// consume feeds out with deliveries until ctx ends, redialling after every
// lost connection for as long as it takes. When it returns, no new
// delivery will arrive; those handed out stay settleable until close.
func (b *amqpBroker) consume(ctx context.Context, prefetch int, out chan<- delivery) error {
	const maxBackoff = 5 * time.Second
	backoff := 100 * time.Millisecond
	for session := 0; ctx.Err() == nil; session++ {
		if session > 0 && b.onReconnect != nil {
			b.onReconnect("consumer")
		}
		started := time.Now()
		err := b.consumeSession(ctx, prefetch, out)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		b.log.Warn("rabbitmq consumer lost its connection; redialling", "error", err, "retry_in", backoff.String())
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, maxBackoff)
	}
	return nil
}

// consumeSession consumes on a connection of its own until ctx ends or
// the connection is lost. On a loss it closes the connection; at the end
// of ctx it leaves it open for the acks of tasks still running (close
// closes it).
func (b *amqpBroker) consumeSession(ctx context.Context, prefetch int, out chan<- delivery) error {
	conn, _, err := b.dial("consumer")
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.consumers[conn] = struct{}{}
	b.mu.Unlock()
	forget := func() {
		b.mu.Lock()
		delete(b.consumers, conn)
		b.mu.Unlock()
		conn.Close()
	}
	ch, tag, msgs, err := b.startConsuming(conn, prefetch)
	if err != nil {
		forget()
		return err
	}
	b.log.Info("consuming", "queue", b.queue, "prefetch", prefetch)
	if err := b.relay(ctx, msgs, out); err != nil {
		forget()
		return err
	}
	b.stopConsuming(ch, tag, msgs)
	return nil
}

// startConsuming opens a channel on conn with prefetch as its QoS (set
// before Consume, so the broker never pushes more), declares errand's
// queues and starts consuming the work queue.
func (b *amqpBroker) startConsuming(conn *amqp.Connection, prefetch int) (*amqp.Channel, string, <-chan amqp.Delivery, error) {
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(prefetch, 0, false)
	}
	if err == nil {
		err = b.declareTopology(ch)
	}
	if err != nil {
		return nil, "", nil, fmt.Errorf("open consumer channel: %w", err)
	}
	tag := fmt.Sprintf("errand-%d-%d", os.Getpid(), time.Now().UnixNano())
	msgs, err := ch.Consume(b.queue, tag,
		false, // autoAck: a task is acked only after its result is stored
		false, // exclusive
		false, // noLocal
		false, // noWait
		nil)
	if err != nil {
		return nil, "", nil, fmt.Errorf("consume %s: %w", b.queue, err)
	}
	return ch, tag, msgs, nil
}

// relay hands the tasks of the messages that arrive on msgs to out, one
// at a time as workers take them, until ctx ends (nil) or msgs closes
// with the connection (an error). Messages are read as they come, and
// their tasks wait, in arrival order, until a worker takes them; now and
// then the envelopes that waited too long go back to the queue.
func (b *amqpBroker) relay(ctx context.Context, msgs <-chan amqp.Delivery, out chan<- delivery) error {
	var held heldTasks
	staleCheck := time.NewTicker(max(b.envelopeHold/4, time.Millisecond))
	defer staleCheck.Stop()
	for {
		var next chan<- delivery
		var head delivery
		if len(held) > 0 {
			next, head = out, held[0].delivery
		}
		select {
		case <-ctx.Done():
			// Shutting down before these started: back to the queue.
			held.requeue()
			return nil
		case d, ok := <-msgs:
			if !ok {
				// The tasks still held cannot be settled on a closed
				// channel; the broker requeues their messages.
				return errors.New("delivery channel closed")
			}
			held = held.hold(d, time.Now())
		case next <- head:
			held = held.take()
		case now := <-staleCheck.C:
			held = b.republishStale(ctx, held, now)
		}
	}
}

// stopConsuming cancels the consumer and requeues what the broker had
// already pushed to it, leaving the connection open for in-flight acks.
func (b *amqpBroker) stopConsuming(ch *amqp.Channel, tag string, msgs <-chan amqp.Delivery) {
	if err := ch.Cancel(tag, false); err != nil {
		return // the channel is gone, and the broker requeues everything unacked
	}
	for d := range msgs {
		_ = d.Nack(false, true)
	}
}

func amqpDelivery(d amqp.Delivery) delivery {
	var headers map[string]string
	for k, v := range d.Headers {
		if s, ok := v.(string); ok {
			if headers == nil {
				headers = map[string]string{}
			}
			headers[k] = s
		}
	}
	return delivery{
		body:        d.Body,
		headers:     headers,
		redelivered: d.Redelivered,
		ack:         func() error { return d.Ack(false) },
		reject:      func(requeue bool) error { return d.Nack(false, requeue) },
	}
}
