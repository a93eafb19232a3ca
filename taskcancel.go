package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// resultRecorder is what a cancel writes to the result store: the
// REVOKED record, unless the task's own end got there first.
type resultRecorder interface {
	saveResult(ctx context.Context, r taskRecord) (taskRecord, error)
}

// taskCanceller cancels tasks: a queued, scheduled or retrying task ends
// REVOKED at once and never runs; a running one is stopped where it runs
// and ends REVOKED when its handler returns.
type taskCanceller struct {
	reader      taskStatusReader
	revocations revocationStore
	results     resultRecorder
	statuses    statusWriter
	resultTTL   time.Duration
	metrics     *metrics
	log         *slog.Logger
	now         func() time.Time
}

// handleCancelTask is POST /api/tasks/{task_id}/cancel: 200 with the
// task, REVOKED already unless it was running; 409 for a finished task.
func handleCancelTask(c taskCanceller) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		st, err := c.reader.ownStatus(ctx, r.PathValue("task_id"))
		if err != nil {
			return err
		}
		if st.final() {
			return alreadyFinished(st.Status)
		}
		rev := revocation{By: taskOwner(ctx), At: c.now()}
		// The cancel is recorded first, so whatever follows, no worker
		// runs the task from now on.
		if err := c.revocations.revoke(ctx, st.TaskID, rev); err != nil {
			return fmt.Errorf("%w: record the cancel of %s: %w", errStoreUnavailable, st.TaskID, err)
		}
		c.metrics.taskRevoked(st.TaskType)
		addAccessLogTask(ctx, st.TaskID, st.TaskType)
		if st.Status == stateProgress {
			writeJSON(w, http.StatusOK, newTaskJSON(st))
			return nil
		}
		// The first final record wins: the task's own, if a worker ended
		// it meanwhile, or this one.
		saved, err := c.results.saveResult(ctx, revokedRecord(st, rev))
		if err != nil {
			return fmt.Errorf("%w: record %s REVOKED: %w", errStoreUnavailable, st.TaskID, err)
		}
		// The status goes even if the client has gone: the record did.
		putCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), statusOpTimeout)
		defer cancel()
		if err := c.statuses.put(putCtx, saved.status(), c.resultTTL); err != nil {
			c.log.WarnContext(ctx, "status of a cancelled task not stored; its record is", "task_id", st.TaskID, "error", err)
		}
		if saved.Status != stateRevoked {
			return alreadyFinished(saved.Status)
		}
		writeJSON(w, http.StatusOK, newTaskJSON(saved.status()))
		return nil
	}
}

func alreadyFinished(state string) error {
	return &apiError{status: http.StatusConflict, code: "already_finished",
		message: fmt.Sprintf("the task already ended %s; only an unfinished task can be cancelled", state)}
}

// revokedRecord is the final record of st, cancelled by rev.
func revokedRecord(st taskStatus, rev revocation) taskRecord {
	rec := taskRecord{TaskID: st.TaskID, TaskType: st.TaskType, Status: stateRevoked, Attempts: st.Attempts, CompletedAt: rev.At,
		Priority: st.Priority, Owner: st.Owner, TraceID: st.TraceID, ScheduledFor: st.ScheduledFor, StartedAt: st.StartedAt, Revoked: &rev,
		CallbackURL: st.CallbackURL, ConcurrencyKey: st.ConcurrencyKey, WorkflowID: st.WorkflowID}
	if st.CreatedAt != nil {
		rec.CreatedAt = *st.CreatedAt
	}
	_ = json.Unmarshal(st.Args, &rec.Args) // the submit checked them: they are an object
	return rec
}
