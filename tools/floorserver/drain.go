package main

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// drainPrefetch is as many unacked messages as errand's worker holds by
// default (one per worker goroutine).
const drainPrefetch = 32

// drain consumes queue and acks every message until ctx ends: the
// broker's side of a worker, with no work.
func drain(ctx context.Context, amqpURL, queue string) error {
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		return fmt.Errorf("amqp: dial: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: open a channel: %w", err)
	}
	if err := declareQueue(ch, queue); err != nil {
		return err
	}
	if err := ch.Qos(drainPrefetch, 0, false); err != nil {
		return fmt.Errorf("amqp: set the prefetch: %w", err)
	}
	const autoAck, exclusive, noLocal, noWait = false, false, false, false
	deliveries, err := ch.ConsumeWithContext(ctx, queue, "", autoAck, exclusive, noLocal, noWait, nil)
	if err != nil {
		return fmt.Errorf("amqp: consume %s: %w", queue, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case d, ok := <-deliveries:
			if !ok {
				return errors.New("amqp: the broker closed the consumer")
			}
			if err := d.Ack(false); err != nil {
				return fmt.Errorf("amqp: ack: %w", err)
			}
		}
	}
}
