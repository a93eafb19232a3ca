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

	"errand/tasks"
)

// taskConsumer feeds deliveries to the pool until ctx ends. Once it
// returns no delivery follows, but those handed out stay settleable.
type taskConsumer interface {
	consume(ctx context.Context, prefetch int, out chan<- delivery) error
}

// workerPool runs tasks from a taskConsumer on a fixed number of
// goroutines. A delivery is acked only once its result is stored, so a
// crash at any point before that leaves the message with the broker,
// which redelivers it.
type workerPool struct {
	size         int
	consumer     taskConsumer
	registry     *tasks.Registry
	statuses     statusStore
	results      resultStore
	resultTTL    time.Duration
	drainTimeout time.Duration
	log          *slog.Logger
	now          func() time.Time
	metrics      *metrics
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
		consumeErr <- p.consumer.consume(ctx, p.size, deliveries)
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

// process runs one delivery to a settled end.
func (p *workerPool) process(ctx context.Context, d delivery) {
	msg, err := decodeTaskMessage(d.body)
	if err != nil {
		p.log.Error("dead-lettering undecodable message", "error", err, "body_bytes", len(d.body))
		p.metrics.tasksDeadLettered.WithLabelValues("unknown", "undecodable").Inc()
		p.settle(d, deadLetter)
		return
	}
	log := p.log.With("task_id", msg.ID, "task_type", msg.Type)

	if d.redelivered {
		// A redelivered task may have finished before its ack was lost;
		// its stored result is then the answer and it must not run again.
		if rec, err := p.results.getResult(ctx, msg.ID); err == nil {
			log.Info("redelivered task already finished; acking")
			p.putStatus(ctx, log, rec.status(), p.resultTTL)
			p.settle(d, acknowledge)
			return
		}
	}

	def, ok := p.registry.Lookup(msg.Type)
	if !ok {
		log.Error("unknown task type; dead-lettering")
		// The type is the client's text, so the metric names no type: an
		// attacker must not be able to mint label values.
		p.metrics.tasksDeadLettered.WithLabelValues("unknown", "unknown_task_type").Inc()
		p.finish(ctx, log, d, taskRecord{TaskID: msg.ID, TaskType: msg.Type, Status: stateFailure,
			Error: fmt.Sprintf("unknown task type %q", msg.Type)}, false)
		return
	}

	started := p.now()
	log.Info("task started", "queue_wait_ms", started.Sub(msg.EnqueuedAt).Milliseconds(), "redelivered", d.redelivered)
	p.metrics.tasksStarted.WithLabelValues(msg.Type).Inc()
	p.metrics.taskQueueWait.WithLabelValues(msg.Type).Observe(max(0, started.Sub(msg.EnqueuedAt).Seconds()))
	inProgress := p.metrics.tasksInProgress.WithLabelValues(msg.Type)
	inProgress.Inc()
	defer inProgress.Dec()
	p.putStatus(ctx, log, taskStatus{TaskID: msg.ID, Status: stateProgress, TaskType: msg.Type,
		Progress: &tasks.Progress{Status: "Started"}, UpdatedAt: started}, 0)
	report := func(ctx context.Context, pr tasks.Progress) {
		p.putStatus(ctx, log, taskStatus{TaskID: msg.ID, Status: stateProgress, TaskType: msg.Type, Progress: &pr, UpdatedAt: p.now()}, 0)
	}
	value, runErr := runTask(ctx, log, def, msg, report)
	if runErr != nil && ctx.Err() != nil {
		log.Warn("task aborted by shutdown; requeueing", "error", runErr)
		p.settle(d, requeue)
		return
	}

	rec := taskRecord{TaskID: msg.ID, TaskType: msg.Type, Status: stateSuccess, CompletedAt: p.now()}
	if runErr == nil {
		rec.Result, runErr = resultObject(value)
	}
	if runErr != nil {
		rec.Status, rec.Result, rec.Error = stateFailure, nil, runErr.Error()
	}
	log.Info("task finished", "status", rec.Status, "run_ms", rec.CompletedAt.Sub(started).Milliseconds(), "error", rec.Error)
	p.metrics.taskRunDuration.WithLabelValues(msg.Type).Observe(rec.CompletedAt.Sub(started).Seconds())
	if rec.Status == stateSuccess {
		p.metrics.tasksSucceeded.WithLabelValues(msg.Type).Inc()
	} else {
		p.metrics.tasksFailed.WithLabelValues(msg.Type).Inc()
	}
	p.finish(ctx, log, d, rec, true)
}

// finish stores rec durably, then its status, then settles d: acked, or
// dead-lettered when ok is false. If the result cannot be stored before
// shutdown, d goes back to the queue instead.
func (p *workerPool) finish(ctx context.Context, log *slog.Logger, d delivery, rec taskRecord, ok bool) {
	saved, err := p.saveResult(ctx, log, rec)
	if err != nil {
		log.Error("result not stored; requeueing task", "error", err)
		p.settle(d, requeue)
		return
	}
	p.putStatus(ctx, log, saved.status(), p.resultTTL)
	if ok {
		p.settle(d, acknowledge)
	} else {
		p.settle(d, deadLetter)
	}
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

// runTask calls the task's handler, turning a panic into an error so one
// bad task cannot take the worker down with the others' work.
// The stack goes to the log only; the task's error, which clients see,
// names the panic value.
func runTask(ctx context.Context, log *slog.Logger, def tasks.Definition, msg taskMessage, report tasks.ReportFunc) (value any, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("task panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = fmt.Errorf("task panicked: %v", r)
		}
	}()
	return def.Run(ctx, msg.ID, msg.Args, report)
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
