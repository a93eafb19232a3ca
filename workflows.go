package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
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

// workflowParser reads a workflow request, each of its tasks checked as
// POST /api/tasks checks one.
type workflowParser struct {
	specs taskSpecs
	steps []workflowStep
}

// parseWorkflow reads the body of POST /api/workflows: a chain or a
// group (with or without a then step) at the top, with an optional
// callback_url.
func (c taskSpecs) parseWorkflow(body json.RawMessage) (w workflow, err error) {
	p := &workflowParser{specs: c}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return workflow{}, invalidField("body", "must be a JSON object: a chain {\"chain\": [...]} or a group {\"group\": [...]}")
	}
	if raw, ok := top["callback_url"]; ok {
		if err := json.Unmarshal(raw, &w.CallbackURL); err != nil {
			return workflow{}, invalidField("callback_url", "must be a string")
		}
		if err := c.webhooks.checkCallbackURL(w.CallbackURL, "callback_url"); err != nil {
			return workflow{}, err
		}
		delete(top, "callback_url")
	}
	if _, ok := top["chain"]; !ok {
		if _, ok := top["group"]; !ok {
			return workflow{}, invalidField("body", "a workflow is a chain {\"chain\": [...]} or a group {\"group\": [...], \"then\": {...}}")
		}
	}
	if w.Root, err = p.node(top, "", 1); err != nil {
		return workflow{}, err
	}
	w.Steps = p.steps
	return w, nil
}

// node reads one node whose fields are fields; path is where it sits
// ("" at the top, "chain[2]." below).
func (p *workflowParser) node(fields map[string]json.RawMessage, path string, depth int) (*workflowNode, error) {
	if depth > maxWorkflowDepth {
		return nil, invalidField(strings.TrimSuffix(path, "."), "nests deeper than %d levels", maxWorkflowDepth)
	}
	_, isChain := fields["chain"]
	_, isGroup := fields["group"]
	_, isTask := fields["type"]
	kinds := 0
	for _, is := range []bool{isChain, isGroup, isTask} {
		if is {
			kinds++
		}
	}
	where := strings.TrimSuffix(path, ".")
	if where == "" {
		where = "body"
	}
	switch {
	case kinds == 0:
		return nil, invalidField(where, "a step is a task {\"type\", \"args\"}, a chain {\"chain\": [...]} or a group {\"group\": [...]}")
	case kinds > 1:
		return nil, invalidField(where, "a step is one of a task (type), a chain or a group, not several")
	case isTask:
		return p.task(fields, path)
	}
	allowed := map[string]bool{"chain": true}
	if isGroup {
		allowed = map[string]bool{"group": true, "then": true, "then_on_failure": true}
	}
	for name := range fields {
		if !allowed[name] {
			return nil, invalidField(path+name, "is not a field of a %s", map[bool]string{true: "group", false: "chain"}[isGroup])
		}
	}
	kind := nodeChain
	if isGroup {
		kind = nodeGroup
	}
	var items []json.RawMessage
	if err := json.Unmarshal(fields[kind], &items); err != nil || len(items) == 0 {
		return nil, invalidField(path+kind, "must be a list of at least one step")
	}
	n := &workflowNode{Kind: kind}
	for i, raw := range items {
		child, err := p.child(raw, fmt.Sprintf("%s%s[%d].", path, kind, i), depth)
		if err != nil {
			return nil, err
		}
		n.Children = append(n.Children, child)
	}
	if raw, ok := fields["then"]; ok {
		then, err := p.child(raw, path+"then.", depth)
		if err != nil {
			return nil, err
		}
		n.Then = then
	}
	if raw, ok := fields["then_on_failure"]; ok {
		if err := json.Unmarshal(raw, &n.ThenOnFailure); err != nil {
			return nil, invalidField(path+"then_on_failure", "must be true or false")
		}
		if n.Then == nil {
			return nil, invalidField(path+"then_on_failure", "needs a then step")
		}
	}
	return n, nil
}

func (p *workflowParser) child(raw json.RawMessage, path string, depth int) (*workflowNode, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, invalidField(strings.TrimSuffix(path, "."), "must be an object: a task, a chain or a group")
	}
	return p.node(fields, path, depth+1)
}

// task reads a task step: the generic API's type, args, priority and
// concurrency_key.
func (p *workflowParser) task(fields map[string]json.RawMessage, path string) (*workflowNode, error) {
	for name := range fields {
		switch name {
		case "type", "args", "priority", "concurrency_key":
		default:
			return nil, invalidField(path+name, "is not a field of a workflow's task (type, args, priority, concurrency_key)")
		}
	}
	if len(p.steps) == maxWorkflowSteps {
		return nil, invalidField(strings.TrimSuffix(path, "."), "a workflow holds at most %d tasks", maxWorkflowSteps)
	}
	var req taskRequest
	dec := json.NewDecoder(bytes.NewReader(mustMarshal(fields)))
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return nil, invalidField(strings.TrimSuffix(path, "."), "not a task: %v", err)
	}
	spec, err := p.specs.fromRequest(req, path)
	if err != nil {
		return nil, err
	}
	p.steps = append(p.steps, workflowStep{TaskID: newUUID(), Type: spec.Type, Args: spec.Args, Priority: spec.Priority,
		ConcurrencyKey: spec.ConcurrencyKey, Path: strings.TrimSuffix(path, ".")})
	return &workflowNode{Kind: nodeTask, Step: len(p.steps) - 1}, nil
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only for values that came from JSON
	}
	return b
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
