package main

import (
	"context"
	"errors"
	"slices"
	"sync"
)

// workflowStore keeps workflows, who carries out each of their steps, and
// how their steps ended. Its implementations are mongoWorkflows and
// memoryWorkflows.
type workflowStore interface {
	// createWorkflow returns errWorkflowExists when a workflow has w's id.
	createWorkflow(ctx context.Context, w workflow) error
	// getWorkflow returns errNotFound for an id it does not have.
	getWorkflow(ctx context.Context, id string) (workflow, error)
	deleteWorkflow(ctx context.Context, id string) error
	// cancelWorkflow records rev as the workflow's cancel unless it has
	// one already, and returns the workflow.
	cancelWorkflow(ctx context.Context, id string, rev revocation) (workflow, error)
	// claimSteps claims steps of workflow id for by, which is then the
	// only one to start them (or record that they never run). It returns
	// the steps by claimed now (fresh) and those of steps by had claimed
	// before (held: by is a delivery that came back, or a try that failed
	// half-way, finishing what it began).
	claimSteps(ctx context.Context, id string, steps []int, by string) (fresh, held []int, err error)
	// runClaimed reports whether a copy of the step has claimed its run.
	runClaimed(ctx context.Context, id string, step int) (bool, error)
	// claimRun makes copy the message of the step that runs, unless
	// another copy is, and reports whether copy is.
	claimRun(ctx context.Context, id string, step int, copy string) (bool, error)
	// recordEnd records the final state of a step; the first one stands.
	recordEnd(ctx context.Context, id string, step int, state string) error
	// ended returns the final states of the steps that have ended.
	ended(ctx context.Context, id string) (map[int]string, error)
}

var errWorkflowExists = errors.New("workflow exists")

// memoryWorkflows is the embedded default's workflowStore.
type memoryWorkflows struct {
	mu     sync.Mutex
	byID   map[string]workflow
	claims map[workflowStepKey]string // by
	runs   map[workflowStepKey]string // copy
	ends   map[string]map[int]string
}

type workflowStepKey struct {
	id   string
	step int
}

func newMemoryWorkflows() *memoryWorkflows {
	return &memoryWorkflows{byID: map[string]workflow{}, claims: map[workflowStepKey]string{}, runs: map[workflowStepKey]string{}, ends: map[string]map[int]string{}}
}

func (m *memoryWorkflows) createWorkflow(_ context.Context, w workflow) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.byID[w.ID]; ok {
		return errWorkflowExists
	}
	m.byID[w.ID] = w
	return nil
}

func (m *memoryWorkflows) getWorkflow(_ context.Context, id string) (workflow, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.byID[id]
	if !ok {
		return workflow{}, errNotFound
	}
	return w, nil
}

func (m *memoryWorkflows) deleteWorkflow(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.byID, id)
	return nil
}

func (m *memoryWorkflows) cancelWorkflow(_ context.Context, id string, rev revocation) (workflow, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.byID[id]
	if !ok {
		return workflow{}, errNotFound
	}
	if w.Cancelled == nil {
		w.Cancelled = &rev
		m.byID[id] = w
	}
	return w, nil
}

func (m *memoryWorkflows) claimSteps(_ context.Context, id string, steps []int, by string) (fresh, held []int, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range steps {
		k := workflowStepKey{id, s}
		holder, taken := m.claims[k]
		if !taken {
			m.claims[k] = by
			fresh = append(fresh, s)
		} else if holder == by {
			held = append(held, s)
		}
	}
	slices.Sort(fresh)
	slices.Sort(held)
	return fresh, held, nil
}

func (m *memoryWorkflows) runClaimed(_ context.Context, id string, step int) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, ok := m.runs[workflowStepKey{id, step}]
	return ok, nil
}

func (m *memoryWorkflows) claimRun(_ context.Context, id string, step int, copy string) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := workflowStepKey{id, step}
	if holder, ok := m.runs[k]; ok {
		return holder == copy, nil
	}
	m.runs[k] = copy
	return true, nil
}

func (m *memoryWorkflows) recordEnd(_ context.Context, id string, step int, state string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ends[id] == nil {
		m.ends[id] = map[int]string{}
	}
	if m.ends[id][step] == "" {
		m.ends[id][step] = state
	}
	return nil
}

func (m *memoryWorkflows) ended(_ context.Context, id string) (map[int]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[int]string, len(m.ends[id]))
	for s, st := range m.ends[id] {
		out[s] = st
	}
	return out, nil
}
