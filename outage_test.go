package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The outage tests stop a real dependency under a running errand and
// check that every accepted task still ends SUCCESS with one result.

// startRedisServer runs a private redis-server on addr (a fresh port when
// addr is empty) and returns its address and a stop function.
func startRedisServer(t *testing.T, addr string) (string, func()) {
	t.Helper()
	if addr == "" {
		addr = freeAddr(t)
	}
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("redis-server", "--bind", host, "--port", port, "--save", "", "--appendonly", "no")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	waitFor(t, 10*time.Second, "redis-server on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return addr, stop
}

// TestRedisOutageDuringProcessing: Redis refuses writes and then dies and
// comes back empty while tasks run. Tasks still complete with their results
// in MongoDB, status reads fall back to MongoDB, and no task stays in
// PROGRESS once Redis is back.
func TestRedisOutageDuringProcessing(t *testing.T) {
	needsServices(t)
	addr, stop := startRedisServer(t, "")
	env := realStack(t)
	env["REDIS_URL"] = "redis://" + addr + "/0"
	env["HEAVY_TASK_DELAY"] = "100ms"
	env["WORKERS"] = "3"
	base := startErrand(t, env)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()

	ids := make([]string, 6)
	for i := range ids {
		ids[i] = submitTask(t, base, fmt.Sprintf(`{"data": "r%d", "iterations": 10}`, i))
	}
	waitFor(t, 20*time.Second, "tasks in progress", func() bool { return countStatuses(t, base, ids)[stateProgress] > 0 })

	// Writes block for 3 s: progress and final status writes time out.
	if err := rdb.Do(context.Background(), "CLIENT", "PAUSE", "3000", "WRITE").Err(); err != nil {
		t.Fatalf("CLIENT PAUSE: %v", err)
	}
	time.Sleep(3500 * time.Millisecond) // the outage itself: nothing to poll for
	// Then Redis dies and returns empty, as a Redis without persistence does.
	stop()
	var code int
	var body errorBody
	code = apiCall(t, "POST", base+"/api/async/process", `{"data": "during the outage"}`, nil, &body).StatusCode
	if code != http.StatusServiceUnavailable {
		t.Errorf("submit with Redis down: %d %+v, want 503", code, body)
	}
	startRedisServer(t, addr)

	for _, id := range ids {
		waitForStatus(t, base, id, stateSuccess, 60*time.Second)
	}
	assertOneResultEach(t, env, ids)
}

// TestMongoOutageDuringProcessing: the MongoDB-wire server dies while tasks
// run. Their deliveries stay unacked while results cannot be stored, and
// once the server is back every task ends with exactly one result.
// stoppableMongo is a MongoDB-wire server of a test's own, whatever
// MONGODB_URI says, so the test can stop it and start it again on the
// same address and data.
type stoppableMongo struct {
	uri     string
	dataDir string
	stop    func()
}

// realStackOnOwnMongo is realStack with MONGODB_URI on a server of the
// test's own.
func realStackOnOwnMongo(t *testing.T) (map[string]string, *stoppableMongo) {
	t.Helper()
	needsServices(t)
	m := &stoppableMongo{dataDir: t.TempDir()}
	var err error
	if m.uri, m.stop, err = startMongoWireAt("127.0.0.1:0", m.dataDir); err != nil {
		t.Fatal(err)
	}
	// Registered before realStack's cleanup, so it runs after it: the
	// test database is dropped while the server still runs.
	t.Cleanup(func() { m.stop() })
	env := realStack(t)
	env["MONGODB_URI"] = m.uri
	return env, m
}

// restart starts the stopped server again where it was.
func (m *stoppableMongo) restart(t *testing.T) {
	t.Helper()
	addr := strings.TrimSuffix(strings.TrimPrefix(m.uri, "mongodb://"), "/")
	uri, stop, err := startMongoWireAt(addr, m.dataDir)
	if err != nil {
		t.Fatal(err)
	}
	m.stop = stop
	if uri != m.uri {
		t.Fatalf("restarted server at %s, want %s", uri, m.uri)
	}
}

func TestMongoOutageDuringProcessing(t *testing.T) {
	env, mongo := realStackOnOwnMongo(t)
	env["HEAVY_TASK_DELAY"] = "100ms"
	env["WORKERS"] = "3"
	base := startErrand(t, env)
	ids := make([]string, 6)
	for i := range ids {
		ids[i] = submitTask(t, base, fmt.Sprintf(`{"data": "m%d", "iterations": 15}`, i))
	}
	waitFor(t, 20*time.Second, "tasks in progress", func() bool { return countStatuses(t, base, ids)[stateProgress] > 0 })
	mongo.stop()
	time.Sleep(2 * time.Second) // the outage: tasks finish running and cannot store results
	if counts := countStatuses(t, base, ids); counts[stateSuccess] == len(ids) {
		t.Fatalf("all tasks SUCCESS during the outage (%v); the test did not overlap the outage", counts)
	}
	mongo.restart(t)
	for _, id := range ids {
		waitForStatus(t, base, id, stateSuccess, 60*time.Second)
	}
	assertOneResultEach(t, env, ids)
}

// TestRabbitMQRestartWithBacklog stops RabbitMQ (rabbitmqctl stop_app) with
// a backlog queued and tasks running, checks that submits fail fast with
// 503 meanwhile, starts it again, and checks that every accepted task
// completes exactly once: publisher and consumers reconnect by themselves.
func TestRabbitMQRestartWithBacklog(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "50ms"
	env["WORKERS"] = "2"
	env["PUBLISH_TIMEOUT"] = "2s"
	base := startErrand(t, env)
	ids := make([]string, 10)
	for i := range ids {
		ids[i] = submitTask(t, base, fmt.Sprintf(`{"data": "b%d", "iterations": 6}`, i))
	}
	waitFor(t, 20*time.Second, "tasks in progress", func() bool { return countStatuses(t, base, ids)[stateProgress] > 0 })
	rabbitmqctl(t, "stop_app")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			rabbitmqctl(t, "start_app")
		}
	})
	for range 3 {
		start := time.Now()
		if code := apiCall(t, "POST", base+"/api/async/process", `{"data": "during the outage"}`, nil, nil).StatusCode; code != http.StatusServiceUnavailable {
			t.Errorf("submit with RabbitMQ stopped: %d, want 503", code)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("503 took %v, want it within the publish timeout", took)
		}
	}
	time.Sleep(2 * time.Second) // an outage longer than a few redial attempts
	rabbitmqctl(t, "start_app")
	restarted = true
	for _, id := range ids {
		waitForStatus(t, base, id, stateSuccess, 90*time.Second)
	}
	// Submits work again once the publisher has redialled.
	waitFor(t, 30*time.Second, "a submit to succeed again", func() bool {
		return apiCall(t, "POST", base+"/api/async/process", `{"data": "after", "iterations": 1}`, nil, nil).StatusCode == http.StatusAccepted
	})
	assertOneResultEach(t, env, ids)
}

func rabbitmqctl(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command("rabbitmqctl", args...).CombinedOutput(); err != nil {
		t.Fatalf("rabbitmqctl %v: %v\n%s", args, err, out)
	}
}

// TestScheduledTaskSurvivesRestarts: a task scheduled for later waits in
// RabbitMQ, not in errand, so it runs at its time although every errand
// process was SIGKILLed and RabbitMQ restarted in between.
func TestScheduledTaskSurvivesRestarts(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	first := startChild(t, env)
	var acc taskAccepted
	if code := apiCall(t, "POST", first.base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "after restarts", "iterations": 2}, "countdown": 8}`, nil, &acc).StatusCode; code != http.StatusAccepted {
		t.Fatalf("submit: %d", code)
	}
	due := time.Now().Add(8 * time.Second)
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.wait(t, 10*time.Second)
	rabbitmqctl(t, "stop_app")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			rabbitmqctl(t, "start_app")
		}
	})
	rabbitmqctl(t, "start_app")
	restarted = true
	second := startChild(t, env)
	var st taskStatus
	apiCall(t, "GET", second.base+"/api/async/status/"+acc.TaskID, "", nil, &st)
	if st.Status != stateScheduled && time.Now().Before(due) {
		t.Errorf("after the restarts, before its time, the task is %s, want SCHEDULED", st.Status)
	}
	st = waitForStatus(t, second.base, acc.TaskID, stateSuccess, 60*time.Second)
	if finished := st.UpdatedAt; finished.Before(due.Add(-etaTolerance)) {
		t.Errorf("finished at %v, before its time %v", finished, due)
	}
	assertOneResultEach(t, env, []string{acc.TaskID})
}

// TestUnconfirmedSubmitIsNotARefusal: a submit whose publish RabbitMQ
// took but did not confirm in time (its memory alarm, set to block every
// publisher, holds the message) answers 503 "unconfirmed" naming the
// task, which stays queryable; a retry with the same Idempotency-Key
// answers with that task, unconfirmed still, and publishes no other; once
// the broker takes its messages again, the task runs, once, and a retry
// with the key answers 202 with it. A definite refusal (no broker
// to connect to) names no task, and leaves none.
func TestUnconfirmedSubmitIsNotARefusal(t *testing.T) {
	env := realStack(t)
	env["PUBLISH_TIMEOUT"], env["HEAVY_TASK_DELAY"] = "1s", "1ms"
	base := startErrand(t, env)
	submit := func(key string) (int, submitAnswer) {
		var a submitAnswer
		ans := apiCall(t, "POST", base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "doubt", "iterations": 1}}`,
			map[string]string{"Idempotency-Key": key}, &a)
		return ans.StatusCode, a
	}

	rabbitmqctl(t, "set_vm_memory_high_watermark", "0")
	alarmOn := true
	lift := func() {
		if alarmOn {
			rabbitmqctl(t, "set_vm_memory_high_watermark", "0.4")
			alarmOn = false
		}
	}
	t.Cleanup(lift)
	code, first := submit("order-1")
	if code != http.StatusServiceUnavailable || first.Error != "unconfirmed" || first.TaskID == "" {
		t.Fatalf("submit while the broker holds publishes: %d %+v, want 503 unconfirmed naming the task", code, first)
	}
	var task taskJSON
	if c := apiCall(t, "GET", base+"/api/tasks/"+first.TaskID, "", nil, &task).StatusCode; c != http.StatusOK || task.Status != statePending {
		t.Errorf("the unconfirmed task: %d %s, want it there, PENDING", c, task.Status)
	}
	code, again := submit("order-1")
	if code != http.StatusServiceUnavailable || again.Error != "unconfirmed" || again.TaskID != first.TaskID {
		t.Errorf("retry with the key while unconfirmed: %d %+v, want 503 unconfirmed naming task %s", code, again, first.TaskID)
	}
	lift()
	waitForStatus(t, base, first.TaskID, stateSuccess, 30*time.Second)
	if code, last := submit("order-1"); code != http.StatusAccepted || last.TaskID != first.TaskID {
		t.Errorf("retry with the key once the task ran: %d %+v, want 202 with task %s", code, last, first.TaskID)
	}
	time.Sleep(500 * time.Millisecond) // a second copy, had the retry published one, would have run by now
	var list taskListJSON
	apiCall(t, "GET", base+"/api/tasks?type=process_heavy_task", "", nil, &list)
	if len(list.Tasks) != 1 || list.Tasks[0].Attempts != 1 {
		t.Errorf("tasks after the broker let go: %+v, want the one task, run once", list.Tasks)
	}

	dead := withEnv(env, "AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
	refuser := startErrand(t, withEnv(dead, "ROLE", "api"))
	var refused submitAnswer
	ans := apiCall(t, "POST", refuser+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "no", "iterations": 1}}`, nil, &refused)
	if ans.StatusCode != http.StatusServiceUnavailable || refused.Error != "unavailable" || refused.TaskID != "" {
		t.Errorf("submit with no broker: %d %+v, want 503 unavailable naming no task", ans.StatusCode, refused)
	}
	apiCall(t, "GET", base+"/api/tasks?type=process_heavy_task", "", nil, &list)
	if len(list.Tasks) != 1 {
		t.Errorf("%d tasks after the refused submit, want still 1", len(list.Tasks))
	}
}
