package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"
)

// liveStatuses is what the status reader needs of the status store: to
// read a task's status and to repair a stale one.
type liveStatuses interface {
	get(ctx context.Context, taskID string) (taskStatus, error)
	put(ctx context.Context, s taskStatus, ttl time.Duration) error
}

// finishedTasks is what the status routes read from the result store.
type finishedTasks interface {
	getResult(ctx context.Context, taskID string) (taskRecord, error)
	listResults(ctx context.Context, f resultFilter, skip, limit int) ([]taskRecord, error)
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

func handleTaskStatus(reader taskStatusReader) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("task_id")
		if !taskIDPattern.MatchString(id) {
			return badRequest("invalid_id", "invalid task id")
		}
		st, err := reader.status(r.Context(), id)
		if err != nil {
			return err
		}
		if st.Owner != taskOwner(r.Context()) {
			// Another key's task: as far as this client knows, it does not exist.
			return errStatusNotFound
		}
		st.Owner = ""
		writeJSON(w, http.StatusOK, st)
		return nil
	}
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

// handleListTasks lists finished tasks from the result store, newest
// first: GET /api/tasks?status=FAILURE shows the dead-lettered ones.
func handleListTasks(reader taskStatusReader) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		status := r.URL.Query().Get("status")
		if status != "" && status != stateSuccess && status != stateFailure {
			return invalidField("status", "must be SUCCESS or FAILURE (running tasks are read one at a time from /api/async/status/{task_id})")
		}
		skip, limit, err := pageQuery(r)
		if err != nil {
			return err
		}
		records, err := reader.results.listResults(r.Context(), resultFilter{Status: status, Owner: taskOwner(r.Context())}, skip, limit)
		if err != nil {
			return fmt.Errorf("%w: list tasks: %w", errStoreUnavailable, err)
		}
		out := make([]taskStatus, len(records))
		for i, rec := range records {
			out[i] = rec.status()
			out[i].Owner = ""
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

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
		if _, ok := priorityLevels[rec.Priority]; !ok {
			rec.Priority = "normal"
		}
		args, err := json.Marshal(rec.Args)
		if err != nil {
			return fmt.Errorf("encode arguments of %s: %w", id, err)
		}
		res, err := sub.submit(r.Context(), taskSpec{Type: rec.TaskType, Args: args, Priority: rec.Priority}, "")
		if err != nil {
			return err
		}
		newID := res.id
		addAccessLogAttrs(r.Context(), "task_id", newID, "task_type", rec.TaskType)
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
