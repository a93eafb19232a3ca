package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

const (
	// loops and maxBatch are errand's: two loops per batcher, up to 16
	// tasks in one message and 128 status writes in one pipeline.
	loops            = 2
	maxEnvelopeTasks = 16
	maxStatusBatch   = 128
	statusTTL        = 24 * time.Hour
	opTimeout        = 10 * time.Second
)

// promises writes each task's PENDING status to Redis and publishes it,
// persistent and confirmed, to RabbitMQ.
type promises struct {
	redis    *redis.Client
	conn     *amqp.Connection
	statuses *batcher[statusWrite]
	publish  *batcher[[]byte]
}

// statusWrite is one task's status document.
type statusWrite struct {
	id  string
	doc []byte
}

func openPromises(ctx context.Context, amqpURL, redisURL, queue string) (*promises, error) {
	ropts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", err)
	}
	rdb := redis.NewClient(ropts)
	if err := rdb.Ping(ctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("redis: ping: %w", err)
	}
	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		rdb.Close()
		return nil, fmt.Errorf("amqp: dial: %w", err)
	}
	p := &promises{redis: rdb, conn: conn}
	var publishers []func(context.Context, [][]byte) error
	for range loops {
		pub, err := openPublisher(conn, queue)
		if err != nil {
			p.close()
			return nil, err
		}
		publishers = append(publishers, pub)
	}
	p.statuses = newBatcher(maxStatusBatch, []func(context.Context, []statusWrite) error{p.writeStatuses, p.writeStatuses})
	p.publish = newBatcher(maxEnvelopeTasks, publishers)
	return p, nil
}

func (p *promises) close() {
	if p.statuses != nil {
		p.statuses.close()
		p.publish.close()
	}
	p.conn.Close()
	p.redis.Close()
}

// accept writes the task's PENDING status, then publishes it: errand's
// order, so a worker never finds a task without a status.
func (p *promises) accept(ctx context.Context, id string, message []byte) error {
	status, err := json.Marshal(map[string]string{"task_id": id, "status": "PENDING"})
	if err != nil {
		return fmt.Errorf("encode status: %w", err)
	}
	if err := p.statuses.do(ctx, statusWrite{id: id, doc: status}); err != nil {
		return fmt.Errorf("write PENDING: %w", err)
	}
	if err := p.publish.do(ctx, message); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// writeStatuses writes a batch of statuses in one pipeline.
func (p *promises) writeStatuses(ctx context.Context, batch []statusWrite) error {
	pipe := p.redis.Pipeline()
	for _, w := range batch {
		pipe.Set(ctx, statusKey(w.id), w.doc, statusTTL)
	}
	_, err := pipe.Exec(ctx)
	return err
}

// openPublisher opens a channel in confirm mode on conn and returns what
// publishes a batch on it: one task as its own message, several as one
// message holding their JSON array, persistent, waiting for the confirm.
func openPublisher(conn *amqp.Connection, queue string) (func(context.Context, [][]byte) error, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		return nil, fmt.Errorf("amqp: confirm mode: %w", err)
	}
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		return nil, fmt.Errorf("amqp: declare %s: %w", queue, err)
	}
	return func(ctx context.Context, batch [][]byte) error {
		body := batch[0]
		if len(batch) > 1 {
			parts := make([]json.RawMessage, len(batch))
			for i, m := range batch {
				parts[i] = m
			}
			var err error
			if body, err = json.Marshal(parts); err != nil {
				return fmt.Errorf("encode envelope: %w", err)
			}
		}
		confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, false, false,
			amqp.Publishing{DeliveryMode: amqp.Persistent, ContentType: "application/json", Body: body})
		if err != nil {
			return fmt.Errorf("amqp: publish: %w", err)
		}
		acked, err := confirm.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("amqp: wait for the confirm: %w", err)
		}
		if !acked {
			return errors.New("amqp: the broker refused the message")
		}
		return nil
	}, nil
}

func statusKey(id string) string { return "floor:status:" + id }
