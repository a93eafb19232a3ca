package main

import (
	"context"
	"time"
)

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
