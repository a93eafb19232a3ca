package main

import (
	"net/http"
	"net/url"
)

// A workflow's page in the console: its steps drawn as the workflow runs
// them (a chain left to right, a group's members stacked, a then step
// after its group), each with its state and a link to its task.

type workflowView struct {
	Workflow  workflowJSON
	Flow      flowView
	Final     bool
	CanCancel bool
	Done      string
}

// flowView is one node of the drawing.
type flowView struct {
	Kind          string // nodeTask, nodeChain or nodeGroup
	Step          workflowStepJSON
	Children      []flowView
	Then          *flowView
	ThenOnFailure bool
}

// newFlowView rebuilds the tree of a workflow's flow, as the API answers
// it (decoded from JSON), with its steps' details.
func newFlowView(flow any, steps map[string]workflowStepJSON) flowView {
	m, _ := flow.(map[string]any)
	for _, kind := range []string{nodeChain, nodeGroup} {
		items, ok := m[kind].([]any)
		if !ok {
			continue
		}
		v := flowView{Kind: kind}
		for _, item := range items {
			v.Children = append(v.Children, newFlowView(item, steps))
		}
		if then, ok := m["then"]; ok {
			t := newFlowView(then, steps)
			v.Then = &t
			v.ThenOnFailure, _ = m["then_on_failure"].(bool)
		}
		return v
	}
	id, _ := m["task_id"].(string)
	return flowView{Kind: nodeTask, Step: steps[id]}
}

func (c *console) showWorkflow(w http.ResponseWriter, r *http.Request) error {
	var wf workflowJSON
	if _, err := c.api.call(r.Context(), http.MethodGet, "/api/workflows/"+url.PathEscape(r.PathValue("workflow_id")), nil, &wf); err != nil {
		return err
	}
	steps := make(map[string]workflowStepJSON, len(wf.Steps))
	for _, s := range wf.Steps {
		steps[s.TaskID] = s
	}
	p := workflowView{Workflow: wf, Flow: newFlowView(wf.Flow, steps), Final: stateRank(wf.Status) == 2}
	p.CanCancel = !p.Final
	if r.URL.Query().Get("done") == "cancel" {
		p.Done = "Cancelled: steps not started will not run; running ones stop."
	}
	c.render(w, r, http.StatusOK, "workflow", "Workflow "+wf.WorkflowID, p)
	return nil
}

func (c *console) cancelWorkflow(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("workflow_id")
	if _, err := c.api.call(r.Context(), http.MethodPost, "/api/workflows/"+url.PathEscape(id)+"/cancel", nil, nil); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/workflows/"+url.PathEscape(id)+"?done=cancel", http.StatusSeeOther)
	return nil
}
