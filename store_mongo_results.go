package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// mongoTaskRecord is a task_results document. Its _id is the task id, which
// is what makes saveResult idempotent: a second insert of the same task
// cannot make a second document.
type mongoTaskRecord struct {
	ID          string         `bson:"_id"`
	TaskID      string         `bson:"task_id"`
	TaskType    string         `bson:"task_type"`
	Status      string         `bson:"status"`
	Result      map[string]any `bson:"result,omitempty"`
	Error       string         `bson:"error,omitempty"`
	Attempts    int            `bson:"attempts,omitempty"`
	CompletedAt time.Time      `bson:"completed_at"`
	Args        map[string]any `bson:"args,omitempty"`
	Priority    string         `bson:"priority,omitempty"`
	// Owner is written even when empty, so listings can select on it.
	Owner   string `bson:"owner"`
	TraceID string `bson:"trace_id,omitempty"`
	// CreatedAt, missing from records written before errand kept it,
	// orders listings.
	CreatedAt      time.Time        `bson:"created_at,omitempty"`
	ScheduledFor   *time.Time       `bson:"scheduled_for,omitempty"`
	StartedAt      *time.Time       `bson:"started_at,omitempty"`
	Revoked        *mongoRevocation `bson:"revoked,omitempty"`
	CallbackURL    string           `bson:"callback_url,omitempty"`
	ConcurrencyKey string           `bson:"concurrency_key,omitempty"`
	WorkflowID     string           `bson:"workflow_id,omitempty"`
}

type mongoRevocation struct {
	By string    `bson:"by"`
	At time.Time `bson:"at"`
}

func newMongoTaskRecord(r taskRecord) mongoTaskRecord {
	doc := mongoTaskRecord{ID: r.TaskID, TaskID: r.TaskID, TaskType: r.TaskType, Status: r.Status, Result: r.Result, Error: r.Error,
		Attempts: r.Attempts, CompletedAt: mongoTime(r.CompletedAt), Args: r.Args, Priority: r.Priority, Owner: r.Owner, TraceID: r.TraceID,
		CreatedAt: mongoTime(r.CreatedAt), ScheduledFor: mongoTimePtr(r.ScheduledFor), StartedAt: mongoTimePtr(r.StartedAt),
		CallbackURL: r.CallbackURL, ConcurrencyKey: r.ConcurrencyKey, WorkflowID: r.WorkflowID}
	if r.CreatedAt.IsZero() {
		doc.CreatedAt = time.Time{}
	}
	if r.Revoked != nil {
		doc.Revoked = &mongoRevocation{By: r.Revoked.By, At: mongoTime(r.Revoked.At)}
	}
	return doc
}

func (m mongoTaskRecord) record() taskRecord {
	r := taskRecord{TaskID: m.TaskID, TaskType: m.TaskType, Status: m.Status, Result: m.Result, Error: m.Error,
		Attempts: m.Attempts, CompletedAt: m.CompletedAt.UTC(), Args: m.Args, Priority: m.Priority, Owner: m.Owner, TraceID: m.TraceID,
		CreatedAt: m.CreatedAt.UTC(), ScheduledFor: utcPtr(m.ScheduledFor), StartedAt: utcPtr(m.StartedAt),
		CallbackURL: m.CallbackURL, ConcurrencyKey: m.ConcurrencyKey, WorkflowID: m.WorkflowID}
	if m.CreatedAt.IsZero() {
		r.CreatedAt = time.Time{}
	}
	if m.Revoked != nil {
		r.Revoked = &revocation{By: m.Revoked.By, At: m.Revoked.At.UTC()}
	}
	return r
}

// Result writes are batched (see batcher): under load one InsertMany
// stores many results, which is what lets the task path go faster than
// one MongoDB write at a time. One writer: the next batch fills while one
// is in flight, and every batch has a fixed cost on the server, so a
// second writer, splitting the waiting results between two calls, costs
// the server more per result (docs/performance.md, "Result batches"). A
// slow insert holds the next batch back; a second writer would be waiting
// on the same server.
const (
	resultWriters  = 1
	maxResultBatch = 256
)

// saveResult inserts r with its task id as _id. The insert cannot make a
// second document for a task: a duplicate key means an earlier save won,
// and that document is returned instead.
func (s *mongoStore) saveResult(ctx context.Context, r taskRecord) (taskRecord, error) {
	saved, err := s.resultWriter.do(ctx, newMongoTaskRecord(r))
	if err != nil && ctx.Err() != nil {
		return taskRecord{}, fmt.Errorf("mongodb: save result of %s: %w", r.TaskID, err)
	}
	return saved, err
}

// insertResults stores a batch with one unordered InsertMany and tells
// each document's outcome.
func (s *mongoStore) insertResults(ctx context.Context, batch []mongoTaskRecord) []batchOutcome[taskRecord] {
	// The writers serve callers whose contexts they do not have; each
	// batch gets its own deadline instead.
	ctx, cancel := context.WithTimeout(ctx, mongoOpTimeout)
	defer cancel()
	out := make([]batchOutcome[taskRecord], len(batch))
	for i, err := range insertEach(ctx, s.results, batch) {
		doc := batch[i]
		switch {
		case err == nil:
			out[i].resp = doc.record()
		case mongo.IsDuplicateKeyError(err):
			// Saved before (a redelivery or a duplicate message): the
			// first result stands.
			out[i].resp, out[i].err = s.getResult(ctx, doc.ID)
		default:
			out[i].err = fmt.Errorf("mongodb: save result of %s: %w", doc.ID, err)
		}
	}
	return out
}

func (s *mongoStore) listFinished(ctx context.Context, q taskQuery) (taskPage, error) {
	filter := bson.D{{Key: "owner", Value: q.owner}}
	if q.status != "" {
		filter = append(filter, bson.E{Key: "status", Value: q.status})
	}
	if q.taskType != "" {
		filter = append(filter, bson.E{Key: "task_type", Value: q.taskType})
	}
	if q.key != "" {
		filter = append(filter, bson.E{Key: "concurrency_key", Value: q.key})
	}
	if !q.since.IsZero() {
		filter = append(filter, bson.E{Key: "created_at", Value: bson.D{{Key: "$gte", Value: q.since}}})
	}
	if q.after != nil {
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "created_at", Value: bson.D{{Key: "$lt", Value: q.after.created}}}},
			bson.D{{Key: "created_at", Value: q.after.created}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: q.after.id}}}},
		}})
	}
	opts := options.Find().SetSort(bson.D{{Key: "created_at", Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int64(q.limit))
	records, err := findAll(ctx, s.results, filter, opts, mongoTaskRecord.record)
	if err != nil {
		return taskPage{}, fmt.Errorf("mongodb: list results: %w", err)
	}
	var page taskPage
	for _, r := range records {
		page.tasks = append(page.tasks, r.status())
	}
	if len(page.tasks) == q.limit {
		last := keyOf(page.tasks[len(page.tasks)-1])
		page.reached = &last
	}
	return page, nil
}

func (s *mongoStore) getResult(ctx context.Context, taskID string) (taskRecord, error) {
	var doc mongoTaskRecord
	err := s.results.FindOne(ctx, bson.D{{Key: "_id", Value: taskID}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return taskRecord{}, errNotFound
	}
	if err != nil {
		return taskRecord{}, fmt.Errorf("mongodb: get result of %s: %w", taskID, err)
	}
	return doc.record(), nil
}
