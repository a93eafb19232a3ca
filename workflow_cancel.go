package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
)

// workflowStepNotAlone refuses to run a step of a workflow again as a
// task of its own: it would run without what the step before handed it,
// and its workflow would not follow.
func workflowStepNotAlone(workflowID string) error {
	return &apiError{status: http.StatusConflict, code: "workflow_step",
		message: fmt.Sprintf("this task is a step of workflow %s, and runs only within it: submit the workflow again", workflowID)}
}

// errWorkflowEnded refuses to cancel a workflow whose steps have all
// ended.
var errWorkflowEnded = &apiError{status: 409, code: "already_finished", message: "every step of the workflow has ended; only an unfinished workflow can be cancelled"}

// cancel cancels workflow w for rev: a step not started yet ends REVOKED
// at once and never starts; one queued or running is cancelled as POST
// /api/tasks/{id}/cancel cancels a task.
func (e *workflowEngine) cancel(ctx context.Context, w workflow, rev revocation) (workflow, error) {
	ended, err := e.store.ended(ctx, w.ID)
	if err != nil {
		return workflow{}, fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
	if len(ended) == len(w.Steps) {
		return workflow{}, errWorkflowEnded
	}
	if w, err = e.store.cancelWorkflow(ctx, w.ID, rev); err != nil {
		return workflow{}, fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
	var open []int
	for i := range w.Steps {
		if ended[i] == "" {
			open = append(open, i)
		}
	}
	// A cancel that failed half-way is finished by the next one: the
	// claims it made are found again.
	fresh, held, err := e.store.claimSteps(ctx, w.ID, open, workflowCancelClaim)
	if err != nil {
		return workflow{}, fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
	mine := slices.Sorted(slices.Values(append(fresh, held...)))
	var errs []error
	for _, s := range open {
		if _, ok := slices.BinarySearch(mine, s); ok {
			errs = append(errs, e.skipStep(ctx, w, s, "cancelled with its workflow", &rev))
		} else {
			errs = append(errs, e.cancelStarted(ctx, w, s, rev))
		}
	}
	if err := errors.Join(append(errs, e.endIfComplete(ctx, w, workflowCancelClaim, nil))...); err != nil {
		return workflow{}, fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
	return w, nil
}

// workflowCancelClaim is the holder of the steps a cancel claimed.
const workflowCancelClaim = "cancel"

// cancelStarted cancels a step already started: the cancel is recorded
// first, so no worker runs it from then on; one waiting in the queue
// ends REVOKED at once, one running when its worker stops it.
func (e *workflowEngine) cancelStarted(ctx context.Context, w workflow, step int, rev revocation) error {
	s := w.Steps[step]
	if err := e.revocations.revoke(ctx, s.TaskID, rev); err != nil {
		return fmt.Errorf("record the cancel of %s: %w", s.TaskID, err)
	}
	st, err := e.statuses.get(ctx, s.TaskID)
	if err != nil || st.final() || st.Status == stateProgress {
		return nil // its worker ends it
	}
	rec := revokedRecord(st, rev)
	rec.Error = "cancelled with its workflow"
	saved, err := e.results.saveResult(ctx, rec)
	if err != nil {
		return fmt.Errorf("record %s REVOKED: %w", s.TaskID, err)
	}
	if err := e.statuses.put(ctx, saved.status(), e.resultTTL); err != nil {
		e.log.Warn("status of a cancelled step not stored; its record is", "task_id", s.TaskID, "error", err)
	}
	// Its message, when a worker takes it, records the same end; this one
	// does not wait for that (or for a message a dead claimer never sent).
	return e.store.recordEnd(ctx, w.ID, step, saved.Status)
}
