package main

import (
	"context"
	"errors"
)

// How a workflow is shown: by its routes, its webhook and the console.

// workflowReaders bounds the step statuses one answer reads at once.
const workflowReaders = 16

// describe is wf with the status of each of its steps.
func (e *workflowEngine) describe(ctx context.Context, wf workflow) (workflowJSON, error) {
	statuses := make([]taskStatus, len(wf.Steps))
	err := forEachLimit(len(wf.Steps), workflowReaders, func(i int) error {
		st, err := e.reader.status(ctx, wf.Steps[i].TaskID)
		if errors.Is(err, errStatusNotFound) || errors.Is(err, errNotFound) {
			// Expired with the results of finished tasks.
			st, err = taskStatus{TaskID: wf.Steps[i].TaskID, Status: statePending}, nil
		}
		statuses[i] = st
		return err
	})
	if err != nil {
		return workflowJSON{}, err
	}
	out := workflowJSON{WorkflowID: wf.ID, CreatedAt: wf.CreatedAt, Cancelled: wf.Cancelled, Steps: make([]workflowStepJSON, len(wf.Steps))}
	states := make(map[int]string, len(wf.Steps))
	for i, s := range wf.Steps {
		st := statuses[i]
		step := workflowStepJSON{Path: s.Path, TaskID: s.TaskID, Type: s.Type, Status: st.Status, Progress: st.Progress, Result: st.Result,
			Error: st.Error, StartedAt: st.StartedAt}
		if st.final() {
			finished := st.UpdatedAt
			step.FinishedAt = &finished
			if out.FinishedAt == nil || finished.After(*out.FinishedAt) {
				out.FinishedAt = &finished
			}
		}
		if st.StartedAt != nil && (out.StartedAt == nil || st.StartedAt.Before(*out.StartedAt)) {
			out.StartedAt = st.StartedAt
		}
		out.Steps[i] = step
		states[i] = st.Status
	}
	out.Status = wf.state(states)
	if stateRank(out.Status) < 2 {
		out.FinishedAt = nil
	}
	out.Flow = flowJSON(wf, wf.Root, out.Steps)
	if wf.CallbackURL != "" {
		out.CallbackURL = wf.CallbackURL
		out.Webhook = e.reader.webhookOf(ctx, taskStatus{TaskID: wf.ID, CallbackURL: wf.CallbackURL, Status: out.Status})
	}
	return out, nil
}

// flowJSON is n's part of a workflow's flow.
func flowJSON(wf workflow, n *workflowNode, steps []workflowStepJSON) map[string]any {
	switch n.Kind {
	case nodeTask:
		s := steps[n.Step]
		return map[string]any{"path": s.Path, "task_id": s.TaskID, "type": s.Type, "status": s.Status}
	}
	children := make([]any, len(n.Children))
	for i, c := range n.Children {
		children[i] = flowJSON(wf, c, steps)
	}
	out := map[string]any{n.Kind: children}
	if n.Then != nil {
		out["then"] = flowJSON(wf, n.Then, steps)
		if n.ThenOnFailure {
			out["then_on_failure"] = true
		}
	}
	return out
}
