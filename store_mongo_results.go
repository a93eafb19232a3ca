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
	Owner       string         `bson:"owner,omitempty"`
	TraceID     string         `bson:"trace_id,omitempty"`
}

func (m mongoTaskRecord) record() taskRecord {
	return taskRecord{TaskID: m.TaskID, TaskType: m.TaskType, Status: m.Status, Result: m.Result, Error: m.Error,
		Attempts: m.Attempts, CompletedAt: m.CompletedAt.UTC(), Args: m.Args, Priority: m.Priority, Owner: m.Owner, TraceID: m.TraceID}
}

// Result writes are batched (see batcher): under load one InsertMany
// stores many results, which is what lets the task path go faster than
// one MongoDB write at a time. Two writers keep one batch filling while
// the other is in flight; more make smaller batches, and every batch has
// a fixed cost on the server (docs/performance.md, "Result batches").
const (
	resultWriters  = 2
	maxResultBatch = 256
)

// saveResult inserts r with its task id as _id. The insert cannot make a
// second document for a task: a duplicate key means an earlier save won,
// and that document is returned instead.
func (s *mongoStore) saveResult(ctx context.Context, r taskRecord) (taskRecord, error) {
	doc := mongoTaskRecord{ID: r.TaskID, TaskID: r.TaskID, TaskType: r.TaskType, Status: r.Status, Result: r.Result, Error: r.Error,
		Attempts: r.Attempts, CompletedAt: mongoTime(r.CompletedAt), Args: r.Args, Priority: r.Priority, Owner: r.Owner, TraceID: r.TraceID}
	saved, err := s.resultWriter.do(ctx, doc)
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

func (s *mongoStore) listResults(ctx context.Context, f resultFilter, skip, limit int) ([]taskRecord, error) {
	filter := bson.D{}
	if f.Status != "" {
		filter = append(filter, bson.E{Key: "status", Value: f.Status})
	}
	if f.Owner != "" {
		filter = append(filter, bson.E{Key: "owner", Value: f.Owner})
	}
	opts := options.Find().SetSort(bson.D{{Key: "completed_at", Value: -1}, {Key: "_id", Value: 1}}).SetSkip(int64(skip)).SetLimit(int64(limit))
	out, err := findAll(ctx, s.results, filter, opts, mongoTaskRecord.record)
	if err != nil {
		return nil, fmt.Errorf("mongodb: list results: %w", err)
	}
	return out, nil
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
