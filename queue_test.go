package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"

	"errand/tasks"
)

// TestPriorityReorders queues a backlog of low-priority tasks for a single
// worker, then one high-priority task, and checks that the high one
// finishes before most of the backlog that was queued ahead of it.
func TestPriorityReorders(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			e := env(t)
			e["WORKERS"] = "1"
			e["HEAVY_TASK_DELAY"] = "40ms"
			base := startErrand(t, e)
			const backlog = 12
			var lows []string
			for i := range backlog {
				lows = append(lows, submitTask(t, base, fmt.Sprintf(`{"data": "low %d", "iterations": 2, "priority": "low"}`, i)))
			}
			// Lows that finish while the backlog is still being submitted
			// (a loaded machine submits slowly) were never behind the high
			// one; only those finishing after it was submitted count.
			highSubmitted := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
			high := submitTask(t, base, `{"data": "urgent", "iterations": 2, "priority": "high"}`)

			highDone := waitForStatus(t, base, high, stateSuccess, 30*time.Second).Result["completed_at"].(string)
			overtook, waited := 0, 0
			for _, id := range lows {
				low := waitForStatus(t, base, id, stateSuccess, 30*time.Second).Result["completed_at"].(string)
				if low >= highSubmitted && low < highDone {
					overtook++
				}
				if low >= highDone {
					waited++
				}
			}
			if overtook+waited < backlog/2 {
				t.Fatalf("only %d of %d low-priority tasks were still queued when the high one came: the backlog did not test priority", overtook+waited, backlog)
			}
			// One low task is running when the high one arrives and, at most,
			// one more is already prefetched; every other one must wait.
			if overtook > 2 {
				t.Errorf("%d of %d earlier low-priority tasks finished between the high-priority one's submit and its end, want at most 2", overtook, backlog)
			}
		})
	}
}

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

func withEnv(env map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for key, val := range env {
		if key != k {
			out[key] = val
		}
	}
	return out
}

func countStatuses(t testing.TB, base string, ids []string) map[string]int {
	t.Helper()
	counts := map[string]int{}
	for _, id := range ids {
		var st taskStatus
		if code := apiCall(t, "GET", base+"/api/async/status/"+id, "", &st); code != http.StatusOK {
			t.Fatalf("status of %s: %d", id, code)
		}
		counts[st.Status]++
	}
	return counts
}

// assertOneResultEach checks task_results holds exactly one document per
// id and nothing else.
func assertOneResultEach(t testing.TB, env map[string]string, ids []string) {
	t.Helper()
	ctx := context.Background()
	coll := testMongoAt(t, env["MONGODB_URI"]).Database(env["MONGODB_DATABASE"]).Collection("task_results")
	cur, err := coll.Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []struct {
		ID     string `bson:"_id"`
		Status string `bson:"status"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, d := range docs {
		seen[d.ID]++
		if d.Status != stateSuccess {
			t.Errorf("result of %s is %s, want SUCCESS", d.ID, d.Status)
		}
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("task %s has %d result documents, want 1", id, seen[id])
		}
	}
	if len(docs) != len(ids) {
		t.Errorf("task_results holds %d documents, want %d", len(docs), len(ids))
	}
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
		apiCall(t, "GET", api+"/api/async/status/"+id, "", &st)
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
		apiCall(t, "GET", api+"/api/async/status/"+id, "", &st)
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

// TestSubmitWhenBrokerDown: with RabbitMQ unreachable a submit answers 503
// quickly and leaves no status behind.
func TestSubmitWhenBrokerDown(t *testing.T) {
	env := realStack(t)
	env["AMQP_URL"] = "amqp://guest:guest@" + freeAddr(t) + "/"
	env["ROLE"] = "api"
	base := startErrand(t, env)
	for range 3 {
		start := time.Now()
		var body errorBody
		code := apiCall(t, "POST", base+"/api/async/process", `{"data": "x"}`, &body)
		if code != http.StatusServiceUnavailable || body.Error != "unavailable" || body.RequestID == "" {
			t.Errorf("submit with the broker down: %d %+v, want 503 unavailable with a request id", code, body)
		}
		if took := time.Since(start); took > 6*time.Second {
			t.Errorf("503 took %v, want it within the publish timeout", took)
		}
	}
	keys, err := testRedis(t).Keys(context.Background(), env["REDIS_KEY_PREFIX"]+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 {
		t.Errorf("status keys left after failed submits: %v, want none", keys)
	}
	var h healthResponse
	if code := apiCall(t, "GET", base+"/health", "", &h); code != http.StatusServiceUnavailable || h.Services["rabbitmq"] != "disconnected" || h.Services["redis"] != "connected" {
		t.Errorf("health with the broker down: %d %+v, want 503 naming rabbitmq", code, h)
	}
}

// TestUnroutablePublishIsRefused: a message the broker cannot route (its
// queue was deleted under the publisher) is an error, not a silent loss.
func TestUnroutablePublishIsRefused(t *testing.T) {
	env := realStack(t)
	b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	msg := taskMessage{ID: "first", Type: tasks.HeavyTaskName, Args: []byte(`{}`), Priority: "normal"}
	if err := b.publish(context.Background(), msg); err != nil {
		t.Fatalf("publish to the declared queue: %v", err)
	}
	ch, closeChannel := testAMQPChannel(t)
	defer closeChannel()
	if _, err := ch.QueueDelete(env["QUEUE_NAME"], false, false, false); err != nil {
		t.Fatal(err)
	}
	msg.ID = "second"
	if err := b.publish(context.Background(), msg); err == nil {
		t.Fatal("publish to a deleted queue succeeded, want an unroutable error")
	}
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
	id := newTaskID()
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

// TestStatusFallsBackToResultStore: once the final status expires from
// Redis, the status endpoint answers from MongoDB.
func TestStatusFallsBackToResultStore(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	env["RESULT_TTL"] = "300ms"
	base := startErrand(t, env)
	id := submitTask(t, base, `{"data": "short lived", "iterations": 2}`)
	live := waitForStatus(t, base, id, stateSuccess, 30*time.Second)
	rdb := testRedis(t)
	waitFor(t, 10*time.Second, "the Redis status to expire", func() bool {
		n, err := rdb.Exists(context.Background(), env["REDIS_KEY_PREFIX"]+"task:"+id).Result()
		return err == nil && n == 0
	})
	var fromMongo taskStatus
	if code := apiCall(t, "GET", base+"/api/async/status/"+id, "", &fromMongo); code != http.StatusOK {
		t.Fatalf("status after expiry: %d, want 200", code)
	}
	if fromMongo.Status != stateSuccess || fromMongo.Result["completed_at"] != live.Result["completed_at"] || fromMongo.Result["total_processed"] != float64(2) {
		t.Errorf("status from MongoDB = %+v, want the SUCCESS seen live (%+v)", fromMongo, live)
	}
}

// sortedKeys is for stable failure messages.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
