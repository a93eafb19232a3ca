package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"errand/tasks"
)

// job is one delivered task on its way through the pool: the delivery to
// settle, its decoded message, and the log that names the task.
type job struct {
	d   delivery
	msg taskMessage
	log *slog.Logger
	// started is when its run started, once it has.
	started *time.Time
}

// status is the task's status in state at now, with what its submit
// asked.
func (j job) status(ctx context.Context, state string, now time.Time) taskStatus {
	msg := j.msg
	created := msg.EnqueuedAt
	st := taskStatus{TaskID: msg.ID, Owner: msg.Owner, TraceID: traceID(ctx), Status: state, TaskType: msg.Type, Attempts: msg.Attempt,
		UpdatedAt: now, Args: msg.Args, Priority: msg.Priority, CreatedAt: &created, StartedAt: j.started,
		CallbackURL: msg.CallbackURL, ConcurrencyKey: msg.ConcurrencyKey}
	if msg.Workflow != nil {
		st.WorkflowID = msg.Workflow.ID
	}
	if !msg.ETA.IsZero() {
		eta := msg.ETA
		st.ScheduledFor = &eta
	}
	return st
}

// record is the task's final record in state at now.
func (j job) record(ctx context.Context, state string, now time.Time) taskRecord {
	msg := j.msg
	var args map[string]any
	_ = json.Unmarshal(msg.Args, &args) // best effort: a poison message may have none
	rec := taskRecord{TaskID: msg.ID, Owner: msg.Owner, TraceID: traceID(ctx), TaskType: msg.Type, Status: state,
		Attempts: msg.Attempt + 1, CompletedAt: now, Args: args, Priority: msg.Priority, CreatedAt: msg.EnqueuedAt, StartedAt: j.started,
		CallbackURL: msg.CallbackURL, ConcurrencyKey: msg.ConcurrencyKey}
	if msg.Workflow != nil {
		rec.WorkflowID = msg.Workflow.ID
	}
	if !msg.ETA.IsZero() {
		eta := msg.ETA
		rec.ScheduledFor = &eta
	}
	return rec
}

// taskRun is the outcome of one run of a task's handler.
type taskRun struct {
	result   map[string]any
	err      error
	started  time.Time
	finished time.Time
	// revoked is the cancel that stopped the run, if one did.
	revoked *revocation
}

// maxDeliveries bounds how often one message may come back unsettled
// before errand stops trusting it: a task that kills its worker every time
// would otherwise loop for ever.
const maxDeliveries = 5

// process runs one delivery to a settled end: decode it, skip it if it
// already finished, run it, then record the outcome and settle.
func (p *workerPool) process(ctx context.Context, d delivery) {
	msg, err := decodeTaskMessage(d.body)
	if err != nil {
		p.deadLetterUndecodable(ctx, d, err)
		return
	}
	ctx, j, endSpan := p.startJob(ctx, d, msg)
	defer endSpan()
	if msg.Type == workflowStartType {
		p.startWorkflow(ctx, j)
		return
	}
	if early := msg.due().Sub(p.now()); early > etaTolerance {
		p.waitForETA(ctx, j, early)
		return
	}
	if d.redelivered && p.settleRedelivery(ctx, j) {
		return
	}
	if msg.Workflow != nil && p.skipDuplicateStep(ctx, j) {
		return
	}
	def, ok := p.definition(msg.Type)
	if !ok {
		p.failUnknownType(ctx, j)
		return
	}
	if def.Policy.Rate.Limited() && msg.RateSlot.IsZero() && p.throttle(ctx, j, def.Policy.Rate) {
		return
	}
	if limit := def.Policy.MaxRunningPerKey; limit > 0 && msg.ConcurrencyKey != "" {
		if p.skipReleasedDone(ctx, j) {
			return
		}
		// A task cancelled while it waited for a slot ends now rather than
		// take one, or park again.
		if rev := p.revocation(ctx, j); rev != nil {
			p.finishRevoked(ctx, j, *rev)
			return
		}
		settled, release := p.takeKeySlot(ctx, j, limit)
		if settled {
			return
		}
		defer release()
	}
	// The run is registered before the check for a cancel, so a cancel
	// that comes between the two still stops it (see stopRevoked).
	runCtx, stopRun := context.WithCancelCause(ctx)
	defer stopRun(nil)
	defer p.running.add(msg.ID, stopRun)()
	if rev := p.revocation(ctx, j); rev != nil {
		p.finishRevoked(ctx, j, *rev)
		return
	}
	run, err := p.execute(ctx, runCtx, j, def)
	if err != nil {
		j.log.Warn("task aborted by shutdown; requeueing", "error", err)
		p.settle(j, settleRequeue)
		return
	}
	j.started = &run.started
	// The run's time goes on the line that ends the task (task finished,
	// or the retry's): one line fewer per task, which shows at thousands
	// of tasks a second.
	j.log = j.log.With("run_ms", run.finished.Sub(run.started).Milliseconds())
	switch {
	case run.revoked != nil:
		p.finishRevoked(ctx, j, *run.revoked)
	case run.err == nil:
		p.metrics.taskSucceeded(msg.Type)
		rec := j.record(ctx, stateSuccess, run.finished)
		rec.Result = run.result
		p.finish(ctx, j, rec, "")
	case tasks.Retryable(run.err) && msg.Attempt < def.Policy.MaxRetries:
		p.retryLater(ctx, j, def.Policy, run.err)
	default:
		p.metrics.taskFailed(msg.Type, "failed")
		reason := run.err.Error()
		if msg.Attempt > 0 {
			reason = fmt.Sprintf("failed after %d attempts: %s", msg.Attempt+1, reason)
		}
		p.fail(ctx, j, reason)
	}
}

// deadLetterUndecodable moves a message that is not a task to the
// dead-letter queue.
func (p *workerPool) deadLetterUndecodable(ctx context.Context, d delivery, err error) {
	p.log.Error("dead-lettering undecodable message", "error", err, "body_bytes", len(d.body))
	p.metrics.untypedDeadLetter("undecodable")
	p.deadLetter(ctx, job{d: d, log: p.log}, "undecodable message: "+err.Error())
}

// startJob continues the trace the API started (the consumer span's
// parent is the submit's producer span) and makes the task's log.
func (p *workerPool) startJob(ctx context.Context, d delivery, msg taskMessage) (context.Context, job, func()) {
	carrier := propagation.MapCarrier(msg.Trace)
	if d.headers["traceparent"] != "" {
		carrier = propagation.MapCarrier(d.headers)
	}
	ctx, span := p.tracing.tracer.Start(p.tracing.propagator.Extract(ctx, carrier), "process "+msg.Type,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "rabbitmq"), attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.message.id", msg.ID), attribute.Int("errand.attempt", msg.Attempt+1)))
	log := p.log.With("task_id", msg.ID, "task_type", msg.Type)
	if sc := span.SpanContext(); sc.IsValid() {
		log = log.With("trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
	}
	return ctx, job{d: d, msg: msg, log: log}, func() { span.End() }
}

// etaTolerance is how early a scheduled task may start. Delay queues round
// a wait up, so a task comes early only from a coarse delay queue (see
// delayLevel), or when this host's clock is behind the submitter's.
const etaTolerance = 50 * time.Millisecond

// waitForETA sends a task that came before its time back to wait for the
// rest, and acks this delivery.
func (p *workerPool) waitForETA(ctx context.Context, j job, wait time.Duration) {
	j.log.Debug("task came before its time; waiting for the rest", "wait", wait.String())
	p.putOff(ctx, j, j.msg, wait)
}

// putOff sends msg (the delivery's task, maybe changed) to wait on the
// delay queues for wait, holding no worker, and acks the delivery; if the
// broker does not take it, the delivery goes back to the queue instead.
func (p *workerPool) putOff(ctx context.Context, j job, msg taskMessage, wait time.Duration) {
	if err := p.queue.publishDelayed(ctx, msg, wait); err != nil {
		j.log.Warn("could not put the task off; requeueing it", "wait", wait.String(), "error", err)
		p.settle(j, settleRequeue)
		return
	}
	p.settle(j, settleAck)
}

// settleRedelivery handles a message that came back unsettled, and
// reports whether it settled it. A redelivered task may have finished
// before its ack was lost; its stored result is then the answer and it
// must not run again. Otherwise the redelivery is counted: RabbitMQ's
// classic queues do not count them, so errand republishes the message
// with its count raised and acks the old copy; past maxDeliveries the
// task fails and is dead-lettered.
func (p *workerPool) settleRedelivery(ctx context.Context, j job) bool {
	if rec, err := p.results.getResult(ctx, j.msg.ID); err == nil {
		j.log.Info("redelivered task already finished; acking")
		p.putStatus(ctx, j, rec.status(), p.resultTTL)
		if err := p.queueWebhook(ctx, j, rec); err != nil {
			j.log.Warn("webhook not queued; requeueing the finished task", "error", err)
			p.settle(j, settleRequeue)
			return true
		}
		if err := p.workflowStepEnded(ctx, j, rec); err != nil {
			p.settle(j, settleRequeue)
			return true
		}
		if rec.Status == stateFailure && j.msg.Type != webhookTaskType {
			// Its worker may have stopped before the dead letter was
			// written: a second copy is better than none.
			p.deadLetter(ctx, j, rec.Error)
			return true
		}
		p.settle(j, settleAck)
		return true
	}
	msg := j.msg
	msg.Deliveries++
	if msg.Deliveries >= maxDeliveries {
		j.log.Error("task keeps coming back unfinished; dead-lettering", "deliveries", msg.Deliveries)
		if _, ok := p.definition(msg.Type); ok {
			p.metrics.taskFailed(msg.Type, "delivery_limit")
		}
		p.fail(ctx, j, fmt.Sprintf("delivered %d times without finishing (did its worker crash?)", msg.Deliveries))
		return true
	}
	if err := p.queue.publish(ctx, msg); err != nil {
		// Running it now is better than losing the count for good.
		j.log.Warn("could not republish a redelivered task with its delivery count; running it", "error", err)
		return false
	}
	p.settle(j, settleAck)
	return true
}

// failUnknownType fails a task of a type no one registered.
func (p *workerPool) failUnknownType(ctx context.Context, j job) {
	j.log.Error("unknown task type; dead-lettering")
	// The type is the client's text, so the metric names no type: an
	// attacker must not be able to mint label values.
	p.metrics.untypedDeadLetter("unknown_task_type")
	p.fail(ctx, j, fmt.Sprintf("unknown task type %q", j.msg.Type))
}

// revocation is the task's cancel, if it was cancelled before it ran. A
// store that cannot say is no reason to hold the task back: it runs.
func (p *workerPool) revocation(ctx context.Context, j job) *revocation {
	rev, err := p.revocations.revoked(ctx, j.msg.ID)
	if err != nil {
		j.log.Warn("could not learn whether the task was cancelled; running it", "error", err)
		return nil
	}
	return rev
}

// finishRevoked ends a cancelled task REVOKED, with who cancelled it and
// when, and acks it.
func (p *workerPool) finishRevoked(ctx context.Context, j job, rev revocation) {
	rec := j.record(ctx, stateRevoked, p.now())
	rec.Revoked = &rev
	p.finish(ctx, j, rec, "")
}

// execute runs the task's handler under its policy and runCtx (which a
// cancel of the task ends), its progress written to the status store as
// it goes. The error is not the task's: it is
// shutdown's, which cut the run short, and the task goes back to the
// queue.
func (p *workerPool) execute(ctx, runCtx context.Context, j job, def tasks.Definition) (taskRun, error) {
	msg := j.msg
	run := taskRun{started: p.now()}
	j.started = &run.started
	queueWait := run.started.Sub(msg.EnqueuedAt)
	j.log.Info("task started", "queue_wait_ms", queueWait.Milliseconds(), "attempt", msg.Attempt+1, "redelivered", j.d.redelivered)
	defer p.metrics.taskStarted(ctx, msg.Type, queueWait)()
	progress := newProgressWriter(time.Now(), progressInterval, func(pr tasks.Progress) {
		st := j.status(ctx, stateProgress, p.now())
		st.Progress = &pr
		p.putStatus(ctx, j, st, 0)
	})
	// PROGRESS "Started" goes through the throttle too: a run that ends
	// within progressInterval goes from PENDING straight to its end, one
	// status write fewer; a longer one shows PROGRESS after the interval.
	progress.report(ctx, tasks.Progress{Status: "Started"})
	spanCtx, span := p.tracing.tracer.Start(runCtx, "run "+msg.Type)
	value, err := runTask(spanCtx, j.log, def, msg, progress.report)
	// No progress may be written once the run is over: the final status
	// (or the retry's) comes next and must be the last word.
	progress.stop()
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	if err != nil && ctx.Err() != nil {
		return taskRun{}, err
	}
	var revoked *revokedError
	if err != nil && errors.As(context.Cause(runCtx), &revoked) {
		run.revoked = &revoked.rev
	}
	if err == nil {
		run.result, err = resultObject(value)
	}
	run.err = err
	run.finished = p.now()
	p.metrics.taskRan(ctx, msg.Type, run.finished.Sub(run.started))
	return run, nil
}

// retryLater schedules the next attempt of a failed run on a delay queue
// and acks this one: the wait holds no worker slot.
func (p *workerPool) retryLater(ctx context.Context, j job, policy tasks.Policy, runErr error) {
	delay := policy.Backoff(j.msg.Attempt+1, p.jitter())
	next := j.msg
	next.Attempt++
	next.LastError = runErr.Error()
	next.Deliveries = 0
	// The next attempt is a start like any: it reserves a slot of its own.
	next.RateSlot = time.Time{}
	retryAt := p.now().Add(delay)
	if err := p.queue.publishDelayed(ctx, next, delay); err != nil {
		j.log.Error("could not schedule a retry; requeueing the run", "error", err)
		p.settle(j, settleRequeue)
		return
	}
	p.metrics.taskRetried(next.Type)
	j.log.Warn("task failed; retry scheduled", "attempt", next.Attempt, "max_retries", policy.MaxRetries,
		"retry_in", delay.String(), "error", runErr.Error())
	st := j.status(ctx, stateRetry, p.now())
	st.Error, st.Attempts, st.RetryAt = runErr.Error(), next.Attempt, &retryAt
	p.putStatus(ctx, j, st, 0)
	p.settle(j, settleAck)
}
