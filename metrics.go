package main

import (
	"context"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// metrics holds every metric errand exports. Labels are bounded: route
// patterns (never raw paths), task types, priorities, store and operation
// names, never ids.
type metrics struct {
	registry *prometheus.Registry

	httpDuration *prometheus.HistogramVec
	httpInFlight prometheus.Gauge

	tasksSubmitted    *prometheus.CounterVec
	tasksScheduled    *prometheus.CounterVec
	tasksRevoked      *prometheus.CounterVec
	scheduleFired     *prometheus.CounterVec
	scheduleSkipped   *prometheus.CounterVec
	tasksStarted      *prometheus.CounterVec
	tasksSucceeded    *prometheus.CounterVec
	tasksFailed       *prometheus.CounterVec
	tasksRetried      *prometheus.CounterVec
	tasksThrottled    *prometheus.CounterVec
	webhooksFailed    prometheus.Counter
	tasksParked       *prometheus.CounterVec
	keyTasksRun       *prometheus.GaugeVec
	keyTasksWait      *prometheus.GaugeVec
	tasksDeadLettered *prometheus.CounterVec
	taskRunDuration   *prometheus.HistogramVec
	taskQueueWait     *prometheus.HistogramVec
	tasksInProgress   *prometheus.GaugeVec
	workerPoolSize    prometheus.Gauge
	workersBusy       prometheus.Gauge

	publishDuration *prometheus.HistogramVec
	publishErrors   *prometheus.CounterVec
	tasksPerMessage prometheus.Histogram
	// tasksRepublished counts the tasks of envelopes sent back to the
	// queue after waiting past the consumer's hold limit with none started.
	tasksRepublished prometheus.Counter
	reconnects       *prometheus.CounterVec
	storeDuration    *prometheus.HistogramVec
	storeErrors      *prometheus.CounterVec
}

// Task latencies span milliseconds (an empty task) to minutes (the guide's
// 100-iteration task takes 50 s).
var taskBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Request and store latencies: sub-millisecond to seconds.
var fastBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// newMetrics makes errand's metrics on a registry of their own. The
// broker's figures size two of them: the tasks one message may carry, and
// how long a consumer holds an envelope before sending its tasks back.
func newMetrics(version string, maxTasksPerMessage int, envelopeHold time.Duration) *metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{registry: reg}

	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "errand_http_request_duration_seconds", Help: "HTTP request latency by method, route pattern and status code.",
		Buckets: fastBuckets,
	}, []string{"method", "route", "code"})
	m.httpInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "errand_http_requests_in_flight", Help: "HTTP requests being served.",
	})
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m.tasksSubmitted = counter("errand_tasks_submitted_total", "Tasks accepted by the API (confirmed by the broker).", "task_type", "priority")
	m.tasksRevoked = counter("errand_tasks_revoked_total", "Tasks cancelled before they finished (POST /api/tasks/{task_id}/cancel).", "task_type")
	m.scheduleFired = counter("errand_schedule_ticks_fired_total", "Ticks of periodic schedules whose task was queued.", "task_type")
	m.scheduleSkipped = counter("errand_schedule_ticks_skipped_total", "Ticks of periodic schedules missed while no errand process ran, skipped rather than fired late.", "task_type")
	m.tasksScheduled = counter("errand_tasks_scheduled_total", "Tasks accepted to run later (a countdown or an eta), a subset of the submitted.", "task_type")
	m.tasksStarted = counter("errand_tasks_started_total", "Task runs started by workers, redeliveries included.", "task_type")
	m.tasksSucceeded = counter("errand_tasks_succeeded_total", "Tasks finished with SUCCESS.", "task_type")
	m.tasksFailed = counter("errand_tasks_failed_total", "Tasks finished with FAILURE.", "task_type")
	m.tasksRetried = counter("errand_tasks_retried_total", "Task runs that failed and were scheduled again.", "task_type")
	m.tasksThrottled = counter("errand_tasks_throttled_total", "Task starts put off by their type's rate limit (each waits for its slot on a delay queue).", "task_type")
	m.webhooksFailed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "errand_webhooks_failed_total", Help: "Webhook deliveries that gave up (the task's detail says why); they are not dead-lettered.",
	})
	m.tasksParked = counter("errand_tasks_parked_total", "Tasks parked because their concurrency key had no free slot (MAX_RUNNING_PER_KEY).", "task_type")
	m.keyTasksRun = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "errand_key_tasks_running", Help: "Tasks with a concurrency key running in this process, by a bucket (0 to 15) of a hash of the key.",
	}, []string{"key_bucket"})
	m.keyTasksWait = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "errand_key_tasks_waiting", Help: "Parked tasks of every process, by a bucket (0 to 15) of a hash of the key, as this process last counted them: take the max over processes, not the sum.",
	}, []string{"key_bucket"})
	m.tasksDeadLettered = counter("errand_tasks_dead_lettered_total", "Messages moved to the dead-letter queue, by reason.", "task_type", "reason")
	m.taskRunDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "errand_task_run_duration_seconds", Help: "Time a task ran in a worker.", Buckets: taskBuckets,
	}, []string{"task_type"})
	m.taskQueueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "errand_task_queue_wait_seconds", Help: "Time from a task's submission to its start.", Buckets: taskBuckets,
	}, []string{"task_type"})
	m.tasksInProgress = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "errand_tasks_in_progress", Help: "Tasks running in this process.",
	}, []string{"task_type"})
	m.workerPoolSize = prometheus.NewGauge(prometheus.GaugeOpts{Name: "errand_worker_pool_size", Help: "Worker goroutines of this process."})
	m.workersBusy = prometheus.NewGauge(prometheus.GaugeOpts{Name: "errand_workers_busy", Help: "Worker goroutines running a task."})
	m.publishDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "errand_broker_publish_duration_seconds", Help: "Time from publishing a task to the broker's confirm.", Buckets: fastBuckets,
	}, []string{"outcome"})
	m.publishErrors = counter("errand_broker_publish_errors_total", "Publishes the broker did not confirm.", "task_type")
	m.tasksPerMessage = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "errand_broker_tasks_per_message", Help: "Tasks carried by each confirmed task message (submits that overlap share one).",
		Buckets: tasksPerMessageBuckets(maxTasksPerMessage),
	})
	m.tasksRepublished = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "errand_broker_envelope_tasks_republished_total",
		Help: "Tasks of envelopes that waited " + envelopeHold.String() + " in a consumer with none started, sent back to the queue as single messages.",
	})
	m.reconnects = counter("errand_broker_reconnects_total", "Broker connections redialled after a loss.", "kind")
	m.storeDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "errand_store_operation_duration_seconds", Help: "Latency of Redis and MongoDB operations.", Buckets: fastBuckets,
	}, []string{"store", "operation"})
	m.storeErrors = counter("errand_store_errors_total", "Failed Redis and MongoDB operations (not-found answers excluded).", "store", "operation")

	for _, c := range []prometheus.Collector{
		m.httpDuration, m.httpInFlight, m.tasksSubmitted, m.tasksScheduled, m.tasksRevoked, m.scheduleFired, m.scheduleSkipped, m.tasksStarted, m.tasksSucceeded, m.tasksFailed,
		m.tasksRetried, m.tasksThrottled, m.webhooksFailed, m.tasksParked, m.keyTasksRun, m.keyTasksWait, m.tasksDeadLettered, m.taskRunDuration, m.taskQueueWait, m.tasksInProgress,
		m.workerPoolSize, m.workersBusy, m.publishDuration, m.publishErrors, m.tasksPerMessage, m.tasksRepublished, m.reconnects, m.storeDuration, m.storeErrors,
	} {
		f(c)
	}
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f(collectors.NewBuildInfoCollector())
	f(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "errand_build_info", Help: "Always 1; labels name the running build.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": goVersion()},
	}, func() float64 { return 1 }))
	return m
}

// initSeries creates every series whose labels are known in advance at
// zero, so dashboards and alerts see "none so far" as 0 rather than as a
// missing series (on which rate() and ratios return nothing at all).
func (m *metrics) initSeries(taskTypes []string) {
	for _, tt := range taskTypes {
		for p := range priorityLevels {
			m.tasksSubmitted.WithLabelValues(tt, p)
		}
		m.tasksScheduled.WithLabelValues(tt)
		m.tasksRevoked.WithLabelValues(tt)
		m.scheduleFired.WithLabelValues(tt)
		m.scheduleSkipped.WithLabelValues(tt)
		m.tasksStarted.WithLabelValues(tt)
		m.tasksSucceeded.WithLabelValues(tt)
		m.tasksFailed.WithLabelValues(tt)
		m.tasksRetried.WithLabelValues(tt)
		m.tasksThrottled.WithLabelValues(tt)
		m.tasksParked.WithLabelValues(tt)
		m.publishErrors.WithLabelValues(tt)
		for _, reason := range []string{"failed", "delivery_limit"} {
			m.tasksDeadLettered.WithLabelValues(tt, reason)
		}
	}
	for _, reason := range []string{"undecodable", "unknown_task_type"} {
		m.tasksDeadLettered.WithLabelValues("unknown", reason)
	}
	for _, kind := range []string{"publisher", "consumer"} {
		m.reconnects.WithLabelValues(kind)
	}
	for b := range 16 {
		m.keyTasksRun.WithLabelValues(strconv.Itoa(b))
		m.keyTasksWait.WithLabelValues(strconv.Itoa(b))
	}
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown"
}

// buildVersion is the module version stamped by the Go toolchain, or
// "devel" in a plain `go build` / `go run`.
func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{EnableOpenMetrics: true, Registry: m.registry})
}

// instrumentHTTP records each request's latency under its route pattern,
// which the mux has set by the time the handler returns.
func (m *metrics) instrumentHTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.httpInFlight.Inc()
		defer m.httpInFlight.Dec()
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		code := rec.status
		if code == 0 {
			code = http.StatusOK
		}
		observeWithExemplar(r.Context(), m.httpDuration.WithLabelValues(r.Method, route, strconv.Itoa(code)), time.Since(start).Seconds())
		// The server span started before routing; now the route is known.
		if span := trace.SpanFromContext(r.Context()); span.IsRecording() {
			span.SetName(r.Method + " " + strings.TrimPrefix(route, r.Method+" "))
			span.SetAttributes(attribute.String("http.route", route))
		}
	})
}

// tasksPerMessageBuckets are powers of two up to, and ending at, the most
// tasks one message may carry.
func tasksPerMessageBuckets(maxTasks int) []float64 {
	var buckets []float64
	for n := 1; n < maxTasks; n *= 2 {
		buckets = append(buckets, float64(n))
	}
	return append(buckets, float64(maxTasks))
}

// taskStarted records a run's start and how long its task waited in the
// queue; the function it returns records the run's end.
func (m *metrics) taskStarted(ctx context.Context, taskType string, queueWait time.Duration) (ended func()) {
	m.tasksStarted.WithLabelValues(taskType).Inc()
	observeWithExemplar(ctx, m.taskQueueWait.WithLabelValues(taskType), max(0, queueWait.Seconds()))
	inProgress := m.tasksInProgress.WithLabelValues(taskType)
	inProgress.Inc()
	return inProgress.Dec
}

// taskRan records how long a run took.
func (m *metrics) taskRan(ctx context.Context, taskType string, d time.Duration) {
	observeWithExemplar(ctx, m.taskRunDuration.WithLabelValues(taskType), d.Seconds())
}

func (m *metrics) taskSucceeded(taskType string) { m.tasksSucceeded.WithLabelValues(taskType).Inc() }

func (m *metrics) taskRetried(taskType string) { m.tasksRetried.WithLabelValues(taskType).Inc() }

func (m *metrics) taskThrottled(taskType string) { m.tasksThrottled.WithLabelValues(taskType).Inc() }

func (m *metrics) taskParked(taskType string) { m.tasksParked.WithLabelValues(taskType).Inc() }

func (m *metrics) keyTaskRunning(bucket string, delta float64) {
	m.keyTasksRun.WithLabelValues(bucket).Add(delta)
}

// keyTasksWaiting sets the parked tasks of every bucket, 0 for those with
// none.
func (m *metrics) keyTasksWaiting(byBucket map[string]int) {
	for b := range 16 {
		bucket := strconv.Itoa(b)
		m.keyTasksWait.WithLabelValues(bucket).Set(float64(byBucket[bucket]))
	}
}

// scheduleTickFired counts a schedule's tick whose task was queued.
func (m *metrics) scheduleTickFired(taskType string) { m.scheduleFired.WithLabelValues(taskType).Inc() }

// scheduleTicksSkipped counts ticks missed while no errand ran.
func (m *metrics) scheduleTicksSkipped(taskType string, n int) {
	m.scheduleSkipped.WithLabelValues(taskType).Add(float64(n))
}

// taskRevoked counts a cancel of an unfinished task. The type is one a
// submit's check accepted, so it mints no label values.
func (m *metrics) taskRevoked(taskType string) { m.tasksRevoked.WithLabelValues(taskType).Inc() }

// taskFailed records a FAILURE and its message's move to the dead-letter
// queue, with the reason ("failed", "delivery_limit").
func (m *metrics) taskFailed(taskType, reason string) {
	if taskType == webhookTaskType {
		// A receiver's failure, not errand's: no task failed, and no dead
		// letter was written.
		m.webhooksFailed.Inc()
		return
	}
	m.tasksFailed.WithLabelValues(taskType).Inc()
	m.tasksDeadLettered.WithLabelValues(taskType, reason).Inc()
}

// untypedDeadLetter records a dead-lettered message whose type is not a
// registered one, under the type "unknown".
func (m *metrics) untypedDeadLetter(reason string) {
	m.tasksDeadLettered.WithLabelValues("unknown", reason).Inc()
}

// observePublish records one publish and, when confirmed, the submission
// (scheduled: to run later).
func (m *metrics) observePublish(ctx context.Context, taskType, priority string, scheduled bool, start time.Time, err error) {
	outcome := "confirmed"
	switch {
	case err != nil:
		outcome = "failed"
		m.publishErrors.WithLabelValues(taskType).Inc()
	case scheduled:
		m.tasksScheduled.WithLabelValues(taskType).Inc()
		fallthrough
	default:
		m.tasksSubmitted.WithLabelValues(taskType, priority).Inc()
	}
	observeWithExemplar(ctx, m.publishDuration.WithLabelValues(outcome), time.Since(start).Seconds())
}

// observeWithExemplar records v with the trace id of ctx's span as an
// exemplar, so a latency outlier on a dashboard links to its trace.
func observeWithExemplar(ctx context.Context, o prometheus.Observer, v float64) {
	if id := traceID(ctx); id != "" {
		if eo, ok := o.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(v, prometheus.Labels{"trace_id": id})
			return
		}
	}
	o.Observe(v)
}

// dependencyCollector reports errand_dependency_up by pinging each
// dependency when Prometheus scrapes, each with a short deadline.
type dependencyCollector struct {
	deps    map[string]pinger
	timeout time.Duration
	desc    *prometheus.Desc
}

func newDependencyCollector(deps map[string]pinger, timeout time.Duration) *dependencyCollector {
	return &dependencyCollector{deps: deps, timeout: timeout, desc: prometheus.NewDesc(
		"errand_dependency_up", "1 when the dependency answered a ping during this scrape.", []string{"dependency"}, nil)}
}

func (c *dependencyCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *dependencyCollector) Collect(ch chan<- prometheus.Metric) {
	for name, err := range pingAll(context.Background(), c.deps, c.timeout) {
		up := 1.0
		if err != nil {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, up, name)
	}
}

// queueDepthReader reports the ready messages of errand's queues.
type queueDepthReader interface {
	queueDepths(ctx context.Context) (map[string]int, error)
}

// queueCollector reports errand_queue_messages by asking the broker when
// Prometheus scrapes.
type queueCollector struct {
	broker  queueDepthReader
	timeout time.Duration
	desc    *prometheus.Desc
}

func newQueueCollector(b queueDepthReader, timeout time.Duration) *queueCollector {
	return &queueCollector{broker: b, timeout: timeout, desc: prometheus.NewDesc(
		"errand_queue_messages", "Messages ready in a queue (work and dead-letter), read from the broker at scrape time.", []string{"queue"}, nil)}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	depths, err := c.broker.queueDepths(ctx)
	if err != nil {
		// No sample: a missing series is what "unknown" looks like, and
		// errand_dependency_up says why.
		return
	}
	for q, n := range depths {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), q)
	}
}
