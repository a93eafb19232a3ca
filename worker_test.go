package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"errand/tasks"
)

// TestWorkerKilledMidBacklog SIGKILLs a worker process while it runs tasks
// from a backlog, starts another, and checks that every accepted task ends
// SUCCESS with exactly one result document.
func TestWorkerKilledMidBacklog(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "40ms"
	api := startErrand(t, withEnv(env, "ROLE", "api"))
	workerEnv := withEnv(withEnv(env, "ROLE", "worker"), "WORKERS", "3")
	first := startChild(t, workerEnv)

	const n = 24
	ids := make([]string, n)
	for i := range ids {
		ids[i] = submitTask(t, api, fmt.Sprintf(`{"data": "task %d", "iterations": 5}`, i))
	}
	// Kill the worker once it is busy with some tasks and has finished others.
	waitFor(t, 30*time.Second, "a task in progress", func() bool {
		return countStatuses(t, api, ids)[stateProgress] > 0
	})
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.wait(t, 10*time.Second)
	killedAt := countStatuses(t, api, ids)
	t.Logf("statuses when the worker was killed: %v", killedAt)

	startChild(t, workerEnv)
	for _, id := range ids {
		waitForStatus(t, api, id, stateSuccess, 60*time.Second)
	}
	assertOneResultEach(t, env, ids)
}

// TestGracefulShutdownFinishesInFlight sends SIGTERM to a busy worker: it
// must finish the tasks it is running, start no new one, and exit 0; the
// rest of the backlog waits in the queue for the next worker.
func TestGracefulShutdownFinishesInFlight(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "50ms"
	api := startErrand(t, withEnv(env, "ROLE", "api"))
	workerEnv := withEnv(withEnv(withEnv(env, "ROLE", "worker"), "WORKERS", "2"), "DRAIN_TIMEOUT", "30s")
	w := startChild(t, workerEnv)

	ids := make([]string, 8)
	for i := range ids {
		ids[i] = submitTask(t, api, fmt.Sprintf(`{"data": "t%d", "iterations": 8}`, i))
	}
	waitFor(t, 30*time.Second, "two tasks in progress", func() bool { return countStatuses(t, api, ids)[stateProgress] == 2 })
	var running []string
	for _, id := range ids {
		var st taskStatus
		apiCall(t, "GET", api+"/api/async/status/"+id, "", nil, &st)
		if st.Status == stateProgress {
			running = append(running, id)
		}
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.wait(t, 30*time.Second); err != nil {
		t.Fatalf("worker exited with %v after SIGTERM, want exit 0", err)
	}
	counts := countStatuses(t, api, ids)
	for _, id := range running {
		var st taskStatus
		apiCall(t, "GET", api+"/api/async/status/"+id, "", nil, &st)
		if st.Status != stateSuccess {
			t.Errorf("task %s was running at SIGTERM and is %s after the drain, want SUCCESS", id, st.Status)
		}
	}
	if counts[stateProgress] != 0 {
		t.Errorf("statuses after the drain: %v, want no task left in PROGRESS", counts)
	}
	if counts[stateSuccess] >= len(ids) {
		t.Errorf("statuses after the drain: %v, want the backlog left for another worker", counts)
	}
	startChild(t, workerEnv)
	for _, id := range ids {
		waitForStatus(t, api, id, stateSuccess, 60*time.Second)
	}
	assertOneResultEach(t, env, ids)
}

// TestShutdownRequeuesAfterDrainTimeout: tasks that outlast the drain
// timeout are cancelled and go back to the queue, where another worker
// completes them.
func TestShutdownRequeuesAfterDrainTimeout(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "100ms"
	api := startErrand(t, withEnv(env, "ROLE", "api"))
	workerEnv := withEnv(withEnv(env, "ROLE", "worker"), "WORKERS", "2")
	w := startChild(t, withEnv(workerEnv, "DRAIN_TIMEOUT", "200ms"))

	ids := []string{
		submitTask(t, api, `{"data": "long 1", "iterations": 30}`),
		submitTask(t, api, `{"data": "long 2", "iterations": 30}`),
	}
	waitFor(t, 30*time.Second, "both tasks in progress", func() bool { return countStatuses(t, api, ids)[stateProgress] == 2 })
	start := time.Now()
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.wait(t, 20*time.Second); err != nil {
		t.Fatalf("worker exited with %v, want 0", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("worker took %v to stop, want about the 200ms drain timeout", took)
	}
	startChild(t, workerEnv)
	for _, id := range ids {
		waitForStatus(t, api, id, stateSuccess, 60*time.Second)
	}
	assertOneResultEach(t, env, ids)
}

// poolStack is a worker pool with a registry of the test's own tasks and
// an API server, both on the real servers (or the embedded backends when
// env names none), wired as run() wires them.
type poolStack struct {
	base    string
	backend *backends
	cfg     config
}

func startPoolStack(t *testing.T, env map[string]string, workers int, defs ...tasks.Definition) *poolStack {
	t.Helper()
	cfg, err := parseConfig([]string{"errand"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	m := testMetrics()
	ctx, cancel := context.WithCancel(context.Background())
	b, err := openBackends(ctx, cfg, log, m, disabledTracing().tracer)
	if err != nil {
		t.Fatal(err)
	}
	reg := tasks.NewRegistry(tasks.Config{})
	for _, d := range defs {
		reg.Register(d)
	}
	flows := b.workflowEngine(time.Hour, log, disabledTracing())
	pool := newWorkerPool(b.queue, reg, b.statuses, b.results, b.revoked, b.keyStores(), flows,
		workerConfig{size: workers, resultTTL: time.Hour, drainTimeout: 5 * time.Second}, log, m, disabledTracing())
	pool.jitter = func() float64 { return 0 }
	done := make(chan error, 1)
	go func() { done <- pool.run(ctx) }()
	api := newTaskAPI(cfg, b, reg, log, m, disabledTracing())
	srv := httptest.NewServer(newServer(serverDeps{log: log, items: b.items, registry: reg, specs: api.specs, submitter: api.submitter, reader: api.reader, canceller: api.canceller, watcher: b.watcher,
		schedules: scheduleRoutes{store: b.schedules, specs: api.specs, maxBody: 1 << 20, now: time.Now},
		workflows: workflowRoutes{engine: flows, specs: api.specs, submitter: api.submitter, maxBody: 1 << 20, now: time.Now},
		dead:      deadLetterRoutes{queue: b.dead, specs: api.specs, submitter: api.submitter},
		health:    b.health, backends: b.mode, maxBody: 1 << 20, healthTimeout: time.Second,
		now: time.Now, serveAPI: true, metrics: m, tracing: disabledTracing()}))
	t.Cleanup(func() {
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("pool.run: %v", err)
		}
		b.close()
	})
	return &poolStack{base: srv.URL, backend: b, cfg: cfg}
}

// submit queues a task of the test's own type through the publisher.
func (s *poolStack) submit(t *testing.T, taskType string, args any) string {
	t.Helper()
	sub := quietSubmitter(s.backend)
	res, err := sub.submit(context.Background(), specOf(t, taskType, args), "")
	if err != nil {
		t.Fatalf("submit %s: %v", taskType, err)
	}
	return res.id
}
