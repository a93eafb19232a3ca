package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"errand/tasks"
)

// taskConsumer feeds deliveries to the pool until ctx ends. Once it
// returns no delivery follows, but those handed out stay settleable.
type taskConsumer interface {
	consume(ctx context.Context, prefetch int, out chan<- delivery) error
}

// workQueue is the broker as the worker pool uses it: consuming tasks,
// putting one back (with its delivery count), scheduling a retry, and
// dead-lettering with a reason.
type workQueue interface {
	taskConsumer
	taskPublisher
	publishDelayed(ctx context.Context, m taskMessage, delay time.Duration) error
	publishDead(ctx context.Context, body []byte, taskID, reason string) error
}

// workerPool runs tasks from a taskConsumer on a fixed number of
// goroutines. A delivery is acked only once its result is stored, so a
// crash at any point before that leaves the message with the broker,
// which redelivers it.
type workerPool struct {
	size         int
	queue        workQueue
	registry     *tasks.Registry
	statuses     statusStore
	results      resultStore
	resultTTL    time.Duration
	drainTimeout time.Duration
	log          *slog.Logger
	now          func() time.Time
	metrics      *metrics
	// jitter returns a value in [0,1) that spreads retry backoffs.
	jitter  func() float64
	tracing *tracing
}

// storeOpTimeout bounds each status write from a worker, so a slow or
// missing Redis delays a task by at most this much per write.
const storeOpTimeout = 2 * time.Second

// run consumes and runs tasks until ctx ends, then shuts down in two
// phases. First it stops consuming, so no new task starts, and lets the
// tasks in flight finish for up to drainTimeout. Then it cancels the
// tasks still running; each is rejected back to the queue for another
// worker. The order matters: cancelling first would requeue tasks that
// were about to finish, and stopping consumption last would start tasks
// that shutdown then abandons.
func (p *workerPool) run(ctx context.Context) error {
	// Tasks get a context of their own: the signal that ends ctx starts
	// the drain, and only the drain's deadline may cancel a task.
	taskCtx, abortTasks := context.WithCancel(context.WithoutCancel(ctx))
	defer abortTasks()

	p.metrics.workerPoolSize.Set(float64(p.size))
	defer p.metrics.workerPoolSize.Set(0)
	deliveries := make(chan delivery)
	consumeErr := make(chan error, 1)
	go func() {
		defer close(deliveries)
		consumeErr <- p.queue.consume(ctx, p.size, deliveries)
	}()

	var wg sync.WaitGroup
	for range p.size {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range deliveries {
				p.metrics.workersBusy.Inc()
				p.process(taskCtx, d)
				p.metrics.workersBusy.Dec()
			}
		}()
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	var err error
	select {
	case <-workersDone:
		// The consumer ended by itself before any signal.
		return <-consumeErr
	case <-ctx.Done():
	}
	p.log.Info("worker pool draining", "drain_timeout", p.drainTimeout.String())
	select {
	case <-workersDone:
		p.log.Info("worker pool drained")
		return <-consumeErr
	case <-time.After(p.drainTimeout):
	}
	p.log.Warn("drain timeout reached; cancelling running tasks and requeueing them")
	abortTasks()
	select {
	case <-workersDone:
	case <-time.After(5 * time.Second):
		err = errors.New("tasks ignored cancellation; their messages return to the queue when the connection closes")
	}
	return errors.Join(err, <-consumeErr)
}

// maxDeliveries bounds how often one message may come back unsettled
// before errand stops trusting it: a task that kills its worker every time
// would otherwise loop for ever.
const maxDeliveries = 5

// process runs one delivery to a settled end.
func (p *workerPool) process(ctx context.Context, d delivery) {
	msg, err := decodeTaskMessage(d.body)
	if err != nil {
		p.log.Error("dead-lettering undecodable message", "error", err, "body_bytes", len(d.body))
		p.metrics.tasksDeadLettered.WithLabelValues("unknown", "undecodable").Inc()
		p.deadLetter(ctx, p.log, d, "", "undecodable message: "+err.Error())
		return
	}
	// Continue the trace the API started: the consumer span's parent is
	// the producer span of the submit.
	carrier := propagation.MapCarrier(msg.Trace)
	if d.headers["traceparent"] != "" {
		carrier = propagation.MapCarrier(d.headers)
	}
	ctx, span := p.tracing.tracer.Start(p.tracing.propagator.Extract(ctx, carrier), "process "+msg.Type,
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("messaging.system", "rabbitmq"), attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.message.id", msg.ID), attribute.Int("errand.attempt", msg.Attempt+1)))
	defer span.End()
	log := p.log.With("task_id", msg.ID, "task_type", msg.Type)
	if sc := span.SpanContext(); sc.IsValid() {
		log = log.With("trace_id", sc.TraceID().String(), "span_id", sc.SpanID().String())
	}

	if d.redelivered {
		// A redelivered task may have finished before its ack was lost;
		// its stored result is then the answer and it must not run again.
		if rec, err := p.results.getResult(ctx, msg.ID); err == nil {
			log.Info("redelivered task already finished; acking")
			p.putStatus(ctx, log, rec.status(), p.resultTTL)
			p.settle(d, acknowledge)
			return
		}
		if p.countRedelivery(ctx, log, d, msg) {
			return
		}
	}

	def, ok := p.registry.Lookup(msg.Type)
	if !ok {
		log.Error("unknown task type; dead-lettering")
		// The type is the client's text, so the metric names no type: an
		// attacker must not be able to mint label values.
		p.metrics.tasksDeadLettered.WithLabelValues("unknown", "unknown_task_type").Inc()
		p.fail(ctx, log, d, msg, fmt.Sprintf("unknown task type %q", msg.Type))
		return
	}

	started := p.now()
	log.Info("task started", "queue_wait_ms", started.Sub(msg.EnqueuedAt).Milliseconds(), "attempt", msg.Attempt+1, "redelivered", d.redelivered)
	p.metrics.tasksStarted.WithLabelValues(msg.Type).Inc()
	observeWithExemplar(ctx, p.metrics.taskQueueWait.WithLabelValues(msg.Type), max(0, started.Sub(msg.EnqueuedAt).Seconds()))
	inProgress := p.metrics.tasksInProgress.WithLabelValues(msg.Type)
	inProgress.Inc()
	defer inProgress.Dec()
	progress := newProgressWriter(time.Now(), progressInterval, func(pr tasks.Progress) {
		p.putStatus(ctx, log, taskStatus{TaskID: msg.ID, Owner: msg.Owner, TraceID: traceID(ctx), Status: stateProgress, TaskType: msg.Type, Progress: &pr,
			Attempts: msg.Attempt, UpdatedAt: p.now()}, 0)
	})
	// PROGRESS "Started" goes through the throttle too: a run that ends
	// within progressInterval goes from PENDING straight to its end, one
	// status write fewer; a longer one shows PROGRESS after the interval.
	progress.report(ctx, tasks.Progress{Status: "Started"})
	runCtx, runSpan := p.tracing.tracer.Start(ctx, "run "+msg.Type)
	value, runErr := runTask(runCtx, log, def, msg, progress.report)
	// No progress may be written once the run is over: the final status
	// (or the retry's) comes next and must be the last word.
	progress.stop()
	if runErr != nil {
		runSpan.SetStatus(codes.Error, runErr.Error())
	}
	runSpan.End()
	if runErr != nil && ctx.Err() != nil {
		log.Warn("task aborted by shutdown; requeueing", "error", runErr)
		p.settle(d, requeue)
		return
	}
	var result map[string]any
	if runErr == nil {
		result, runErr = resultObject(value)
	}
	finished := p.now()
	observeWithExemplar(ctx, p.metrics.taskRunDuration.WithLabelValues(msg.Type), finished.Sub(started).Seconds())
	// The run's time goes on the line that ends the task (task finished,
	// or the retry's): one line fewer per task, which shows at thousands
	// of tasks a second.
	log = log.With("run_ms", finished.Sub(started).Milliseconds())

	if runErr == nil {
		p.metrics.tasksSucceeded.WithLabelValues(msg.Type).Inc()
		p.finish(ctx, log, d, taskRecord{TaskID: msg.ID, Owner: msg.Owner, TraceID: traceID(ctx), TaskType: msg.Type, Status: stateSuccess, Result: result,
			Attempts: msg.Attempt + 1, CompletedAt: finished}, "")
		return
	}
	if tasks.Retryable(runErr) && msg.Attempt < def.Policy.MaxRetries {
		p.retryLater(ctx, log, d, msg, def.Policy, runErr)
		return
	}
	p.metrics.tasksFailed.WithLabelValues(msg.Type).Inc()
	p.metrics.tasksDeadLettered.WithLabelValues(msg.Type, "failed").Inc()
	reason := runErr.Error()
	if msg.Attempt > 0 {
		reason = fmt.Sprintf("failed after %d attempts: %s", msg.Attempt+1, reason)
	}
	p.fail(ctx, log, d, msg, reason)
}

// countRedelivery handles a message that came back unsettled. RabbitMQ's
// classic queues do not count such redeliveries, so errand republishes the
// message with its count raised and acks the old copy; past maxDeliveries
// the task fails and is dead-lettered. It reports whether it settled d.
func (p *workerPool) countRedelivery(ctx context.Context, log *slog.Logger, d delivery, msg taskMessage) bool {
	msg.Deliveries++
	if msg.Deliveries >= maxDeliveries {
		log.Error("task keeps coming back unfinished; dead-lettering", "deliveries", msg.Deliveries)
		if _, ok := p.registry.Lookup(msg.Type); ok {
			p.metrics.tasksFailed.WithLabelValues(msg.Type).Inc()
			p.metrics.tasksDeadLettered.WithLabelValues(msg.Type, "delivery_limit").Inc()
		}
		p.fail(ctx, log, d, msg, fmt.Sprintf("delivered %d times without finishing (did its worker crash?)", msg.Deliveries))
		return true
	}
	if err := p.queue.publish(ctx, msg); err != nil {
		// Running it now is better than losing the count for good.
		log.Warn("could not republish a redelivered task with its delivery count; running it", "error", err)
		return false
	}
	p.settle(d, acknowledge)
	return true
}

// retryLater schedules the next attempt of a failed run on a delay queue
// and acks this one: the wait holds no worker slot.
func (p *workerPool) retryLater(ctx context.Context, log *slog.Logger, d delivery, msg taskMessage, policy tasks.Policy, runErr error) {
	delay := policy.Backoff(msg.Attempt+1, p.jitter())
	next := msg
	next.Attempt++
	next.LastError = runErr.Error()
	next.Deliveries = 0
	retryAt := p.now().Add(delay)
	if err := p.queue.publishDelayed(ctx, next, delay); err != nil {
		log.Error("could not schedule a retry; requeueing the run", "error", err)
		p.settle(d, requeue)
		return
	}
	p.metrics.tasksRetried.WithLabelValues(msg.Type).Inc()
	log.Warn("task failed; retry scheduled", "attempt", next.Attempt, "max_retries", policy.MaxRetries,
		"retry_in", delay.String(), "error", runErr.Error())
	p.putStatus(ctx, log, taskStatus{TaskID: msg.ID, Owner: msg.Owner, TraceID: traceID(ctx), Status: stateRetry, TaskType: msg.Type, Error: runErr.Error(),
		Attempts: next.Attempt, RetryAt: &retryAt, UpdatedAt: p.now()}, 0)
	p.settle(d, acknowledge)
}

// fail records a task's FAILURE with reason, then dead-letters its message.
func (p *workerPool) fail(ctx context.Context, log *slog.Logger, d delivery, msg taskMessage, reason string) {
	var args map[string]any
	_ = json.Unmarshal(msg.Args, &args) // best effort: a retry needs them, a poison message may have none
	p.finish(ctx, log, d, taskRecord{TaskID: msg.ID, Owner: msg.Owner, TraceID: traceID(ctx), TaskType: msg.Type, Status: stateFailure, Error: reason,
		Attempts: msg.Attempt + 1, CompletedAt: p.now(), Args: args, Priority: msg.Priority}, reason)
}

// finish stores rec durably, then its status, then settles d: acked, or,
// with a deadReason, moved to the dead-letter queue. If the result cannot
// be stored before shutdown, d goes back to the queue instead.
func (p *workerPool) finish(ctx context.Context, log *slog.Logger, d delivery, rec taskRecord, deadReason string) {
	saved, err := p.saveResult(ctx, log, rec)
	if err != nil {
		log.Error("result not stored; requeueing task", "error", err)
		p.settle(d, requeue)
		return
	}
	p.putStatus(ctx, log, saved.status(), p.resultTTL)
	log.Info("task finished", "status", saved.Status, "attempts", saved.Attempts, "error", saved.Error)
	if deadReason == "" {
		p.settle(d, acknowledge)
		return
	}
	p.deadLetter(ctx, log, d, rec.TaskID, deadReason)
}

// deadLetter copies d to the dead-letter queue with its reason and acks
// it; if that copy fails, the broker's own dead-lettering (a reject) moves
// it there without the reason.
func (p *workerPool) deadLetter(ctx context.Context, log *slog.Logger, d delivery, taskID, reason string) {
	if err := p.queue.publishDead(ctx, d.body, taskID, reason); err != nil {
		log.Warn("dead letter not published with its reason; rejecting to the broker's dead-letter queue", "error", err)
		p.settle(d, deadLetter)
		return
	}
	p.settle(d, acknowledge)
}

// saveResult retries until the result is stored or ctx ends: a result
// store outage delays tasks but loses none.
func (p *workerPool) saveResult(ctx context.Context, log *slog.Logger, rec taskRecord) (taskRecord, error) {
	backoff := 100 * time.Millisecond
	for {
		saved, err := p.results.saveResult(ctx, rec)
		if err == nil {
			return saved, nil
		}
		log.Warn("storing result failed; retrying", "error", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
			return taskRecord{}, fmt.Errorf("store result of %s: %w", rec.TaskID, errors.Join(err, ctx.Err()))
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (p *workerPool) putStatus(ctx context.Context, log *slog.Logger, st taskStatus, ttl time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, storeOpTimeout)
	defer cancel()
	if err := p.statuses.put(ctx, st, ttl); err != nil {
		log.Warn("status not stored", "status", st.Status, "error", err)
	}
}

// settlement is how a delivery ends.
type settlement int

const (
	acknowledge settlement = iota // done: remove it from the queue
	requeue                       // not done: give it to a worker again
	deadLetter                    // never runnable: move it to the dead-letter queue
)

func (p *workerPool) settle(d delivery, how settlement) {
	var err error
	if how == acknowledge {
		err = d.ack()
	} else {
		err = d.reject(how == requeue)
	}
	if err != nil {
		// The channel is gone; the broker requeues the message itself.
		p.log.Warn("settling delivery failed; the broker will redeliver it", "error", err)
	}
}

// cancelGrace is how long a task may take to return after its context
// is cancelled before errand stops waiting for it.
const cancelGrace = 2 * time.Second

// errTimeLimit is the error of a run cut off by its task's time limit.
var errTimeLimit = errors.New("time limit exceeded")

// runTask calls the task's handler under its time limit, turning a panic
// into an error so one bad task cannot take the worker down with the
// others' work. The stack goes to the log only; the error, which clients
// see, names the panic value. A handler that ignores its cancelled context
// is abandoned after cancelGrace: Go cannot stop a goroutine, but the
// worker slot, the task's status and shutdown need not wait for it.
func runTask(ctx context.Context, log *slog.Logger, def tasks.Definition, msg taskMessage, report tasks.ReportFunc) (any, error) {
	if def.Policy.TimeLimit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, def.Policy.TimeLimit,
			fmt.Errorf("%w (%s)", errTimeLimit, def.Policy.TimeLimit))
		defer cancel()
	}
	type outcome struct {
		value any
		err   error
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error("task panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				done <- outcome{err: fmt.Errorf("task panicked: %v", r)}
			}
		}()
		v, err := def.Run(ctx, msg.ID, msg.Args, report)
		done <- outcome{v, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		select {
		case o = <-done:
		case <-time.After(cancelGrace):
			log.Error("task ignored cancellation; abandoning it", "cause", context.Cause(ctx).Error())
			return nil, context.Cause(ctx)
		}
	}
	if o.err != nil && errors.Is(context.Cause(ctx), errTimeLimit) {
		return nil, context.Cause(ctx)
	}
	return o.value, o.err
}

// resultObject converts a task's return value to the JSON object that the
// status endpoint and the result store keep.
func resultObject(value any) (map[string]any, error) {
	b, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("encode task result: %w", err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("task result is not a JSON object: %w", err)
	}
	return obj, nil
}

// progressInterval is the least time between two progress writes of one
// task. A task may report as often as it likes: each report replaces the
// last, so the ones in between need not reach Redis, and a task that
// loops through its steps in microseconds costs the worker one status
// write (its end) instead of one per step. It is far below what anyone
// polling a status can see.
const progressInterval = 20 * time.Millisecond

// progressWriter throttles a task's progress reports to one write per
// progressInterval. A report that comes too soon is kept and written when
// the interval is up (unless a newer one replaces it first), so the last
// reported step always shows while the task runs.
type progressWriter struct {
	write    func(tasks.Progress)
	interval time.Duration // progressInterval, but for tests

	mu        sync.Mutex // held across writes, so they land in order
	lastWrite time.Time
	pending   *tasks.Progress
	timer     *time.Timer
	stopped   bool
}

// newProgressWriter starts throttling from since, the time of the task's
// last status write, with at most one write per interval.
func newProgressWriter(since time.Time, interval time.Duration, write func(tasks.Progress)) *progressWriter {
	return &progressWriter{write: write, interval: interval, lastWrite: since}
}

// report is the task's tasks.ReportFunc.
func (w *progressWriter) report(_ context.Context, pr tasks.Progress) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return // a run abandoned after its time limit reports no more
	}
	wait := w.interval - time.Since(w.lastWrite)
	if wait <= 0 {
		w.pending = nil
		w.writeLocked(pr)
		return
	}
	w.pending = &pr
	if w.timer == nil {
		w.timer = time.AfterFunc(wait, w.flush)
	}
}

// flush writes the report that came too soon, if it is still wanted.
func (w *progressWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = nil
	if w.stopped || w.pending == nil {
		return
	}
	pr := *w.pending
	w.pending = nil
	w.writeLocked(pr)
}

func (w *progressWriter) writeLocked(pr tasks.Progress) {
	w.write(pr)
	w.lastWrite = time.Now()
}

// stop drops any report not yet written and waits for a write under way,
// so nothing is written after it returns.
func (w *progressWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.pending = nil
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
}
