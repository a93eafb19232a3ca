package main

import (
	"context"
	"encoding/json"
	"time"
)

// taskRecord is a finished task as kept in the task_results collection:
// the durable copy of its final status.
type taskRecord struct {
	TaskID      string
	TaskType    string
	Status      string // stateSuccess, stateFailure or stateRevoked
	Result      map[string]any
	Error       string
	Attempts    int
	CompletedAt time.Time
	// Args and Priority are what the task was submitted with, and what
	// POST /api/tasks/{id}/retry runs again.
	Args     map[string]any
	Priority string
	// Owner identifies the API key that submitted the task ("" without keys).
	Owner          string
	TraceID        string
	CreatedAt      time.Time
	ScheduledFor   *time.Time
	StartedAt      *time.Time
	Revoked        *revocation
	CallbackURL    string
	ConcurrencyKey string
	WorkflowID     string
}

func (r taskRecord) status() taskStatus {
	st := taskStatus{
		TaskID:         r.TaskID,
		Status:         r.Status,
		TaskType:       r.TaskType,
		Result:         r.Result,
		Error:          r.Error,
		Attempts:       r.Attempts,
		Owner:          r.Owner,
		TraceID:        r.TraceID,
		UpdatedAt:      r.CompletedAt,
		Priority:       r.Priority,
		ScheduledFor:   r.ScheduledFor,
		StartedAt:      r.StartedAt,
		Revoked:        r.Revoked,
		CallbackURL:    r.CallbackURL,
		ConcurrencyKey: r.ConcurrencyKey,
		WorkflowID:     r.WorkflowID,
	}
	if r.Args != nil {
		st.Args, _ = json.Marshal(r.Args) // it decoded from JSON, so it encodes
	}
	if !r.CreatedAt.IsZero() {
		created := r.CreatedAt
		st.CreatedAt = &created
	}
	return st
}

// resultStore keeps finished tasks. saveResult is idempotent per task id:
// the first record saved wins and is returned to every later caller, so a
// redelivered task never makes a second document or a different answer.
type resultStore interface {
	saveResult(ctx context.Context, r taskRecord) (taskRecord, error)
	getResult(ctx context.Context, taskID string) (taskRecord, error)
	finishedLister
}
