package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/propagation"
)

// workflowStartType is the internal task that starts a submitted
// workflow. A submit publishes this one message, so the broker's confirm
// of it is the workflow's acceptance: all of it, or nothing.
const workflowStartType = "errand.workflow"

// workflowRef places a task in its workflow.
type workflowRef struct {
	ID   string `json:"id"`
	Step int    `json:"step"`
	// Copy tells apart the messages of one step: a worker that dies
	// after publishing a step but before the broker confirmed it leaves
	// the step to be published again by its redelivery, so two copies may
	// be queued. The first copy a worker takes up runs (see
	// workflowStore.claimRun); any other is dropped.
	Copy string `json:"copy"`
}

// workflowEngine moves workflows along. Every step that ends records its
// state and then asks the engine what is due; the first to claim a due
// step starts it, so a step starts once however many workers see it due
// at the same instant. Each delivery does this before it is acked: a
// worker that dies half-way leaves its message to be redelivered, and
// the redelivery finishes what its claims began.
type workflowEngine struct {
	store       workflowStore
	results     resultSaver
	statuses    statusStore
	revocations revocationStore
	publisher   taskPublisher
	// reader reads the steps' statuses, for answers and webhooks.
	reader    taskStatusReader
	tracing   *tracing
	log       *slog.Logger
	now       func() time.Time
	resultTTL time.Duration
	// shapes keeps the workflows this process has read: what a plan
	// needs of one (its steps and tree) never changes once stored.
	shapes workflowShapes
}

// workflowShapes is a bounded cache of workflows by id.
type workflowShapes struct {
	mu    sync.Mutex
	byID  map[string]workflow
	order []string // ids, oldest first
}

// maxCachedWorkflows bounds the workflows one process keeps in memory.
const maxCachedWorkflows = 1024

func (c *workflowShapes) get(id string) (workflow, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.byID[id]
	return w, ok
}

func (c *workflowShapes) put(w workflow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID == nil {
		c.byID = map[string]workflow{}
	}
	if _, ok := c.byID[w.ID]; ok {
		return
	}
	if len(c.order) == maxCachedWorkflows {
		delete(c.byID, c.order[0])
		c.order = c.order[1:]
	}
	c.byID[w.ID] = w
	c.order = append(c.order, w.ID)
}

// shape is workflow id as far as plans go: from the cache, or the store.
// Its Cancelled may be out of date.
func (e *workflowEngine) shape(ctx context.Context, id string) (workflow, error) {
	if w, ok := e.shapes.get(id); ok {
		return w, nil
	}
	w, err := e.store.getWorkflow(ctx, id)
	if err != nil {
		return workflow{}, err
	}
	e.shapes.put(w)
	return w, nil
}

// workflowPublishers bounds the steps one advance publishes at once: a
// group's members share envelopes and confirms.
const workflowPublishers = 64

// submit stores w, records its steps PENDING and publishes its start,
// and returns the workflow as stored. When the start is not confirmed,
// it undoes the rest. A workflow stored already under w's id (a request
// that took over the Idempotency-Key of one that died) is started as it
// was stored.
func (e *workflowEngine) submit(ctx context.Context, w workflow) (workflow, error) {
	err := e.store.createWorkflow(ctx, w)
	existed := errors.Is(err, errWorkflowExists)
	if existed {
		w, err = e.store.getWorkflow(ctx, w.ID)
	}
	if err != nil {
		return workflow{}, fmt.Errorf("%w: store workflow %s: %v", errStoreUnavailable, w.ID, err)
	}
	// PENDING never overwrites a later state (see stateRank), so a
	// workflow an earlier request started keeps its steps' states.
	trace := traceID(ctx)
	err = forEachLimit(len(w.Steps), workflowPublishers, func(i int) error {
		if err := e.statuses.put(ctx, e.pendingStatus(w, i, trace), 0); err != nil {
			return fmt.Errorf("%w: record step %s PENDING: %w", errStatusUnavailable, w.Steps[i].Path, err)
		}
		return nil
	})
	if err == nil {
		err = e.publishStart(ctx, w)
	}
	if err != nil {
		// A workflow stored by an earlier request may be running: only
		// what this request made is undone.
		if !existed {
			e.undoSubmit(ctx, w)
		}
		if errors.Is(err, errPublishUnconfirmed) {
			// Withdrawn: a start that reaches the queue after all finds no
			// workflow, and starts nothing.
			return workflow{}, fmt.Errorf("%w: the start of workflow %s was not confirmed; the workflow is withdrawn", errBrokerUnavailable, w.ID)
		}
		return workflow{}, err
	}
	return w, nil
}

func (e *workflowEngine) pendingStatus(w workflow, i int, trace string) taskStatus {
	s := w.Steps[i]
	created := w.CreatedAt
	return taskStatus{TaskID: s.TaskID, Status: statePending, TaskType: s.Type, Owner: w.Owner, TraceID: trace, UpdatedAt: w.CreatedAt,
		Args: s.Args, Priority: s.Priority, CreatedAt: &created, ConcurrencyKey: s.ConcurrencyKey, WorkflowID: w.ID}
}

func (e *workflowEngine) publishStart(ctx context.Context, w workflow) error {
	args, err := json.Marshal(map[string]string{"workflow_id": w.ID})
	if err != nil {
		return fmt.Errorf("encode start of workflow %s: %w", w.ID, err)
	}
	msg := taskMessage{ID: w.ID + ".start", Type: workflowStartType, Args: args, Priority: w.Steps[0].Priority, Owner: w.Owner,
		EnqueuedAt: e.now(), Trace: propagation.MapCarrier{}}
	e.tracing.propagator.Inject(ctx, propagation.MapCarrier(msg.Trace))
	if err := e.publisher.publish(ctx, msg); err != nil {
		return fmt.Errorf("queue workflow %s: %w", w.ID, err)
	}
	return nil
}

// undoSubmit removes what a submit that failed wrote, so no status
// claims a task that will never run.
func (e *workflowEngine) undoSubmit(ctx context.Context, w workflow) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*statusOpTimeout)
	defer cancel()
	for _, s := range w.Steps {
		if err := e.statuses.deletePending(ctx, s.TaskID, w.Owner); err != nil {
			e.log.Error("pending status of a step of an unqueued workflow not removed", "task_id", s.TaskID, "workflow_id", w.ID, "error", err)
		}
	}
	if err := e.store.deleteWorkflow(ctx, w.ID); err != nil {
		e.log.Error("unqueued workflow not deleted", "workflow_id", w.ID, "error", err)
	}
}

// claimRun reports whether the copy of a step ref names is the one that
// runs (see workflowRef.Copy).
func (e *workflowEngine) claimRun(ctx context.Context, ref workflowRef) (bool, error) {
	return e.store.claimRun(ctx, ref.ID, ref.Step, ref.Copy)
}

// stepEnded records how the step msg ran ended (rec) and starts what
// that makes due.
func (e *workflowEngine) stepEnded(ctx context.Context, msg taskMessage, rec taskRecord) error {
	if msg.Workflow == nil {
		return nil
	}
	if err := e.store.recordEnd(ctx, msg.Workflow.ID, msg.Workflow.Step, rec.Status); err != nil {
		return err
	}
	return e.advance(ctx, msg.Workflow.ID, msg.ID, &rec)
}

// advance starts the steps of workflow id that are due, and ends REVOKED
// the ones that will never run: those by claims now, and those by
// claimed before but may not have finished (by is the message that
// ended a step, or a workflow's start: a delivery of it that came back,
// or a try that failed half-way, finishes what the earlier one began).
func (e *workflowEngine) advance(ctx context.Context, id, by string, just *taskRecord) error {
	w, err := e.shape(ctx, id)
	if errors.Is(err, errNotFound) {
		e.log.Warn("a step's workflow is gone; nothing follows it", "workflow_id", id, "by", by)
		return nil
	}
	if err != nil {
		return err
	}
	ended, err := e.store.ended(ctx, id)
	if err != nil {
		return err
	}
	plan := w.plan(ended)
	due := make([]int, 0, len(plan.start)+len(plan.skip))
	for _, s := range plan.start {
		due = append(due, s.step)
	}
	for s := range plan.skip {
		due = append(due, s)
	}
	if len(due) == 0 {
		return e.endIfComplete(ctx, w, by, ended)
	}
	fresh, held, err := e.store.claimSteps(ctx, id, due, by)
	if err != nil {
		return err
	}
	mine := slices.Clone(fresh)
	for _, s := range held {
		// A step held from before was published unless its run has been
		// claimed already; publishing it again at worst queues a copy
		// that is dropped.
		if _, skip := plan.skip[s]; !skip {
			if ran, err := e.store.runClaimed(ctx, id, s); err != nil || ran {
				if err != nil {
					return err
				}
				continue
			}
		}
		mine = append(mine, s)
	}
	slices.Sort(mine)
	var errs []error
	skipped := false
	for _, s := range mine {
		if why, ok := plan.skip[s]; ok {
			errs = append(errs, e.skipStep(ctx, w, s, why, nil))
			skipped = true
		}
	}
	starts := slices.DeleteFunc(plan.start, func(s stepStart) bool { _, ok := slices.BinarySearch(mine, s.step); return !ok })
	errs = append(errs, forEachLimit(len(starts), workflowPublishers, func(i int) error { return e.startStep(ctx, w, starts[i], just) }))
	if err := errors.Join(errs...); err != nil || !skipped {
		return err
	}
	// The steps skipped may have been the last to end.
	return e.endIfComplete(ctx, w, by, nil)
}

// workflowEndStep is the pseudo-step whose claim queues a workflow's
// webhook once.
const workflowEndStep = -1

// endIfComplete queues the webhook of w, if it has a callback URL and
// every step has ended (ended, or read again when nil). Of those who see
// it complete, the one that claims its end queues it.
func (e *workflowEngine) endIfComplete(ctx context.Context, w workflow, by string, ended map[int]string) error {
	if w.CallbackURL == "" {
		return nil
	}
	if ended == nil {
		var err error
		if ended, err = e.store.ended(ctx, w.ID); err != nil {
			return err
		}
	}
	if len(ended) < len(w.Steps) {
		return nil
	}
	fresh, held, err := e.store.claimSteps(ctx, w.ID, []int{workflowEndStep}, by)
	if err != nil || len(fresh)+len(held) == 0 {
		return err
	}
	msg, pending, err := newWebhookDelivery(ctx, e.tracing, webhookArgs{URL: w.CallbackURL, WorkflowID: w.ID}, w.ID, e.now())
	if err != nil {
		return err
	}
	putCtx, cancel := context.WithTimeout(ctx, statusOpTimeout)
	defer cancel()
	if err := e.statuses.put(putCtx, pending, 0); err != nil {
		e.log.Warn("status of a workflow's webhook not stored", "workflow_id", w.ID, "error", err)
	}
	if err := e.publisher.publish(ctx, msg); err != nil {
		return fmt.Errorf("queue webhook of workflow %s: %w", w.ID, err)
	}
	return nil
}

// startStep publishes a step, with the result it gets from the step (or
// steps) before it; ended is the record of the step that just ended, if
// one did, which need not be read again.
func (e *workflowEngine) startStep(ctx context.Context, w workflow, st stepStart, ended *taskRecord) error {
	previous, err := e.resultOf(ctx, w, st.input, ended)
	if err != nil {
		return err
	}
	s := w.Steps[st.step]
	msg := taskMessage{ID: s.TaskID, Type: s.Type, Args: s.Args, Priority: s.Priority, Owner: w.Owner, ConcurrencyKey: s.ConcurrencyKey,
		EnqueuedAt: e.now(), Workflow: &workflowRef{ID: w.ID, Step: st.step, Copy: newRandomID(8)}, Previous: previous, Trace: propagation.MapCarrier{}}
	// The step continues the trace of the one that made it due.
	e.tracing.propagator.Inject(ctx, propagation.MapCarrier(msg.Trace))
	if err := e.publisher.publish(ctx, msg); err != nil {
		return fmt.Errorf("queue step %s of workflow %s: %w", s.Path, w.ID, err)
	}
	return nil
}

// resultOf is the result node n hands on: a task's result (null if it
// did not succeed), a chain's last step's, a group's then step's, or,
// for a group without one, its members' results in order.
func (e *workflowEngine) resultOf(ctx context.Context, w workflow, n *workflowNode, ended *taskRecord) (json.RawMessage, error) {
	switch {
	case n == nil:
		return nil, nil
	case n.Kind == nodeTask && ended != nil && ended.TaskID == w.Steps[n.Step].TaskID && ended.Status == stateSuccess:
		return json.Marshal(ended.Result)
	case n.Kind == nodeTask:
		rec, err := e.results.getResult(ctx, w.Steps[n.Step].TaskID)
		if errors.Is(err, errNotFound) || (err == nil && rec.Status != stateSuccess) {
			return json.RawMessage("null"), nil
		}
		if err != nil {
			return nil, fmt.Errorf("result of step %s of workflow %s: %w", w.Steps[n.Step].Path, w.ID, err)
		}
		return json.Marshal(rec.Result)
	case n.Kind == nodeChain:
		return e.resultOf(ctx, w, n.Children[len(n.Children)-1], ended)
	case n.Then != nil:
		return e.resultOf(ctx, w, n.Then, ended)
	}
	out := make([]json.RawMessage, len(n.Children))
	for i, c := range n.Children {
		r, err := e.resultOf(ctx, w, c, ended)
		if err != nil {
			return nil, err
		}
		out[i] = r
	}
	return json.Marshal(out)
}

// skipStep ends a step that will not run REVOKED with why: cancelled by
// rev, or (rev nil) left out because a step before it failed.
func (e *workflowEngine) skipStep(ctx context.Context, w workflow, step int, why string, rev *revocation) error {
	s := w.Steps[step]
	var args map[string]any
	_ = json.Unmarshal(s.Args, &args) // the submit checked them: they are an object
	rec := taskRecord{TaskID: s.TaskID, TaskType: s.Type, Status: stateRevoked, Error: why, CompletedAt: e.now(), Args: args,
		Priority: s.Priority, Owner: w.Owner, CreatedAt: w.CreatedAt, ConcurrencyKey: s.ConcurrencyKey, WorkflowID: w.ID, Revoked: rev}
	saved, err := e.results.saveResult(ctx, rec)
	if err != nil {
		return fmt.Errorf("record step %s of workflow %s REVOKED: %w", s.Path, w.ID, err)
	}
	putCtx, cancel := context.WithTimeout(ctx, statusOpTimeout)
	defer cancel()
	if err := e.statuses.put(putCtx, saved.status(), e.resultTTL); err != nil {
		e.log.Warn("status of a step that will not run not stored; its record is", "task_id", s.TaskID, "error", err)
	}
	return e.store.recordEnd(ctx, w.ID, step, saved.Status)
}
