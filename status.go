package main

import (
	"context"
	"encoding/json"
	"time"

	"errand/tasks"
)

// Task states, named as Celery names them so the guide's clients read them.
const (
	statePending = "PENDING"
	// SCHEDULED is errand's own: a task accepted to run at a later time.
	stateScheduled = "SCHEDULED"
	stateProgress  = "PROGRESS"
	stateRetry     = "RETRY" // failed, waiting for its next attempt
	stateSuccess   = "SUCCESS"
	stateFailure   = "FAILURE"
	// REVOKED is Celery's name for a task cancelled before it finished.
	stateRevoked = "REVOKED"
)

// stateRank orders states so that status never moves backwards: a late
// PROGRESS from a slow or duplicate delivery must not hide a SUCCESS, and
// the API's PENDING must not hide a fast worker's PROGRESS.
func stateRank(state string) int {
	switch state {
	case statePending, stateScheduled:
		return 0
	case stateProgress, stateRetry:
		return 1
	default:
		return 2
	}
}

// taskStatus is a task's state as the status store keeps it: the guide's
// fields (task_id, status, progress, result, error), what the submit asked
// (type, args, priority, when), and errand's own. Every write carries the
// whole of it; the routes show parts (see guideStatusJSON and taskJSON).
type taskStatus struct {
	TaskID   string          `json:"task_id"`
	Status   string          `json:"status"`
	TaskType string          `json:"task_type,omitempty"`
	Progress *tasks.Progress `json:"progress,omitempty"`
	Result   map[string]any  `json:"result,omitempty"`
	Error    string          `json:"error,omitempty"`
	// Attempts is the number of runs so far, shown once a run has failed.
	Attempts int        `json:"attempts,omitempty"`
	RetryAt  *time.Time `json:"retry_at,omitempty"`
	// ScheduledFor is when a SCHEDULED task is due.
	ScheduledFor *time.Time `json:"scheduled_for,omitempty"`
	UpdatedAt    time.Time  `json:"updated_at"`
	// TraceID is the task's trace, from its submit to its result write.
	TraceID string `json:"trace_id,omitempty"`
	// Owner identifies the API key that submitted the task.
	Owner string `json:"owner,omitempty"`

	Args      json.RawMessage `json:"args,omitempty"`
	Priority  string          `json:"priority,omitempty"`
	CreatedAt *time.Time      `json:"created_at,omitempty"`
	// StartedAt is when the last run started.
	StartedAt *time.Time `json:"started_at,omitempty"`
	// Revoked says who cancelled a REVOKED task, and when.
	Revoked *revocation `json:"revoked,omitempty"`
	// CallbackURL is where the task's final status is POSTed.
	CallbackURL string `json:"callback_url,omitempty"`
	// ConcurrencyKey groups tasks that share a limit on how many run at
	// once.
	ConcurrencyKey string `json:"concurrency_key,omitempty"`
	// WorkflowID is the workflow the task is a step of, if any.
	WorkflowID string `json:"workflow_id,omitempty"`
}

// revocation is a cancel: who asked (the API key's owner id, "" without
// keys), and when.
type revocation struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

func (s taskStatus) final() bool { return stateRank(s.Status) == 2 }

// statusStore keeps live task state. Writes never move a task's state
// backwards; see stateRank. Its implementations are redisStatusStore and
// memoryStatusStore.
type statusStore interface {
	// put records s unless the stored state ranks above it. A zero ttl
	// keeps the entry without expiry.
	put(ctx context.Context, s taskStatus, ttl time.Duration) error
	get(ctx context.Context, taskID string) (taskStatus, error)
	// deletePending removes the entry of owner's task only while it is
	// still PENDING or SCHEDULED; it undoes the API's write when a publish
	// fails.
	deletePending(ctx context.Context, taskID, owner string) error
	liveLister
}

// statusOpTimeout bounds each status write and read, so a slow or missing
// Redis delays a submit or a task by at most this much per operation.
const statusOpTimeout = 2 * time.Second

func encodeStatus(s taskStatus) ([]byte, error) { return json.Marshal(s) }

func decodeStatus(b []byte) (taskStatus, error) {
	var s taskStatus
	err := json.Unmarshal(b, &s)
	return s, err
}
