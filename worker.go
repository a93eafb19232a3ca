package main

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"errand/tasks"
)

// workQueue is the broker as the worker pool uses it: consuming tasks,
// putting one back (with its delivery count), scheduling a retry, and
// dead-lettering with a reason.
type workQueue interface {
	// consume feeds deliveries to out until ctx ends. Once it returns no
	// delivery follows, but those handed out stay settleable.
	consume(ctx context.Context, prefetch int, out chan<- delivery) error
	publish(ctx context.Context, m taskMessage) error
	publishDelayed(ctx context.Context, m taskMessage, delay time.Duration) error
	publishDead(ctx context.Context, body []byte, taskID, reason string) error
}

// statusWriter is what a worker needs of the status store.
type statusWriter interface {
	put(ctx context.Context, s taskStatus, ttl time.Duration) error
}

// resultSaver is what a worker needs of the result store: a finished
// task's record, and whether a redelivered task has one already.
type resultSaver interface {
	saveResult(ctx context.Context, r taskRecord) (taskRecord, error)
	getResult(ctx context.Context, taskID string) (taskRecord, error)
}

// workerPool runs tasks from a workQueue on a fixed number of goroutines.
// A delivery is acked only once its result is stored, so a crash at any
// point before that leaves the message with the broker, which
// redelivers it.
type workerPool struct {
	size         int
	queue        workQueue
	registry     *tasks.Registry
	statuses     statusWriter
	results      resultSaver
	revocations  revocationStore
	resultTTL    time.Duration
	drainTimeout time.Duration
	log          *slog.Logger
	now          func() time.Time
	metrics      *metrics
	// jitter returns a value in [0,1) that spreads retry backoffs.
	jitter  func() float64
	tracing *tracing
	running runningTasks
	// webhooks delivers the webhooks of finished tasks (webhookTaskType).
	webhooks *webhookSender
	// throttles reserves the starts of rate-limited task types.
	throttles taskThrottle
	// slots and parked hold the tasks of concurrency keys to their
	// limits (concurrency.go).
	slots        keySlots
	parked       parkedTasks
	keySlotLease time.Duration
	// workflows starts what follows a workflow's step when it ends.
	workflows *workflowEngine
}

// workerConfig is what a worker pool takes from errand's settings.
type workerConfig struct {
	size         int
	resultTTL    time.Duration
	drainTimeout time.Duration
	webhooks     webhookConfig
	// keySlotLease is how long a concurrency key's slot outlives the last
	// renewal of its lease: how long the slot of a worker that died stays
	// taken.
	keySlotLease time.Duration
}

func newWorkerPool(queue workQueue, registry *tasks.Registry, statuses statusWriter, results resultSaver, revocations revocationStore,
	keys workerKeyStores, workflows *workflowEngine, cfg workerConfig, log *slog.Logger, m *metrics, tr *tracing) *workerPool {
	return &workerPool{
		size: cfg.size, queue: queue, registry: registry, statuses: statuses, results: results, revocations: revocations,
		throttles: keys.throttles, slots: keys.slots, parked: keys.parked, workflows: workflows,
		resultTTL: cfg.resultTTL, drainTimeout: cfg.drainTimeout,
		log: log, now: time.Now, metrics: m, jitter: rand.Float64, tracing: tr,
		webhooks: newWebhookSender(cfg.webhooks, results, time.Now, workflows), keySlotLease: cmp.Or(cfg.keySlotLease, 30*time.Second),
	}
}

// workerKeyStores are the stores that hold tasks to their type's rate and
// their key's concurrency limits.
type workerKeyStores struct {
	throttles taskThrottle
	slots     keySlots
	parked    parkedTasks
}

// memoryKeyStores are in-process ones, for tests and the embedded mode.
func memoryKeyStores() workerKeyStores {
	return workerKeyStores{throttles: newMemoryThrottle(time.Now), slots: newMemoryKeySlots(time.Now), parked: newMemoryParkedTasks(time.Now)}
}

// definition is the task type's definition: the registry's, or the
// webhook deliveries' own.
func (p *workerPool) definition(taskType string) (tasks.Definition, bool) {
	if taskType == webhookTaskType {
		return p.webhooks.definition(), true
	}
	return p.registry.Lookup(taskType)
}

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
	// Cancels reach the tasks running here until the last has ended.
	go p.stopRevoked(taskCtx)
	sweepCtx, stopSweeping := context.WithCancel(ctx)
	swept := make(chan struct{})
	go func() {
		defer close(swept)
		p.runKeySweeper(sweepCtx)
	}()
	defer func() { stopSweeping(); <-swept }()

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

// runningTasks are the runs of this pool, by task id, each with the
// function that stops it.
type runningTasks struct {
	mu   sync.Mutex
	runs map[string][]*context.CancelCauseFunc
}

// add registers a run of task id; the returned function unregisters it.
func (r *runningTasks) add(id string, stop context.CancelCauseFunc) (remove func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.runs == nil {
		r.runs = map[string][]*context.CancelCauseFunc{}
	}
	entry := &stop
	r.runs[id] = append(r.runs[id], entry)
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.runs[id] = slices.DeleteFunc(r.runs[id], func(e *context.CancelCauseFunc) bool { return e == entry })
		if len(r.runs[id]) == 0 {
			delete(r.runs, id)
		}
	}
}

// has reports whether task id runs here.
func (r *runningTasks) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs[id]) > 0
}

// stop stops the runs of task id here with cause, and reports whether
// there were any.
func (r *runningTasks) stop(id string, cause error) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, stop := range r.runs[id] {
		(*stop)(cause)
	}
	return len(r.runs[id]) > 0
}

// stopRevoked stops the runs of the tasks cancelled while they run here,
// until ctx ends.
func (p *workerPool) stopRevoked(ctx context.Context) {
	for id := range p.revocations.watch(ctx) {
		if !p.running.has(id) {
			continue // the cancel of a task another process runs
		}
		rev, err := p.revocations.revoked(ctx, id)
		if err != nil || rev == nil {
			rev = &revocation{At: p.now()}
		}
		if p.running.stop(id, &revokedError{*rev}) {
			p.log.Info("stopping a cancelled task", "task_id", id, "revoked_by", rev.By)
		}
	}
}
