package main

import (
	"context"
	"errors"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// errNotFound is returned by stores for a document that does not exist.
var errNotFound = errors.New("not found")

// errInvalidID is returned for an item id that is not an ObjectId, so the
// API can answer 400 rather than 404.
var errInvalidID = errors.New("invalid item id")

// itemObjectID parses an item id, which is a MongoDB ObjectId in hex in
// every store so ids look the same whichever backend runs.
func itemObjectID(id string) (bson.ObjectID, error) {
	oid, err := bson.ObjectIDFromHex(id)
	if err != nil {
		return bson.ObjectID{}, errInvalidID
	}
	return oid, nil
}

// item is a document of the items collection.
type item struct {
	ID          string
	Name        string
	Description *string
	Metadata    map[string]any
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

// itemUpdate holds the fields a PUT sets; nil fields stay as they are.
type itemUpdate struct {
	Name        *string
	Description *string
	Metadata    map[string]any
}

// itemStore is the items collection. Implementations: mongoStore and
// memoryStore.
type itemStore interface {
	createItem(ctx context.Context, it item) (item, error)
	listItems(ctx context.Context, skip, limit int) ([]item, error)
	getItem(ctx context.Context, id string) (item, error)
	updateItem(ctx context.Context, id string, u itemUpdate, now time.Time) (item, error)
	deleteItem(ctx context.Context, id string) error
	ping(ctx context.Context) error
}

// taskRecord is a finished task as kept in the task_results collection:
// the durable copy of its final status.
type taskRecord struct {
	TaskID      string
	TaskType    string
	Status      string // stateSuccess or stateFailure
	Result      map[string]any
	Error       string
	Attempts    int
	CompletedAt time.Time
	// Args and Priority are what POST /api/tasks/{id}/retry runs again.
	Args     map[string]any
	Priority string
	// Owner identifies the API key that submitted the task ("" without keys).
	Owner   string
	TraceID string
}

func (r taskRecord) status() taskStatus {
	return taskStatus{
		TaskID:    r.TaskID,
		Status:    r.Status,
		TaskType:  r.TaskType,
		Result:    r.Result,
		Error:     r.Error,
		Attempts:  r.Attempts,
		Owner:     r.Owner,
		TraceID:   r.TraceID,
		UpdatedAt: r.CompletedAt,
	}
}

// resultFilter selects finished tasks; empty fields select all.
type resultFilter struct {
	Status string
	Owner  string
}

func (f resultFilter) matches(r taskRecord) bool {
	return (f.Status == "" || r.Status == f.Status) && (f.Owner == "" || r.Owner == f.Owner)
}

// resultStore keeps finished tasks. saveResult is idempotent per task id:
// the first record saved wins and is returned to every later caller, so a
// redelivered task never makes a second document or a different answer.
type resultStore interface {
	saveResult(ctx context.Context, r taskRecord) (taskRecord, error)
	getResult(ctx context.Context, taskID string) (taskRecord, error)
	// listResults pages through finished tasks, newest first.
	listResults(ctx context.Context, f resultFilter, skip, limit int) ([]taskRecord, error)
}

// itemTime truncates t to what MongoDB stores (milliseconds, UTC), so what
// the API returns equals what a later read returns.
func itemTime(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }
