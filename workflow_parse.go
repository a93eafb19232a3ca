package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

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
	if w.Root, err = p.node(top, body, "", 1); err != nil {
		return workflow{}, err
	}
	w.Steps = p.steps
	return w, nil
}

// node reads one node, raw, whose fields are fields; path is where it
// sits ("" at the top, "chain[2]." below).
func (p *workflowParser) node(fields map[string]json.RawMessage, raw json.RawMessage, path string, depth int) (*workflowNode, error) {
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
		return p.task(fields, raw, path)
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
	return p.node(fields, raw, path, depth+1)
}

// task reads a task step, raw: the generic API's type, args, priority and
// concurrency_key.
func (p *workflowParser) task(fields map[string]json.RawMessage, raw json.RawMessage, path string) (*workflowNode, error) {
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
	dec := json.NewDecoder(bytes.NewReader(raw))
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
