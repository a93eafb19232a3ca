package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// How a task's delivery ends: its final record stored, then its status,
// then the message acked, dead-lettered or put back.

// fail records a task's FAILURE with reason, then dead-letters its
// message. A webhook that failed is not dead-lettered: its outcome is in
// its task's detail, and there is no task to run again.
func (p *workerPool) fail(ctx context.Context, j job, reason string) {
	rec := j.record(ctx, stateFailure, p.now())
	rec.Error = reason
	deadReason := reason
	if j.msg.Type == webhookTaskType {
		deadReason = ""
	}
	p.finish(ctx, j, rec, deadReason)
}

// finish stores rec durably, then its status, then settles the delivery:
// acked, or, with a deadReason, moved to the dead-letter queue. If the
// result cannot be stored before shutdown, the delivery goes back to the
// queue instead.
func (p *workerPool) finish(ctx context.Context, j job, rec taskRecord, deadReason string) {
	saved, err := p.storeResult(ctx, j, rec)
	if err != nil {
		j.log.Error("result not stored; requeueing task", "error", err)
		p.settle(j, settleRequeue)
		return
	}
	p.putStatus(ctx, j, saved.status(), p.resultTTL)
	j.log.Info("task finished", "status", saved.Status, "attempts", saved.Attempts, "error", saved.Error)
	if err := p.queueWebhook(ctx, j, saved); err != nil {
		// The result is stored: the redelivery finds it and queues the
		// webhook again (settleRedelivery).
		j.log.Warn("webhook not queued; requeueing the finished task", "error", err)
		p.settle(j, settleRequeue)
		return
	}
	if err := p.workflowStepEnded(ctx, j, saved); err != nil {
		p.settle(j, settleRequeue)
		return
	}
	if deadReason == "" {
		p.settle(j, settleAck)
		return
	}
	p.deadLetter(ctx, j, deadReason)
}

// storeResult retries until the result is stored or ctx ends: a result
// store outage delays tasks but loses none.
func (p *workerPool) storeResult(ctx context.Context, j job, rec taskRecord) (taskRecord, error) {
	var saved taskRecord
	err := untilDone(ctx, j, "storing result", func() error {
		var err error
		saved, err = p.results.saveResult(ctx, rec)
		return err
	})
	if err != nil {
		return taskRecord{}, fmt.Errorf("store result of %s: %w", rec.TaskID, err)
	}
	return saved, nil
}

// untilDone calls f until it succeeds or ctx ends, waiting longer after
// each failure, and logs each failure as what failing.
func untilDone(ctx context.Context, j job, what string, f func() error) error {
	backoff := 100 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		j.log.Warn(what+" failed; retrying", "error", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// workflowStepEnded starts what the end of a workflow's step makes due,
// before the step is acked. The error is shutdown's: the step goes back
// to the queue, and its redelivery, finding its result, does it then.
func (p *workerPool) workflowStepEnded(ctx context.Context, j job, rec taskRecord) error {
	if j.msg.Workflow == nil {
		return nil
	}
	err := untilDone(ctx, j, "advancing the workflow", func() error {
		return p.workflows.stepEnded(ctx, j.msg, rec)
	})
	if err != nil {
		j.log.Warn("workflow not advanced; requeueing the step", "workflow_id", j.msg.Workflow.ID, "error", err)
	}
	return err
}

// skipDuplicateStep acks a second copy of a workflow's step (see
// workflowRef.Copy) and reports whether it did; if shutdown comes before
// the store answers, the delivery goes back to the queue.
func (p *workerPool) skipDuplicateStep(ctx context.Context, j job) bool {
	ref := j.msg.Workflow
	var runs bool
	err := untilDone(ctx, j, "claiming the workflow step's run", func() error {
		var err error
		runs, err = p.workflows.claimRun(ctx, *ref)
		return err
	})
	switch {
	case err != nil:
		p.settle(j, settleRequeue)
		return true
	case !runs:
		j.log.Info("another copy of this workflow step runs; dropping this one", "workflow_id", ref.ID)
		p.settle(j, settleAck)
		return true
	}
	return false
}

// startWorkflow starts a submitted workflow's first steps and acks its
// start message; if shutdown comes first, the message goes back.
func (p *workerPool) startWorkflow(ctx context.Context, j job) {
	var args struct {
		WorkflowID string `json:"workflow_id"`
	}
	if err := json.Unmarshal(j.msg.Args, &args); err != nil || args.WorkflowID == "" {
		j.log.Error("workflow start names no workflow; dead-lettering it")
		p.deadLetter(ctx, j, "workflow start names no workflow")
		return
	}
	err := untilDone(ctx, j, "starting the workflow", func() error {
		return p.workflows.advance(ctx, args.WorkflowID, j.msg.ID, nil)
	})
	if err != nil {
		j.log.Warn("workflow not started; requeueing its start", "workflow_id", args.WorkflowID, "error", err)
		p.settle(j, settleRequeue)
		return
	}
	j.log.Info("workflow started", "workflow_id", args.WorkflowID)
	p.settle(j, settleAck)
}

// putStatus writes a task's status; a status that cannot be written is
// logged, and the task goes on (its result store record is the truth).
func (p *workerPool) putStatus(ctx context.Context, j job, st taskStatus, ttl time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, statusOpTimeout)
	defer cancel()
	if err := p.statuses.put(ctx, st, ttl); err != nil {
		j.log.Warn("status not stored", "status", st.Status, "error", err)
	}
}

// deadLetter copies the delivery to the dead-letter queue with its reason
// and acks it; if that copy fails, the broker's own dead-lettering (a
// reject) moves it there without the reason.
func (p *workerPool) deadLetter(ctx context.Context, j job, reason string) {
	if err := p.queue.publishDead(ctx, j.d.body, j.msg.ID, reason); err != nil {
		j.log.Warn("dead letter not published with its reason; rejecting to the broker's dead-letter queue", "error", err)
		p.settle(j, settleDeadLetter)
		return
	}
	p.settle(j, settleAck)
}

// settlement is how a delivery ends.
type settlement int

const (
	settleAck        settlement = iota // done: remove it from the queue
	settleRequeue                      // not done: give it to a worker again
	settleDeadLetter                   // never runnable: move it to the dead-letter queue
)

func (p *workerPool) settle(j job, how settlement) {
	var err error
	if how == settleAck {
		err = j.d.ack()
	} else {
		err = j.d.reject(how == settleRequeue)
	}
	if err != nil {
		// The channel is gone; the broker requeues the message itself.
		j.log.Warn("settling delivery failed; the broker will redeliver it", "error", err)
	}
}
