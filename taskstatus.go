package main

import (
	"context"
	"encoding/json"
	"errand/tasks"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"
)

// liveStatuses is what the status routes need of the status store: to
// read a task's status, to repair a stale one, and to list them.
type liveStatuses interface {
	get(ctx context.Context, taskID string) (taskStatus, error)
	put(ctx context.Context, s taskStatus, ttl time.Duration) error
	liveLister
}

// finishedTasks is what the status routes read from the result store.
type finishedTasks interface {
	getResult(ctx context.Context, taskID string) (taskRecord, error)
	finishedLister
}

// taskStatusReader finds a task's status: the live one in the status
// store, else the durable result once the live entry has expired.
type taskStatusReader struct {
	statuses  liveStatuses
	results   finishedTasks
	resultTTL time.Duration
	log       *slog.Logger
	now       func() time.Time
}

// taskIDPattern is what a task id in a path must look like: errand's own
// ids are UUIDs, and a client's Celery-style ids fit too.
var taskIDPattern = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z_.:-]{0,127}$`)

// handleTaskStatus is the guide's GET /api/async/status/{task_id}.
func handleTaskStatus(reader taskStatusReader) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		st, err := reader.ownStatus(r.Context(), r.PathValue("task_id"))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, newGuideStatusJSON(st))
		return nil
	}
}

// handleGetTask is GET /api/tasks/{task_id}: the whole of a task.
func handleGetTask(reader taskStatusReader) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		st, err := reader.ownStatus(r.Context(), r.PathValue("task_id"))
		if err != nil {
			return err
		}
		out := newTaskJSON(st)
		out.Webhook = reader.webhookOf(r.Context(), st)
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// ownStatus is the status of the task id names, if it is a task of the
// request's API key; another key's task, as far as this client knows,
// does not exist.
func (s taskStatusReader) ownStatus(ctx context.Context, id string) (taskStatus, error) {
	if !taskIDPattern.MatchString(id) {
		return taskStatus{}, badRequest("invalid_id", "invalid task id")
	}
	st, err := s.status(ctx, id)
	if err != nil {
		return taskStatus{}, err
	}
	if st.Owner != taskOwner(ctx) {
		return taskStatus{}, errStatusNotFound
	}
	return st, nil
}

// guideStatusJSON is a status as the guide's status route shows it: the
// guide's fields and the few errand added to them.
type guideStatusJSON struct {
	TaskID       string          `json:"task_id"`
	Status       string          `json:"status"`
	TaskType     string          `json:"task_type,omitempty"`
	Progress     *tasks.Progress `json:"progress,omitempty"`
	Result       map[string]any  `json:"result,omitempty"`
	Error        string          `json:"error,omitempty"`
	Attempts     int             `json:"attempts,omitempty"`
	RetryAt      *time.Time      `json:"retry_at,omitempty"`
	ScheduledFor *time.Time      `json:"scheduled_for,omitempty"`
	UpdatedAt    time.Time       `json:"updated_at"`
	TraceID      string          `json:"trace_id,omitempty"`
}

func newGuideStatusJSON(st taskStatus) guideStatusJSON {
	out := guideStatusJSON{TaskID: st.TaskID, Status: st.Status, TaskType: st.TaskType, Progress: st.Progress, Result: st.Result,
		Error: st.Error, Attempts: st.Attempts, RetryAt: st.RetryAt, UpdatedAt: st.UpdatedAt, TraceID: st.TraceID}
	if st.Status == stateScheduled {
		out.ScheduledFor = st.ScheduledFor
	}
	return out
}

// taskJSON is a task as GET /api/tasks/{task_id} and the task listing
// show it: what was asked, where it stands, and when each step happened.
type taskJSON struct {
	TaskID       string          `json:"task_id"`
	Type         string          `json:"type"`
	Status       string          `json:"status"`
	Args         json.RawMessage `json:"args,omitempty"`
	Priority     string          `json:"priority,omitempty"`
	Progress     *tasks.Progress `json:"progress,omitempty"`
	Result       map[string]any  `json:"result,omitempty"`
	Error        string          `json:"error,omitempty"`
	Attempts     int             `json:"attempts"`
	CreatedAt    *time.Time      `json:"created_at,omitempty"`
	ScheduledFor *time.Time      `json:"scheduled_for,omitempty"`
	StartedAt    *time.Time      `json:"started_at,omitempty"`
	FinishedAt   *time.Time      `json:"finished_at,omitempty"`
	RetryAt      *time.Time      `json:"retry_at,omitempty"`
	UpdatedAt    time.Time       `json:"updated_at"`
	Revoked      *revocation     `json:"revoked,omitempty"`
	TraceID      string          `json:"trace_id,omitempty"`
	// Owner is the submitting API key's id (a digest, never the key); empty
	// without API keys.
	Owner       string `json:"owner,omitempty"`
	CallbackURL string `json:"callback_url,omitempty"`
	// ConcurrencyKey groups tasks whose running is limited together.
	ConcurrencyKey string `json:"concurrency_key,omitempty"`
	// WorkflowID is the workflow the task is a step of.
	WorkflowID string `json:"workflow_id,omitempty"`
	// Webhook is the delivery of the task's final status to CallbackURL.
	Webhook *webhookJSON `json:"webhook,omitempty"`
}

func newTaskJSON(st taskStatus) taskJSON {
	out := taskJSON{TaskID: st.TaskID, Type: st.TaskType, Status: st.Status, Args: st.Args, Priority: st.Priority, Progress: st.Progress,
		Result: st.Result, Error: st.Error, Attempts: st.Attempts, CreatedAt: st.CreatedAt, ScheduledFor: st.ScheduledFor,
		StartedAt: st.StartedAt, RetryAt: st.RetryAt, UpdatedAt: st.UpdatedAt, Revoked: st.Revoked, TraceID: st.TraceID, Owner: st.Owner,
		CallbackURL: st.CallbackURL, ConcurrencyKey: st.ConcurrencyKey, WorkflowID: st.WorkflowID}
	if st.final() {
		finished := st.UpdatedAt
		out.FinishedAt = &finished
	}
	return out
}

func (s taskStatusReader) status(ctx context.Context, id string) (taskStatus, error) {
	st, liveErr := s.statuses.get(ctx, id)
	if liveErr == nil {
		if st.final() || s.now().Sub(st.UpdatedAt) < statusStaleAfter {
			return st, nil
		}
		rec, err := s.results.getResult(ctx, id)
		if err != nil {
			return st, nil // still running, or the result store is down: the live status stands
		}
		if err := s.statuses.put(ctx, rec.status(), s.resultTTL); err != nil {
			s.log.WarnContext(ctx, "stale status not repaired", "task_id", id, "error", err)
		}
		return rec.status(), nil
	}
	if !errors.Is(liveErr, errStatusNotFound) {
		s.log.WarnContext(ctx, "status store failed; trying the result store", "task_id", id, "error", liveErr)
	}
	rec, err := s.results.getResult(ctx, id)
	if err == nil {
		return rec.status(), nil
	}
	liveMissing, storedMissing := errors.Is(liveErr, errStatusNotFound), errors.Is(err, errNotFound)
	switch {
	case liveMissing && storedMissing:
		return taskStatus{}, errStatusNotFound
	case liveMissing:
		// Only a store that failed speaks: "not found" from one store
		// while the other is down is no answer.
		return taskStatus{}, fmt.Errorf("%w: read result of %s: %w", errStoreUnavailable, id, err)
	case storedMissing:
		return taskStatus{}, fmt.Errorf("%w: read status of %s: %w", errStoreUnavailable, id, liveErr)
	default:
		return taskStatus{}, fmt.Errorf("%w: read status of %s: %w", errStoreUnavailable, id, errors.Join(liveErr, err))
	}
}

// statusStaleAfter is how long a running task's status may go without an
// update before the reader checks whether the task has in fact finished:
// when the status store was down as a worker wrote the final status, the
// result store has the truth, and the reader repairs the status from it.
const statusStaleAfter = 10 * time.Second

// handleRetryTask runs a failed task again, with its arguments and
// priority, as a new task: the failed one stays on record as it ended.
func handleRetryTask(reader taskStatusReader, sub taskSubmitter) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("task_id")
		if !taskIDPattern.MatchString(id) {
			return badRequest("invalid_id", "invalid task id")
		}
		rec, err := reader.results.getResult(r.Context(), id)
		if err == nil && rec.Owner != taskOwner(r.Context()) {
			err = errNotFound
		}
		if errors.Is(err, errNotFound) {
			return &apiError{status: http.StatusNotFound, code: "not_found", message: "no finished task with this id"}
		}
		if err != nil {
			return fmt.Errorf("%w: read result of %s: %w", errStoreUnavailable, id, err)
		}
		if rec.Status != stateFailure {
			return &apiError{status: http.StatusConflict, code: "not_failed", message: "only a FAILURE can be retried; this task ended " + rec.Status}
		}
		if rec.Args == nil {
			return &apiError{status: http.StatusConflict, code: "not_retryable", message: "this task's arguments were not recorded (an undecodable message)"}
		}
		if rec.WorkflowID != "" {
			return workflowStepNotAlone(rec.WorkflowID)
		}
		if _, ok := priorityLevels[rec.Priority]; !ok {
			rec.Priority = "normal"
		}
		args, err := json.Marshal(rec.Args)
		if err != nil {
			return fmt.Errorf("encode arguments of %s: %w", id, err)
		}
		res, err := sub.submit(r.Context(), taskSpec{Type: rec.TaskType, Args: args, Priority: rec.Priority, CallbackURL: rec.CallbackURL, ConcurrencyKey: rec.ConcurrencyKey}, "")
		if err != nil {
			return err
		}
		newID := res.id
		addAccessLogTask(r.Context(), newID, rec.TaskType)
		w.Header().Set("Location", "/api/async/status/"+newID)
		writeJSON(w, http.StatusAccepted, retryAccepted{
			taskAccepted: taskAccepted{TaskID: newID, Status: statePending,
				Message: fmt.Sprintf("Task %s queued again as %s. Use /api/async/status/%s to check progress.", id, newID, newID)},
			RetryOf: id,
		})
		return nil
	}
}

type retryAccepted struct {
	taskAccepted
	RetryOf string `json:"retry_of"`
}
