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

// errand's batch shape: two loops per batcher, up to 16 tasks in one
// message and 128 status writes in one pipeline; its queue's priorities.
const (
	loops            = 2
	maxEnvelopeTasks = 16
	maxStatusBatch   = 128
	maxPriority      = 10
)

var priorityLevels = map[string]uint8{"low": 1, "normal": 5, "high": 9}

const (
	// statusTTL only keeps a long run from filling Redis; scripts/floor
	// deletes the keys when it ends.
	statusTTL = 10 * time.Minute
	// opTimeout bounds one batch, whose callers' contexts it does not have.
	opTimeout = 10 * time.Second
)

// promises writes each task's PENDING status to Redis and publishes it,
// persistent and confirmed, to RabbitMQ.
type promises struct {
	redis    *redis.Client
	conn     *amqp.Connection
	statuses *batcher[statusWrite]
	publish  *batcher[taskMessage]
}

// statusWrite is one task's status document.
type statusWrite struct {
	id  string
	doc []byte
}

// pendingStatus is the document errand writes for a new task, field for
// field.
type pendingStatus struct {
	TaskID    string     `json:"task_id"`
	Status    string     `json:"status"`
	TaskType  string     `json:"task_type"`
	UpdatedAt time.Time  `json:"updated_at"`
	Args      submitBody `json:"args"`
	Priority  string     `json:"priority"`
	CreatedAt time.Time  `json:"created_at"`
}

func openPromises(ctx context.Context, amqpURL, redisURL, queue string) (*promises, error) {
	ropts, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, errors.New("parse the Redis URL: not a valid redis:// URL")
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
	var publishers []func(context.Context, []taskMessage) error
	var statusWriters []func(context.Context, []statusWrite) error
	for range loops {
		pub, err := openPublisher(conn, queue)
		if err != nil {
			p.close()
			return nil, err
		}
		publishers = append(publishers, pub)
		statusWriters = append(statusWriters, p.writeStatuses)
	}
	p.statuses = newBatcher(maxStatusBatch, statusWriters)
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
func (p *promises) accept(ctx context.Context, task taskMessage) error {
	status, err := json.Marshal(pendingStatus{TaskID: task.ID, Status: "PENDING", TaskType: task.Type,
		UpdatedAt: task.EnqueuedAt, Args: task.Args, Priority: task.Priority, CreatedAt: task.EnqueuedAt})
	if err != nil {
		return fmt.Errorf("encode the status of %s: %w", task.ID, err)
	}
	if err := p.statuses.do(ctx, statusWrite{id: task.ID, doc: status}); err != nil {
		return fmt.Errorf("write PENDING for %s: %w", task.ID, err)
	}
	if err := p.publish.do(ctx, task); err != nil {
		return fmt.Errorf("publish %s: %w", task.ID, err)
	}
	return nil
}

// writeStatuses writes a batch of statuses in one pipeline.
func (p *promises) writeStatuses(ctx context.Context, batch []statusWrite) error {
	return setStatuses(ctx, p.redis, batch)
}

// setStatuses writes a batch of status documents in one pipeline.
func setStatuses(ctx context.Context, rdb *redis.Client, batch []statusWrite) error {
	pipe := rdb.Pipeline()
	for _, w := range batch {
		pipe.Set(ctx, statusKey(w.id), w.doc, statusTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis: write %d statuses: %w", len(batch), err)
	}
	return nil
}

func statusKey(id string) string { return "floor:status:" + id }

// declareQueue declares errand's kind of work queue: durable, classic,
// with priorities.
func declareQueue(ch *amqp.Channel, queue string) error {
	const durable, autoDelete, exclusive, noWait = true, false, false, false
	args := amqp.Table{"x-max-priority": int32(maxPriority)}
	if _, err := ch.QueueDeclare(queue, durable, autoDelete, exclusive, noWait, args); err != nil {
		return fmt.Errorf("amqp: declare %s: %w", queue, err)
	}
	return nil
}

// openPublisher opens a channel in confirm mode on conn and returns what
// publishes a batch on it: one task as its own message, several as one
// message holding their JSON array, persistent, with the first task's
// id and priority, waiting for the confirm. (A batch shares a priority in
// errand; here every task of the harness's submit has the same.)
func openPublisher(conn *amqp.Connection, queue string) (func(context.Context, []taskMessage) error, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("amqp: open a channel: %w", err)
	}
	const noWait = false
	if err := ch.Confirm(noWait); err != nil {
		return nil, fmt.Errorf("amqp: put the channel in confirm mode: %w", err)
	}
	if err := declareQueue(ch, queue); err != nil {
		return nil, err
	}
	return func(ctx context.Context, batch []taskMessage) error {
		var body []byte
		var err error
		if len(batch) == 1 {
			body, err = json.Marshal(batch[0])
		} else {
			body, err = json.Marshal(batch)
		}
		if err != nil {
			return fmt.Errorf("encode %d tasks: %w", len(batch), err)
		}
		// Unroutable messages would come back unheard; errand publishes
		// mandatory to learn of a missing queue, which costs the broker
		// next to nothing when the queue is there.
		const mandatory, immediate = false, false
		confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, "", queue, mandatory, immediate, amqp.Publishing{
			DeliveryMode: amqp.Persistent, ContentType: "application/json", MessageId: batch[0].ID,
			Priority: priorityLevels[batch[0].Priority], Timestamp: batch[0].EnqueuedAt, Body: body})
		if err != nil {
			return fmt.Errorf("amqp: publish %d tasks: %w", len(batch), err)
		}
		acked, err := confirm.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("amqp: wait for the confirm of %d tasks: %w", len(batch), err)
		}
		if !acked {
			return errors.New("amqp: the broker refused the message")
		}
		return nil
	}, nil
}
