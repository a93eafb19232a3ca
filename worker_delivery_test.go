package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.mongodb.org/mongo-driver/v2/bson"

	"errand/tasks"
)

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
		Run: func(context.Context, tasks.Task, json.RawMessage) (any, error) {
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
		Run: func(context.Context, tasks.Task, json.RawMessage) (any, error) {
			runs.Add(1)
			return nil, errors.New("smtp server refused")
		}}
	s := startPoolStack(t, env, 2, broken)
	id := s.submit(t, "broken", map[string]any{"to": "x@example.com"})
	st := waitForStatus(t, s.base, id, stateFailure, 30*time.Second)
	if st.Error != "failed after 2 attempts: smtp server refused" || st.Attempts != 2 || runs.Load() != 2 {
		t.Errorf("status = %+v after %d runs, want FAILURE after 2 attempts with the reason", st, runs.Load())
	}
	var listed taskListJSON
	if code := apiCall(t, "GET", s.base+"/api/tasks?status=FAILURE", "", nil, &listed).StatusCode; code != http.StatusOK || len(listed.Tasks) != 1 || listed.Tasks[0].TaskID != id {
		t.Errorf("GET /api/tasks?status=FAILURE: %d %+v, want the failed task", code, listed)
	}
	waitFor(t, 10*time.Second, "the dead letter", func() bool { return queueDepth(t, env["QUEUE_NAME"]+".dead") == 1 })
	if dead := deadLetters(t, env["QUEUE_NAME"]); dead[id] != st.Error {
		t.Errorf("dead letters = %v, want %s with reason %q", dead, id, st.Error)
	}

	var acc retryAccepted
	if code := apiCall(t, "POST", s.base+"/api/tasks/"+id+"/retry", "", nil, &acc).StatusCode; code != http.StatusAccepted || acc.RetryOf != id || acc.TaskID == id {
		t.Fatalf("POST retry: %d %+v, want 202 with a new task id", code, acc)
	}
	waitForStatus(t, s.base, acc.TaskID, stateFailure, 30*time.Second)
	if runs.Load() != 4 {
		t.Errorf("runs = %d after the retry, want 4 (the retried task ran with its own retries)", runs.Load())
	}
	if code := apiCall(t, "POST", s.base+"/api/tasks/6d1f1c2e-0000-4000-8000-000000000000/retry", "", nil, nil).StatusCode; code != http.StatusNotFound {
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
	id := newUUID()
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

// TestRedeliveryLimit: a message that keeps coming back unsettled (as when
// a task crashes its worker every time) is counted, and past the limit it
// ends FAILURE in the dead-letter queue instead of looping for ever.
func TestRedeliveryLimit(t *testing.T) {
	env := realStack(t)
	var runs atomic.Int32
	crashy := tasks.Definition{Name: "crashy", Run: func(context.Context, tasks.Task, json.RawMessage) (any, error) {
		runs.Add(1)
		return map[string]any{}, nil
	}}
	// Simulate the crashes: take the message without acking and drop the
	// connection, maxDeliveries-1 times over, each time republishing the
	// count the pool would have written.
	b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	id := newUUID()
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

// TestDuplicateDeliveryOneResult puts the same task on the queue twice, as
// a redelivery would: one result document, one consistent status.
func TestDuplicateDeliveryOneResult(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	env["WORKERS"] = "2"
	base := startErrand(t, env)
	b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	id := newUUID()
	args, _ := json.Marshal(tasks.HeavyArgs{Data: "dup", Iterations: 3})
	for range 3 {
		if err := b.publish(context.Background(), taskMessage{ID: id, Type: tasks.HeavyTaskName, Args: args, Priority: "normal", EnqueuedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	first := waitForStatus(t, base, id, stateSuccess, 30*time.Second)
	waitFor(t, 30*time.Second, "the duplicates consumed", func() bool { return queueDepth(t, env["QUEUE_NAME"]) == 0 })
	assertOneResultEach(t, env, []string{id})
	last := waitForStatus(t, base, id, stateSuccess, 5*time.Second)
	stored, err := (&mongoStore{results: testMongo(t).Database(env["MONGODB_DATABASE"]).Collection("task_results")}).getResult(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if last.Result["completed_at"] != stored.Result["completed_at"] {
		t.Errorf("status result completed_at %v, stored %v: want the status to show the stored result (first was %v)",
			last.Result["completed_at"], stored.Result["completed_at"], first.Result["completed_at"])
	}
}

// TestTaskThatComesEarlyWaitsForItsTime: a message on the work queue
// before its ETA (as one from a coarse delay queue comes) goes back to
// wait for the rest and runs at its time, once.
func TestTaskThatComesEarlyWaitsForItsTime(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			var mu sync.Mutex
			var started []time.Time
			s := startPoolStack(t, env(t), 2, tasks.Definition{Name: "stamp", Run: func(context.Context, tasks.Task, json.RawMessage) (any, error) {
				mu.Lock()
				started = append(started, time.Now())
				mu.Unlock()
				return map[string]any{}, nil
			}})
			eta := time.Now().Add(1500 * time.Millisecond)
			msg := taskMessage{ID: newUUID(), Type: "stamp", Args: []byte(`{}`), Priority: "normal", EnqueuedAt: time.Now(), ETA: eta}
			if err := s.backend.publisher.publish(context.Background(), msg); err != nil {
				t.Fatal(err)
			}
			waitForStatus(t, s.base, msg.ID, stateSuccess, 10*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if len(started) != 1 {
				t.Fatalf("runs: %d, want 1", len(started))
			}
			if early := eta.Sub(started[0]); early > etaTolerance {
				t.Errorf("ran %v before its ETA, want at most %v", early, etaTolerance)
			}
			if late := started[0].Sub(eta); late > time.Second {
				t.Errorf("ran %v after its ETA, want within a second", late)
			}
		})
	}
}

// TestCancelledTaskNeverRuns: a task cancelled while it waits in the queue
// ends REVOKED and its handler never runs, although its message is still
// delivered.
func TestCancelledTaskNeverRuns(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			release := make(chan struct{})
			var runs atomic.Int32
			s := startPoolStack(t, env(t), 1,
				tasks.Definition{Name: "blocker", Run: func(ctx context.Context, _ tasks.Task, _ json.RawMessage) (any, error) {
					<-release
					return map[string]any{}, nil
				}},
				tasks.Definition{Name: "counted", Run: func(context.Context, tasks.Task, json.RawMessage) (any, error) {
					runs.Add(1)
					return map[string]any{}, nil
				}})
			blocker := s.submit(t, "blocker", map[string]any{})
			waitFor(t, 10*time.Second, "the one worker busy", func() bool { return countStatuses(t, s.base, []string{blocker})[stateProgress] == 1 })
			id := s.submit(t, "counted", map[string]any{})
			var task taskJSON
			if code := apiCall(t, "POST", s.base+"/api/tasks/"+id+"/cancel", "", nil, &task).StatusCode; code != http.StatusOK || task.Status != stateRevoked {
				t.Fatalf("cancel of a queued task: %d %+v, want 200 REVOKED", code, task)
			}
			// One worker takes the queue in order: once a task submitted
			// after the cancelled one has run, the cancelled one's message
			// has been delivered too.
			tail := s.submit(t, "blocker", map[string]any{})
			close(release)
			waitForStatus(t, s.base, tail, stateSuccess, 10*time.Second)
			if n := runs.Load(); n != 0 {
				t.Errorf("the cancelled task ran %d times, want never", n)
			}
			if st := waitForStatus(t, s.base, id, stateRevoked, time.Second); st.Status != stateRevoked {
				t.Errorf("status %+v, want REVOKED", st)
			}
		})
	}
}

// TestCancelRunningTaskStopsItsHandler: a running task's context is
// cancelled in the worker that runs it, and the task ends REVOKED with
// who cancelled it.
func TestCancelRunningTaskStopsItsHandler(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			stopped := make(chan error, 1)
			s := startPoolStack(t, env(t), 2, tasks.Definition{Name: "long", Policy: tasks.Policy{MaxRetries: 3, BackoffBase: time.Second, BackoffMax: time.Second},
				Run: func(ctx context.Context, task tasks.Task, _ json.RawMessage) (any, error) {
					task.Report(ctx, tasks.Progress{Percent: 1, Status: "working"})
					<-ctx.Done()
					stopped <- context.Cause(ctx)
					return nil, ctx.Err()
				}})
			id := s.submit(t, "long", map[string]any{})
			waitForStatus(t, s.base, id, stateProgress, 10*time.Second)
			var task taskJSON
			if code := apiCall(t, "POST", s.base+"/api/tasks/"+id+"/cancel", "", nil, &task).StatusCode; code != http.StatusOK || task.Status != stateProgress {
				t.Fatalf("cancel of a running task: %d %+v, want 200 with it still PROGRESS", code, task)
			}
			select {
			case cause := <-stopped:
				if !errors.Is(cause, errRevoked) {
					t.Errorf("the handler's context ended with %v, want the cancel", cause)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the running handler was not stopped within 10s of the cancel")
			}
			st := waitForStatus(t, s.base, id, stateRevoked, 10*time.Second)
			var done taskJSON
			apiCall(t, "GET", s.base+"/api/tasks/"+id, "", nil, &done)
			if done.Revoked == nil || done.Attempts != 1 {
				t.Errorf("task after its cancel: %+v (status %+v), want REVOKED with the cancel, after one attempt and no retry", done, st)
			}
		})
	}
}

// TestCancelRacingCompletionEndsOnce: cancels that race their tasks' ends
// leave every task with one terminal state, the same in the status and in
// the one result document.
func TestCancelRacingCompletionEndsOnce(t *testing.T) {
	env := realStack(t)
	s := startPoolStack(t, env, 8, tasks.Definition{Name: "quick", Run: func(ctx context.Context, _ tasks.Task, args json.RawMessage) (any, error) {
		var a struct{ Sleep int }
		_ = json.Unmarshal(args, &a)
		select {
		case <-time.After(time.Duration(a.Sleep) * time.Millisecond):
			return map[string]any{}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}})
	const n = 40
	ids := make([]string, n)
	for i := range ids {
		ids[i] = s.submit(t, "quick", map[string]any{"sleep": i % 20})
	}
	inParallel(t, n, func(i int, fail func(error)) {
		time.Sleep(time.Duration(i%15) * time.Millisecond)
		resp := apiCall(t, "POST", s.base+"/api/tasks/"+ids[i]+"/cancel", "", nil, nil)
		if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusConflict {
			fail(fmt.Errorf("cancel %s: %d %s", ids[i], resp.StatusCode, resp.body))
		}
	})
	coll := testMongoAt(t, env["MONGODB_URI"]).Database(env["MONGODB_DATABASE"]).Collection("task_results")
	ended := map[string]int{}
	for _, id := range ids {
		var st taskStatus
		waitFor(t, 20*time.Second, "task "+id+" to end", func() bool {
			apiCall(t, "GET", s.base+"/api/async/status/"+id, "", nil, &st)
			return st.final()
		})
		var docs []struct {
			Status string `bson:"status"`
		}
		cur, err := coll.Find(context.Background(), bson.D{{Key: "_id", Value: id}})
		if err != nil || cur.All(context.Background(), &docs) != nil {
			t.Fatalf("read the result of %s: %v", id, err)
		}
		if len(docs) != 1 || docs[0].Status != st.Status {
			t.Errorf("task %s: status %s, result documents %+v; want one, the same", id, st.Status, docs)
		}
		ended[st.Status]++
	}
	t.Logf("ends: %v", ended)
	if ended[stateSuccess]+ended[stateRevoked] != n {
		t.Errorf("ends %v, want every task SUCCESS or REVOKED", ended)
	}
}
