package main

import (
	"encoding/json"
	"fmt"
	"time"
)

// A workflow is tasks that depend on each other, as Celery's canvas
// builds them: a chain runs its steps one after another, each getting
// the result of the one before; a group runs its members at once; a
// group with a "then" step (a chord) runs that step once every member
// has ended. Steps nest. Every task of a workflow gets its id when the
// workflow is submitted, so its whole shape can be shown from the start.

// Kinds of workflow nodes.
const (
	nodeTask  = "task"
	nodeChain = "chain"
	nodeGroup = "group"
)

// Bounds of one workflow: its tasks are validated, stored in one
// document and shown in one answer.
const (
	maxWorkflowSteps = 1000
	maxWorkflowDepth = 16
)

// workflowNode is one node of a workflow's tree.
type workflowNode struct {
	Kind string
	// Step is a task's index in the workflow's steps.
	Step int
	// Children are a chain's steps or a group's members, in order.
	Children []*workflowNode
	// Then is a group's callback, nil for none; ThenOnFailure runs it
	// even when a member failed.
	Then          *workflowNode
	ThenOnFailure bool
}

// workflowStep is one task of a workflow.
type workflowStep struct {
	TaskID         string
	Type           string
	Args           json.RawMessage
	Priority       string
	ConcurrencyKey string
	// Path names the step in the request, as errors and answers do:
	// "chain[1].group[0]".
	Path string
}

// workflow is a submitted workflow as its store keeps it.
type workflow struct {
	ID        string
	Owner     string
	CreatedAt time.Time
	Root      *workflowNode
	Steps     []workflowStep
	// Cancelled says who cancelled the workflow, and when; nil if no one
	// did.
	Cancelled *revocation
	// CallbackURL is where the workflow's final state is POSTed; "" for
	// none.
	CallbackURL string
}

// nodeOutcome is where a node stands, as far as what follows it cares.
type nodeOutcome int

const (
	undecided nodeOutcome = iota
	succeeded
	failed
)

// outcome is n's outcome given the final states of the steps that have
// ended (by step index). A chain fails as soon as one of its steps has;
// a group waits for every member; a group's then step decides it.
func (w *workflow) outcome(n *workflowNode, ended map[int]string) nodeOutcome {
	switch n.Kind {
	case nodeTask:
		switch ended[n.Step] {
		case "":
			return undecided
		case stateSuccess:
			return succeeded
		default:
			return failed
		}
	case nodeChain:
		for _, c := range n.Children {
			if o := w.outcome(c, ended); o != succeeded {
				return o
			}
		}
		return succeeded
	}
	members := w.membersOutcome(n, ended)
	switch {
	case n.Then == nil || members == undecided:
		return members
	case members == failed && !n.ThenOnFailure:
		return failed
	}
	return w.outcome(n.Then, ended)
}

// membersOutcome is the outcome of a group's members, its then step
// aside: undecided until every member has ended, then failed if any did.
func (w *workflow) membersOutcome(n *workflowNode, ended map[int]string) nodeOutcome {
	out := succeeded
	for _, c := range n.Children {
		switch w.outcome(c, ended) {
		case undecided:
			return undecided
		case failed:
			out = failed
		}
	}
	return out
}

// stepStart is a step due to start, with the node whose result it gets
// (nil for none).
type stepStart struct {
	step  int
	input *workflowNode
}

// workflowPlan is what is due now that some steps have ended: steps to
// start, and steps that will never run, each with the reason.
type workflowPlan struct {
	start []stepStart
	skip  map[int]string
}

// gate is whether a node may run: not yet, now, or never.
type gate int

const (
	gateWait gate = iota
	gateGo
	gateNever
)

// plan is what the ended steps make due. It depends on nothing else, so
// every worker that looks reaches the same plan; the store's claims let
// one of them carry out each step of it.
func (w *workflow) plan(ended map[int]string) workflowPlan {
	p := workflowPlan{skip: map[int]string{}}
	w.walk(w.Root, gateGo, nil, "", ended, &p)
	return p
}

func (w *workflow) walk(n *workflowNode, g gate, input *workflowNode, why string, ended map[int]string, p *workflowPlan) {
	switch n.Kind {
	case nodeTask:
		if ended[n.Step] != "" {
			return
		}
		switch g {
		case gateGo:
			p.start = append(p.start, stepStart{step: n.Step, input: input})
		case gateNever:
			p.skip[n.Step] = why
		}
	case nodeChain:
		for i, c := range n.Children {
			w.walk(c, g, input, why, ended, p)
			input = n.Children[i]
			if g != gateGo {
				continue
			}
			switch w.outcome(c, ended) {
			case undecided:
				g = gateWait
			case failed:
				g, why = gateNever, w.failureReason(c, ended)
			}
		}
	case nodeGroup:
		for _, c := range n.Children {
			w.walk(c, g, input, why, ended, p)
		}
		if n.Then == nil {
			return
		}
		if g == gateGo {
			switch w.membersOutcome(n, ended) {
			case undecided:
				g = gateWait
			case failed:
				if !n.ThenOnFailure {
					g, why = gateNever, w.failureReason(&workflowNode{Kind: nodeGroup, Children: n.Children}, ended)
				}
			}
		}
		w.walk(n.Then, g, &workflowNode{Kind: nodeGroup, Children: n.Children}, why, ended, p)
	}
}

// failureReason says why the steps after n will not run: the first step
// of n that did not succeed.
func (w *workflow) failureReason(n *workflowNode, ended map[int]string) string {
	for _, i := range w.stepsOf(n) {
		if s := ended[i]; s != "" && s != stateSuccess {
			return fmt.Sprintf("not run: step %s ended %s", w.Steps[i].Path, s)
		}
	}
	return "not run: an earlier step failed"
}

// stepsOf lists the steps of n, in order.
func (w *workflow) stepsOf(n *workflowNode) []int {
	if n.Kind == nodeTask {
		return []int{n.Step}
	}
	var out []int
	for _, c := range n.Children {
		out = append(out, w.stepsOf(c)...)
	}
	if n.Then != nil {
		out = append(out, w.stepsOf(n.Then)...)
	}
	return out
}

// state is the workflow's own status given its steps' states (by step
// index): PENDING until a step has started, PROGRESS until every step
// has ended, then SUCCESS if the workflow's outcome is success, REVOKED
// if it was cancelled, FAILURE otherwise.
func (w *workflow) state(states map[int]string) string {
	ended := map[int]string{}
	started := false
	for i, s := range states {
		if stateRank(s) == 2 {
			ended[i] = s
		}
		if stateRank(s) > 0 {
			started = true
		}
	}
	switch {
	case len(ended) == len(w.Steps) && w.outcome(w.Root, ended) == succeeded:
		return stateSuccess
	case len(ended) == len(w.Steps) && w.Cancelled != nil:
		return stateRevoked
	case len(ended) == len(w.Steps):
		return stateFailure
	case started:
		return stateProgress
	}
	return statePending
}
