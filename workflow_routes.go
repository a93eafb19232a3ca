package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"errand/tasks"
)

// workflowRoutes serve /api/workflows.
type workflowRoutes struct {
	engine    *workflowEngine
	specs     taskSpecs
	submitter taskSubmitter
	maxBody   int64
	now       func() time.Time
}

// workflowJSON is a workflow as its routes show it.
type workflowJSON struct {
	WorkflowID string `json:"workflow_id"`
	// Status is PENDING until a step starts, PROGRESS until every step has
	// ended, then SUCCESS, FAILURE or (cancelled) REVOKED.
	Status     string      `json:"status"`
	CreatedAt  time.Time   `json:"created_at"`
	StartedAt  *time.Time  `json:"started_at,omitempty"`
	FinishedAt *time.Time  `json:"finished_at,omitempty"`
	Cancelled  *revocation `json:"cancelled,omitempty"`
	// CallbackURL is where the workflow's final state is POSTed, and
	// Webhook how that delivery went.
	CallbackURL string       `json:"callback_url,omitempty"`
	Webhook     *webhookJSON `json:"webhook,omitempty"`
	// Steps are the workflow's tasks in the order of the request.
	Steps []workflowStepJSON `json:"steps"`
	// Flow is the workflow's shape as submitted, each task replaced by
	// its step's path, task_id and status: {"chain": [...]},
	// {"group": [...], "then": {...}}, {"path", "task_id", "status"}.
	Flow any `json:"flow"`
}

type workflowStepJSON struct {
	// Path names the step as the request placed it: "chain[1].group[0]".
	Path       string          `json:"path"`
	TaskID     string          `json:"task_id"`
	Type       string          `json:"type"`
	Status     string          `json:"status"`
	Progress   *tasks.Progress `json:"progress,omitempty"`
	Result     map[string]any  `json:"result,omitempty"`
	Error      string          `json:"error,omitempty"`
	StartedAt  *time.Time      `json:"started_at,omitempty"`
	FinishedAt *time.Time      `json:"finished_at,omitempty"`
}

// workflowAccepted is the answer to a submit.
type workflowAccepted struct {
	WorkflowID string             `json:"workflow_id"`
	Status     string             `json:"status"`
	Steps      []workflowStepJSON `json:"steps"`
	Message    string             `json:"message"`
}

// workflowRequestDoc stands for the body of POST /api/workflows in the
// OpenAPI document (see workflowRequestSchema).
type workflowRequestDoc struct{}

// handleSubmitWorkflow is POST /api/workflows: a chain or a group, every
// task of it validated, accepted once the broker has confirmed its start.
func (wr workflowRoutes) handleSubmitWorkflow() handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		var body json.RawMessage
		if err := decodeJSON(w, r, wr.maxBody, &body); err != nil {
			return err
		}
		wf, err := wr.specs.parseWorkflow(body)
		if err != nil {
			return err
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(append([]byte("workflow\x00"), body...))
		claim, err := wr.submitter.claimKey(ctx, taskOwner(ctx), key, hex.EncodeToString(sum[:16]))
		if err != nil {
			return err
		}
		if claim.replay {
			wf, err := wr.own(ctx, claim.taskID)
			if err != nil {
				return err
			}
			w.Header().Set("Idempotent-Replayed", "true")
			return wr.writeAccepted(w, wf, "Workflow already submitted with this Idempotency-Key.")
		}
		wf.ID, wf.Owner, wf.CreatedAt = claim.taskID, taskOwner(ctx), wr.now().UTC().Truncate(time.Millisecond)
		wf, err = wr.engine.submit(ctx, wf)
		wr.submitter.settleKey(ctx, claim, err)
		if err != nil {
			return err
		}
		addAccessLogAttrs(ctx, slog.String("workflow_id", wf.ID), slog.Int("workflow_steps", len(wf.Steps)))
		return wr.writeAccepted(w, wf, "Workflow submitted. Use /api/workflows/{workflow_id} to follow it.")
	}
}

func (wr workflowRoutes) writeAccepted(w http.ResponseWriter, wf workflow, message string) error {
	out := workflowAccepted{WorkflowID: wf.ID, Status: statePending, Message: message}
	for _, s := range wf.Steps {
		out.Steps = append(out.Steps, workflowStepJSON{Path: s.Path, TaskID: s.TaskID, Type: s.Type, Status: statePending})
	}
	w.Header().Set("Location", "/api/workflows/"+wf.ID)
	writeJSON(w, http.StatusAccepted, out)
	return nil
}

// own is the workflow id of the request's API key; another key's
// workflow, as far as this client knows, does not exist.
func (wr workflowRoutes) own(ctx context.Context, id string) (workflow, error) {
	if !taskIDPattern.MatchString(id) {
		return workflow{}, badRequest("invalid_id", "invalid workflow id")
	}
	wf, err := wr.engine.store.getWorkflow(ctx, id)
	if errors.Is(err, errNotFound) || (err == nil && wf.Owner != taskOwner(ctx)) {
		return workflow{}, &apiError{status: http.StatusNotFound, code: "not_found", message: "no such workflow"}
	}
	if err != nil {
		return workflow{}, fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
	return wf, nil
}

// handleGetWorkflow is GET /api/workflows/{workflow_id}.
func (wr workflowRoutes) handleGetWorkflow() handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		wf, err := wr.own(r.Context(), r.PathValue("workflow_id"))
		if err != nil {
			return err
		}
		out, err := wr.engine.describe(r.Context(), wf)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// handleCancelWorkflow is POST /api/workflows/{workflow_id}/cancel.
func (wr workflowRoutes) handleCancelWorkflow() handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		wf, err := wr.own(ctx, r.PathValue("workflow_id"))
		if err != nil {
			return err
		}
		if wf, err = wr.engine.cancel(ctx, wf, revocation{By: taskOwner(ctx), At: wr.now()}); err != nil {
			return err
		}
		addAccessLogAttrs(ctx, slog.String("workflow_id", wf.ID))
		out, err := wr.engine.describe(ctx, wf)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}
