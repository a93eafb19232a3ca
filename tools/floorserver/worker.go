package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// workerPrefetch is as many unacked messages as errand's worker holds by
// default (one per worker goroutine).
const workerPrefetch = 32

// errand's result batches: one writer, up to 256 documents an insert.
const (
	resultWriters  = 1
	maxResultBatch = 256
)

// resultDoc is the task_results document errand's worker writes for a
// finished process_heavy_task, field for field.
type resultDoc struct {
	ID          string     `bson:"_id"`
	TaskID      string     `bson:"task_id"`
	TaskType    string     `bson:"task_type"`
	Status      string     `bson:"status"`
	Result      heavyValue `bson:"result"`
	Attempts    int        `bson:"attempts"`
	CompletedAt time.Time  `bson:"completed_at"`
	Args        submitBody `bson:"args"`
	Priority    string     `bson:"priority"`
	Owner       string     `bson:"owner"`
	CreatedAt   time.Time  `bson:"created_at"`
	StartedAt   time.Time  `bson:"started_at"`
}

// heavyValue is what the guide's process_heavy_task returns.
type heavyValue struct {
	TaskID         string   `json:"task_id" bson:"task_id"`
	Status         string   `json:"status" bson:"status"`
	ProcessedItems []string `json:"processed_items" bson:"processed_items"`
	TotalProcessed int      `json:"total_processed" bson:"total_processed"`
	CompletedAt    string   `json:"completed_at" bson:"completed_at"`
}

// finalStatus is the SUCCESS status errand writes at a task's end: the
// PENDING document's fields and the run's.
type finalStatus struct {
	pendingStatus
	Attempts    int        `json:"attempts"`
	StartedAt   time.Time  `json:"started_at"`
	CompletedAt time.Time  `json:"completed_at"`
	Result      heavyValue `json:"result"`
}

// floorWorker keeps a worker's promises for each task and nothing more:
// its result stored in MongoDB and its final status in Redis before its
// message is acked, both batched across concurrent tasks as errand
// batches them. It has none of errand's other work: no check for a
// cancel, no argument check, no log lines, metrics or tracing, no
// progress, no webhooks or workflows.
type floorWorker struct {
	results  *batcher[resultDoc]
	statuses *batcher[statusWrite]
	coll     *mongo.Collection
	redis    *redis.Client
}

// work consumes queue (which -mode promises fills) until ctx ends,
// keeping a worker's promises for every task (see floorWorker).
func work(ctx context.Context, cfg config) error {
	ropts, err := redis.ParseURL(cfg.redisURL)
	if err != nil {
		return errors.New("parse the Redis URL: not a valid redis:// URL")
	}
	rdb := redis.NewClient(ropts)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: ping: %w", err)
	}
	client, err := mongo.Connect(options.Client().ApplyURI(cfg.mongoURI))
	if err != nil {
		return fmt.Errorf("mongodb: connect: %w", err)
	}
	defer client.Disconnect(context.Background())
	w := &floorWorker{coll: client.Database(cfg.mongoDatabase).Collection("task_results"), redis: rdb}
	if err := w.ensureIndexes(ctx); err != nil {
		return err
	}
	var inserters []func(context.Context, []resultDoc) error
	for range resultWriters {
		inserters = append(inserters, w.insertResults)
	}
	w.results = newBatcher(maxResultBatch, inserters)
	defer w.results.close()
	w.statuses = newBatcher(maxStatusBatch, []func(context.Context, []statusWrite) error{w.writeStatuses, w.writeStatuses})
	defer w.statuses.close()

	conn, err := amqp.Dial(cfg.amqpURL)
	if err != nil {
		return fmt.Errorf("amqp: dial: %w", err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return fmt.Errorf("amqp: open a channel: %w", err)
	}
	if err := declareQueue(ch, cfg.queue); err != nil {
		return err
	}
	if err := ch.Qos(workerPrefetch, 0, false); err != nil {
		return fmt.Errorf("amqp: set the prefetch: %w", err)
	}
	// Deferred in this order, the tasks in flight are cancelled first
	// (on a failure; on shutdown they already are), then waited for.
	var running sync.WaitGroup
	defer running.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const autoAck, exclusive, noLocal, noWait = false, false, false, false
	deliveries, err := ch.ConsumeWithContext(ctx, cfg.queue, "", autoAck, exclusive, noLocal, noWait, nil)
	if err != nil {
		return fmt.Errorf("amqp: consume %s: %w", cfg.queue, err)
	}
	failed := make(chan error, 1)
	for {
		select {
		case <-ctx.Done():
			select {
			case err := <-failed:
				return err
			default:
				return nil
			}
		case err := <-failed:
			return err
		case d, ok := <-deliveries:
			if !ok {
				if ctx.Err() != nil {
					return nil // the consumer was closed by the shutdown
				}
				return errors.New("amqp: the broker closed the consumer")
			}
			running.Add(1)
			go func() {
				defer running.Done()
				if err := w.process(ctx, d); err != nil {
					select {
					case failed <- err:
					default:
					}
				}
			}()
		}
	}
}

// ensureIndexes makes the task_results indexes errand makes, which every
// insert pays for.
func (w *floorWorker) ensureIndexes(ctx context.Context) error {
	_, err := w.coll.Indexes().CreateMany(ctx, []mongo.IndexModel{
		{Keys: bson.D{{Key: "owner", Value: 1}, {Key: "created_at", Value: -1}, {Key: "_id", Value: -1}}},
		{Keys: bson.D{{Key: "owner", Value: 1}, {Key: "status", Value: 1}, {Key: "created_at", Value: -1}, {Key: "_id", Value: -1}}},
		{Keys: bson.D{{Key: "args.user_id", Value: 1}, {Key: "created_at", Value: 1}}},
	})
	if err != nil {
		return fmt.Errorf("mongodb: create task_results indexes: %w", err)
	}
	return nil
}

// process runs one delivery's tasks (one, or a batch of them), stores
// their results and statuses, and acks it. A delivery it cannot decode is
// acked unrun and its error stops the worker: nothing but -mode promises
// publishes to the floor's queue, so a measurement with one is void.
func (w *floorWorker) process(ctx context.Context, d amqp.Delivery) error {
	tasks, err := decodeTasks(d.Body)
	if err != nil {
		_ = d.Ack(false)
		return err
	}
	errs := make(chan error, len(tasks))
	for _, task := range tasks {
		go func() { errs <- w.finish(ctx, task) }()
	}
	var failures []error
	for range tasks {
		failures = append(failures, <-errs)
	}
	if err := errors.Join(failures...); err != nil {
		_ = d.Nack(false, true)
		return err
	}
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("amqp: ack: %w", err)
	}
	return nil
}

// finish runs a task (the guide's process_heavy_task at no delay), then
// stores its result and its final status.
func (w *floorWorker) finish(ctx context.Context, task taskMessage) error {
	started := time.Now().UTC()
	upper := strings.ToUpper(task.Args.Data)
	items := make([]string, 0, task.Args.Iterations)
	for i := 1; i <= task.Args.Iterations; i++ {
		items = append(items, fmt.Sprintf("%s_ITERATION_%d", upper, i))
	}
	done := time.Now().UTC()
	value := heavyValue{TaskID: task.ID, Status: "completed", ProcessedItems: items, TotalProcessed: len(items),
		CompletedAt: done.Format(time.RFC3339Nano)}
	if err := w.results.do(ctx, resultDoc{ID: task.ID, TaskID: task.ID, TaskType: task.Type, Status: "SUCCESS", Result: value,
		Attempts: 1, CompletedAt: done, Args: task.Args, Priority: task.Priority, CreatedAt: task.EnqueuedAt, StartedAt: started}); err != nil {
		return fmt.Errorf("store the result of %s: %w", task.ID, err)
	}
	status, err := json.Marshal(finalStatus{pendingStatus: pendingStatus{TaskID: task.ID, Status: "SUCCESS", TaskType: task.Type,
		UpdatedAt: done, Args: task.Args, Priority: task.Priority, CreatedAt: task.EnqueuedAt},
		Attempts: 1, StartedAt: started, CompletedAt: done, Result: value})
	if err != nil {
		return fmt.Errorf("encode the status of %s: %w", task.ID, err)
	}
	if err := w.statuses.do(ctx, statusWrite{id: task.ID, doc: status}); err != nil {
		return fmt.Errorf("write the status of %s: %w", task.ID, err)
	}
	return nil
}

// decodeTasks reads a message -mode promises published: one task, or a
// JSON array of them.
func decodeTasks(body []byte) ([]taskMessage, error) {
	if b := bytes.TrimLeft(body, " \t\r\n"); len(b) > 0 && b[0] == '[' {
		var tasks []taskMessage
		if err := json.Unmarshal(body, &tasks); err != nil {
			return nil, fmt.Errorf("decode a batch of tasks: %w", err)
		}
		return tasks, nil
	}
	var task taskMessage
	if err := json.Unmarshal(body, &task); err != nil {
		return nil, fmt.Errorf("decode a task: %w", err)
	}
	return []taskMessage{task}, nil
}

// insertResults stores a batch of results in one unordered InsertMany; a
// result stored before (a redelivery) is not an error.
func (w *floorWorker) insertResults(ctx context.Context, batch []resultDoc) error {
	docs := make([]any, len(batch))
	for i, doc := range batch {
		docs[i] = doc
	}
	_, err := w.coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	if errors.As(err, &bwe) && bwe.WriteConcernError == nil {
		for _, we := range bwe.WriteErrors {
			if !mongo.IsDuplicateKeyError(we) {
				return fmt.Errorf("mongodb: insert %d results: %w", len(batch), err)
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("mongodb: insert %d results: %w", len(batch), err)
	}
	return nil
}

// writeStatuses writes a batch of final statuses in one pipeline.
func (w *floorWorker) writeStatuses(ctx context.Context, batch []statusWrite) error {
	return setStatuses(ctx, w.redis, batch)
}
