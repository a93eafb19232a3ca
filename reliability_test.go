package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"errand/tasks"
)

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
	m := newMetrics("test")
	ctx, cancel := context.WithCancel(context.Background())
	b, err := openBackends(ctx, cfg, log, m, disabledTracing().tracer)
	if err != nil {
		t.Fatal(err)
	}
	reg := tasks.NewRegistry(tasks.Config{})
	for _, d := range defs {
		reg.Register(d)
	}
	pool := &workerPool{size: workers, queue: b.queue, registry: reg, statuses: b.statuses, results: b.results,
		resultTTL: time.Hour, drainTimeout: 5 * time.Second, log: log, now: time.Now, metrics: m,
		jitter: func() float64 { return 0 }, tracing: disabledTracing()}
	done := make(chan error, 1)
	go func() { done <- pool.run(ctx) }()
	srv := httptest.NewServer(newServer(serverDeps{log: log, items: b.items, statuses: b.statuses, results: b.results,
		publisher: b.publisher, health: b.health, backends: b.mode, maxBody: 1 << 20, healthTimeout: time.Second,
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
	res, err := sub.submit(context.Background(), taskType, args, "normal", "")
	if err != nil {
		t.Fatalf("submit %s: %v", taskType, err)
	}
	return res.id
}

// deadLetters drains the dead-letter queue and returns the reasons of its
// messages by task id.
func deadLetters(t *testing.T, queue string) map[string]string {
	t.Helper()
	ch, closeChannel := testAMQPChannel(t)
	defer closeChannel()
	out := map[string]string{}
	for {
		d, ok, err := ch.Get(queue+".dead", false)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return out
		}
		reason, _ := d.Headers["x-errand-reason"].(string)
		id := d.MessageId
		if id == "" {
			id = "(none)"
		}
		out[id] = reason
	}
}

// TestRetriesThenSucceeds: a task that fails twice is retried from a delay
// queue, its status showing RETRY with the attempt count and the last
// error while it waits, and ends SUCCESS on its third attempt.
func TestRetriesThenSucceeds(t *testing.T) {
	env := realStack(t)
	var runs atomic.Int32
	flaky := tasks.Definition{Name: "flaky", Policy: tasks.Policy{MaxRetries: 3, BackoffBase: 2 * time.Second, BackoffMax: 2 * time.Second, TimeLimit: 10 * time.Second},
		Run: func(ctx context.Context, id string, _ json.RawMessage, _ tasks.ReportFunc) (any, error) {
			if n := runs.Add(1); n <= 2 {
				return nil, fmt.Errorf("transient failure %d", n)
			}
			return map[string]any{"ok": true}, nil
		}}
	s := startPoolStack(t, env, 2, flaky)
	id := s.submit(t, "flaky", map[string]any{})

	retry := waitForStatus(t, s.base, id, stateRetry, 20*time.Second)
	if retry.Attempts < 1 || !strings.HasPrefix(retry.Error, "transient failure") || retry.RetryAt == nil {
		t.Errorf("status while waiting = %+v, want RETRY with attempts, the last error and retry_at", retry)
	}
	done := waitForStatus(t, s.base, id, stateSuccess, 30*time.Second)
	if done.Attempts != 3 || runs.Load() != 3 || done.Result["ok"] != true {
		t.Errorf("final status %+v after %d runs, want SUCCESS on attempt 3", done, runs.Load())
	}
	assertOneResultEach(t, env, []string{id})
}

// TestFailureAfterRetriesIsDeadLettered: a task that always fails ends
// FAILURE after its retries, with the reason, in the dead-letter queue and
// in GET /api/tasks?status=FAILURE; POST /api/tasks/{id}/retry runs it
// again as a new task.
func TestFailureAfterRetriesIsDeadLettered(t *testing.T) {
	env := realStack(t)
	var runs atomic.Int32
	broken := tasks.Definition{Name: "broken", Policy: tasks.Policy{MaxRetries: 1, BackoffBase: time.Second, BackoffMax: time.Second, TimeLimit: 10 * time.Second},
		Run: func(context.Context, string, json.RawMessage, tasks.ReportFunc) (any, error) {
			runs.Add(1)
			return nil, errors.New("smtp server refused")
		}}
	s := startPoolStack(t, env, 2, broken)
	id := s.submit(t, "broken", map[string]any{"to": "x@example.com"})
	st := waitForStatus(t, s.base, id, stateFailure, 30*time.Second)
	if st.Error != "failed after 2 attempts: smtp server refused" || st.Attempts != 2 || runs.Load() != 2 {
		t.Errorf("status = %+v after %d runs, want FAILURE after 2 attempts with the reason", st, runs.Load())
	}
	var listed []taskStatus
	if code := apiCall(t, "GET", s.base+"/api/tasks?status=FAILURE", "", &listed); code != http.StatusOK || len(listed) != 1 || listed[0].TaskID != id {
		t.Errorf("GET /api/tasks?status=FAILURE: %d %+v, want the failed task", code, listed)
	}
	waitFor(t, 10*time.Second, "the dead letter", func() bool { return queueDepth(t, env["QUEUE_NAME"]+".dead") == 1 })
	if dead := deadLetters(t, env["QUEUE_NAME"]); dead[id] != st.Error {
		t.Errorf("dead letters = %v, want %s with reason %q", dead, id, st.Error)
	}

	var acc retryAccepted
	if code := apiCall(t, "POST", s.base+"/api/tasks/"+id+"/retry", "", &acc); code != http.StatusAccepted || acc.RetryOf != id || acc.TaskID == id {
		t.Fatalf("POST retry: %d %+v, want 202 with a new task id", code, acc)
	}
	waitForStatus(t, s.base, acc.TaskID, stateFailure, 30*time.Second)
	if runs.Load() != 4 {
		t.Errorf("runs = %d after the retry, want 4 (the retried task ran with its own retries)", runs.Load())
	}
	if code := apiCall(t, "POST", s.base+"/api/tasks/6d1f1c2e-0000-4000-8000-000000000000/retry", "", nil); code != http.StatusNotFound {
		t.Errorf("retry of an unknown task: %d, want 404", code)
	}
}

// TestPoisonMessagesAreDeadLettered: an undecodable body and an unknown
// task type go to the dead-letter queue at once, with their reasons.
func TestPoisonMessagesAreDeadLettered(t *testing.T) {
	env := realStack(t)
	s := startPoolStack(t, env, 1)
	b := s.backend.queue.(*amqpBroker)
	garbage := []byte("{not json")
	if err := b.publishTo(context.Background(), env["QUEUE_NAME"], "garbage-1", amqp.Publishing{Body: garbage}, nil); err != nil {
		t.Fatal(err)
	}
	id := newTaskID()
	if err := b.publish(context.Background(), taskMessage{ID: id, Type: "no_such_task", Args: []byte(`{}`), Priority: "normal", EnqueuedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st := waitForStatus(t, s.base, id, stateFailure, 20*time.Second)
	if st.Error != `unknown task type "no_such_task"` {
		t.Errorf("unknown type status error = %q", st.Error)
	}
	waitFor(t, 10*time.Second, "two dead letters", func() bool { return queueDepth(t, env["QUEUE_NAME"]+".dead") == 2 })
	dead := deadLetters(t, env["QUEUE_NAME"])
	if dead[id] != st.Error || !strings.HasPrefix(dead["(none)"], "undecodable message") {
		t.Errorf("dead letters = %v, want the unknown type and the undecodable body with reasons", dead)
	}
}

// TestTimeLimitCancels: a task past its time limit is cancelled and ends
// FAILURE, even one that ignores its context.
func TestTimeLimitCancels(t *testing.T) {
	env := realStack(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	obedient := tasks.Definition{Name: "obedient", Policy: tasks.Policy{TimeLimit: 200 * time.Millisecond},
		Run: func(ctx context.Context, _ string, _ json.RawMessage, _ tasks.ReportFunc) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}
	stubborn := tasks.Definition{Name: "stubborn", Policy: tasks.Policy{TimeLimit: 200 * time.Millisecond},
		Run: func(context.Context, string, json.RawMessage, tasks.ReportFunc) (any, error) {
			<-release // ignores its context entirely
			return map[string]any{}, nil
		}}
	s := startPoolStack(t, env, 2, obedient, stubborn)
	for _, name := range []string{"obedient", "stubborn"} {
		id := s.submit(t, name, map[string]any{})
		st := waitForStatus(t, s.base, id, stateFailure, 20*time.Second)
		if !strings.HasPrefix(st.Error, "time limit exceeded") {
			t.Errorf("%s: error %q, want time limit exceeded", name, st.Error)
		}
	}
}

// TestRedeliveryLimit: a message that keeps coming back unsettled (as when
// a task crashes its worker every time) is counted, and past the limit it
// ends FAILURE in the dead-letter queue instead of looping for ever.
func TestRedeliveryLimit(t *testing.T) {
	env := realStack(t)
	var runs atomic.Int32
	crashy := tasks.Definition{Name: "crashy", Run: func(context.Context, string, json.RawMessage, tasks.ReportFunc) (any, error) {
		runs.Add(1)
		return map[string]any{}, nil
	}}
	// Simulate the crashes: take the message without acking and drop the
	// connection, maxDeliveries-1 times over, each time republishing the
	// count the pool would have written.
	b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	id := newTaskID()
	msg := taskMessage{ID: id, Type: "crashy", Args: []byte(`{}`), Priority: "normal", EnqueuedAt: time.Now(), Deliveries: maxDeliveries - 1}
	if err := b.publish(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	conn, err := amqp.Dial(services.amqpURL)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	var got bool
	waitFor(t, 10*time.Second, "the message", func() bool {
		_, got, err = ch.Get(env["QUEUE_NAME"], false)
		return err != nil || got
	})
	conn.Close() // unacked: RabbitMQ requeues it, marked redelivered

	s := startPoolStack(t, env, 1, crashy)
	st := waitForStatus(t, s.base, id, stateFailure, 20*time.Second)
	if !strings.Contains(st.Error, fmt.Sprintf("delivered %d times", maxDeliveries)) || runs.Load() != 0 {
		t.Errorf("status %+v after %d runs, want FAILURE for the delivery limit without running", st, runs.Load())
	}
	waitFor(t, 10*time.Second, "the dead letter", func() bool { return queueDepth(t, env["QUEUE_NAME"]+".dead") == 1 })
}

// TestConsumerSurvivesConnectionClose: closing the worker's AMQP
// connection under running tasks (as `rabbitmqctl close_connection` does)
// loses nothing: the consumer redials and every task completes once.
func TestConsumerSurvivesConnectionClose(t *testing.T) {
	env := realStack(t)
	var mu sync.Mutex
	started := map[string]int{}
	slow := tasks.Definition{Name: "slow", Run: func(ctx context.Context, id string, _ json.RawMessage, _ tasks.ReportFunc) (any, error) {
		mu.Lock()
		started[id]++
		mu.Unlock()
		select {
		case <-time.After(300 * time.Millisecond):
			return map[string]any{"id": id}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	s := startPoolStack(t, env, 3, slow)
	ids := make([]string, 12)
	for i := range ids {
		ids[i] = s.submit(t, "slow", map[string]any{})
	}
	waitFor(t, 10*time.Second, "tasks running", func() bool { mu.Lock(); defer mu.Unlock(); return len(started) >= 2 })
	if n := closeConnections(t, "errand-consumer", os.Getpid()); n != 1 {
		t.Fatalf("closed %d consumer connections, want 1", n)
	}
	for _, id := range ids {
		waitForStatus(t, s.base, id, stateSuccess, 60*time.Second)
	}
	assertOneResultEach(t, env, ids)
}

// closeConnections closes, with rabbitmqctl close_connection, the
// RabbitMQ connections that process pid opened for purpose ("errand-consumer"
// or "errand-publisher"), and returns how many it closed.
func closeConnections(t testing.TB, purpose string, pid int) int {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "list_connections", "pid", "client_properties", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_connections: %v\n%s", err, out)
	}
	closed := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, `"`+purpose+" ") || !strings.Contains(line, fmt.Sprintf(" pid %d\"", pid)) {
			continue
		}
		connPid, _, _ := strings.Cut(line, "\t")
		if out, err := exec.Command("rabbitmqctl", "close_connection", connPid, "closed by an errand test").CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl close_connection %s: %v\n%s", connPid, err, out)
		}
		closed++
	}
	return closed
}
