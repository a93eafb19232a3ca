package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestStackScaleOut is the scale-out test and the soak: it runs the
// guide's whole topology through scripts/stack (nginx in front of 3 API
// processes, 3 worker processes, RabbitMQ, Redis, a MongoDB-wire server),
// pushes 10,000 tasks through nginx from 16 clients, SIGKILLs one API and
// one worker while they work, and starts the worker again. Clients retry
// a failed submit with the same Idempotency-Key, as nginx's error tells
// them to. Every accepted task must end SUCCESS with exactly one result
// document (checked here and by scripts/tally, the users' audit), every
// worker must have run tasks, and nginx must have kept answering.
func TestStackScaleOut(t *testing.T) {
	needsServices(t)
	requireNginx(t)
	const (
		tasksTotal   = 10_000
		clients      = 16
		killAfter    = tasksTotal / 3 // accepted tasks before the kills
		restartAfter = tasksTotal / 2 // accepted tasks before worker-2 starts again, leaving it work to take
	)
	// realStack picks the names and removes the queues, the Redis keys and
	// the database when the test ends (after `down`, registered below, so
	// no worker declares the queue again once it is gone).
	names := realStack(t)
	dir := t.TempDir()
	base := freeStackPorts(t, false)
	env := stackTestEnv(names, base, "STACK_HEAVY_TASK_DELAY=1ms", "STACK_DRAIN_TIMEOUT=5s",
		"STACK_AMQP_URL="+services.amqpURL, "STACK_REDIS_URL="+services.redisURL)
	state := upTestStack(t, env, dir, 150*time.Second)
	nginx := state["STACK_URL"]
	if want := fmt.Sprintf("http://127.0.0.1:%d", base); nginx != want {
		t.Fatalf("stack.env STACK_URL = %q, want %q", nginx, want)
	}
	workerURL := func(n int) string { return fmt.Sprintf("http://127.0.0.1:%d", base+10+n) }

	var (
		accepted   sync.Map // idempotency key -> submitOutcome
		acceptedN  atomic.Int64
		requests   atomic.Int64 // every submit request sent through nginx
		failures   atomic.Int64 // answers other than 202, and transport errors
		noAnswer   atomic.Int64 // transport errors: nginx itself did not answer
		replayed   atomic.Int64 // retries answered with the first request's task
		unexpected = make(chan string, tasksTotal)
	)
	client := &http.Client{
		Timeout:   35 * time.Second, // longer than nginx's proxy_read_timeout
		Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients},
	}
	defer client.CloseIdleConnections()
	// submit posts task i until nginx answers 202, retrying connection
	// errors, 502, 503 and 504 with the same Idempotency-Key, so a retry
	// of a request that was queued after all gets its task, not a second one.
	submit := func(ctx context.Context, i int) {
		key := fmt.Sprintf("stack-test-%s-%d", names["QUEUE_NAME"], i)
		body := fmt.Sprintf(`{"data": "scale-out %d", "iterations": 1}`, i)
		backoff := 20 * time.Millisecond
		for attempt := 1; ctx.Err() == nil; attempt++ {
			requests.Add(1)
			id, replay, code, err := postTask(ctx, client, nginx+"/api/async/process", key, body)
			if err == nil && code == http.StatusAccepted {
				accepted.Store(key, submitOutcome{id: id, attempts: attempt, replayed: replay})
				acceptedN.Add(1)
				if replay {
					replayed.Add(1)
				}
				return
			}
			failures.Add(1)
			if err != nil {
				noAnswer.Add(1)
			}
			retryable := err != nil || code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
			if !retryable {
				unexpected <- fmt.Sprintf("task %d: status %d", i, code)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
		}
		unexpected <- fmt.Sprintf("task %d: no 202 before the submit deadline", i)
	}

	submitCtx, stopSubmits := context.WithTimeout(context.Background(), 90*time.Second)
	defer stopSubmits()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for i := range jobs {
				submit(submitCtx, i)
			}
		})
	}
	go func() {
		defer close(jobs)
		for i := range tasksTotal {
			select {
			case jobs <- i:
			case <-submitCtx.Done():
				return
			}
		}
	}()

	// Mid-run: once a third of the tasks are accepted and every worker has
	// started some, kill api-2 and worker-2. Worker-2's count is read
	// before the kill; a dead process has no /metrics.
	waitFor(t, 60*time.Second, fmt.Sprintf("%d accepted tasks", killAfter), func() bool { return acceptedN.Load() >= killAfter })
	started := map[int]float64{}
	waitFor(t, 30*time.Second, "every worker to start tasks", func() bool {
		for n := 1; n <= 3; n++ {
			started[n] = tasksStarted(t, workerURL(n))
		}
		return started[1] > 0 && started[2] > 0 && started[3] > 0
	})
	busy := busyWithin(t, workerURL(2), 5*time.Second)
	started[2] = tasksStarted(t, workerURL(2))
	apiPid, workerPid := stackPid(t, dir, "api-2"), stackPid(t, dir, "worker-2")
	for _, pid := range []int{apiPid, workerPid} {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("SIGKILL %d: %v", pid, err)
		}
	}
	t.Logf("SIGKILLed api-2 (pid %d) and worker-2 (pid %d, %v tasks started, busy %v) at %d accepted tasks",
		apiPid, workerPid, started[2], busy, acceptedN.Load())

	waitFor(t, 90*time.Second, fmt.Sprintf("%d accepted tasks", restartAfter), func() bool { return acceptedN.Load() >= restartAfter })
	if out, err := runStack(env, 90*time.Second, "start", "worker-2", "--dir", dir); err != nil {
		t.Fatalf("scripts/stack start worker-2: %v\n%s", err, out)
	}
	t.Logf("started worker-2 again at %d accepted tasks", acceptedN.Load())
	var restarted float64
	waitFor(t, 60*time.Second, "the restarted worker-2 to start tasks", func() bool {
		restarted = tasksStarted(t, workerURL(2))
		return restarted > 0
	})

	wg.Wait()
	close(unexpected)
	for msg := range unexpected {
		t.Errorf("submit through nginx: %s", msg)
	}
	ids := map[string]submitOutcome{} // task id -> how it was accepted
	accepted.Range(func(k, v any) bool {
		out := v.(submitOutcome)
		out.key = k.(string)
		if other, dup := ids[out.id]; dup {
			t.Errorf("keys %s and %s both got task %s", other.key, out.key, out.id)
		}
		ids[out.id] = out
		return true
	})
	if len(ids) != tasksTotal {
		t.Fatalf("%d tasks accepted, want %d", len(ids), tasksTotal)
	}
	if n := noAnswer.Load(); n > 0 {
		t.Errorf("%d submits got no HTTP answer from nginx, want nginx to answer every request", n)
	}
	// A few submits in flight on api-2 when it died fail (nginx cannot
	// resend a POST it already sent); nginx routes around the dead
	// instance, so failures stay a small share and each was retried to 202.
	if f, n := failures.Load(), requests.Load(); float64(f) > 0.02*float64(n) {
		t.Errorf("%d of %d submits through nginx failed, want at most 2%%", f, n)
	} else {
		t.Logf("%d submit requests for %d tasks: %d failed and were retried (%d answered as idempotent replays)", n, tasksTotal, f, replayed.Load())
	}

	waitAllSucceeded(t, nginx, ids, 60*time.Second)
	for _, n := range []int{1, 3} {
		started[n] = tasksStarted(t, workerURL(n))
	}
	t.Logf("tasks started per worker: worker-1 %v, worker-2 %v before its kill and %v after its restart, worker-3 %v",
		started[1], started[2], tasksStarted(t, workerURL(2)), started[3])
	for n := 1; n <= 3; n++ {
		if started[n] == 0 {
			t.Errorf("worker-%d started no task, want every worker to take work", n)
		}
	}
	assertStackResults(t, state, ids)
	tallyStack(t, env, dir, ids)
	if code := apiCall(t, "GET", nginx+"/health", "", nil, nil).StatusCode; code != http.StatusOK {
		t.Errorf("GET /health through nginx after the kills: %d, want 200", code)
	}
	// After the soak's audit, which counts every result document.
	checkEventsThroughNginx(t, nginx)
	checkFilesThroughNginx(t, nginx)
	checkDocsThroughNginx(t, nginx)
}

// checkDocsThroughNginx: the API reference and its document reach a
// browser through nginx, as the guide's Part 8 opens them, and so does
// the console.
func checkDocsThroughNginx(t *testing.T, nginx string) {
	t.Helper()
	for path, wantType := range map[string]string{
		"/docs": "text/html; charset=utf-8", "/docs/swagger-ui-bundle.js": "text/javascript; charset=utf-8", "/openapi.json": "application/json",
		"/ui/": "text/html; charset=utf-8", "/ui/tasks": "text/html; charset=utf-8", "/ui/assets/console.js": "text/javascript; charset=utf-8",
	} {
		resp := apiCall(t, "GET", nginx+path, "", nil, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != wantType || len(resp.body) == 0 {
			t.Errorf("GET %s through nginx: %d %s, %d bytes; want 200 %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(resp.body), wantType)
		}
	}
}

// tallyStack runs scripts/tally, the audit users run after a soak, over the
// accepted tasks: it must count them all completed, none lost or duplicated.
func tallyStack(t *testing.T, env []string, dir string, ids map[string]submitOutcome) {
	t.Helper()
	var list strings.Builder
	for id := range ids {
		list.WriteString(id + "\n")
	}
	idsFile := filepath.Join(t.TempDir(), "accepted.txt")
	if err := os.WriteFile(idsFile, []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "scripts/tally", "check", "--ids", idsFile, "--stack", dir)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	t.Logf("scripts/tally check:\n%s", tail(string(out), 12))
	if err != nil {
		t.Fatalf("scripts/tally check: %v", err)
	}
	want := fmt.Sprintf("tally accepted=%d completed=%d failed=0 in_flight=0 lost=0 duplicated=0", len(ids), len(ids))
	if !strings.Contains(string(out), want) {
		t.Errorf("scripts/tally check does not say %q", want)
	}
}

// submitOutcome is how a task's submit ended: its id, the requests it
// took, and whether the 202 was an idempotent replay of an earlier one.
type submitOutcome struct {
	key      string
	id       string
	attempts int
	replayed bool
}

// waitAllSucceeded polls every accepted task through nginx until all are
// SUCCESS, then fails the test for each one that is not, saying how its
// submit went: a task that is unknown to errand although a replay handed
// out its id points at a request that died between reserving its
// Idempotency-Key and queueing the task.
func waitAllSucceeded(t *testing.T, base string, ids map[string]submitOutcome, timeout time.Duration) {
	t.Helper()
	type seen struct {
		code   int
		status string
	}
	waiting := map[string]seen{}
	for id := range ids {
		waiting[id] = seen{}
	}
	deadline := time.Now().Add(timeout)
	for len(waiting) > 0 && time.Now().Before(deadline) {
		for id := range waiting {
			var st taskStatus
			code := apiCall(t, "GET", base+"/api/async/status/"+id, "", nil, &st).StatusCode
			switch {
			case code == http.StatusOK && st.Status == stateSuccess:
				delete(waiting, id)
			case code == http.StatusOK && st.final():
				t.Errorf("task %s ended %s (error %q), want SUCCESS", id, st.Status, st.Error)
				delete(waiting, id)
			default:
				waiting[id] = seen{code, st.Status}
			}
		}
		if len(waiting) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	for id, last := range waiting {
		out := ids[id]
		how := fmt.Sprintf("accepted on attempt %d", out.attempts)
		if out.replayed {
			how += " as an idempotent replay"
		}
		t.Errorf("task %s (%s, %s) is still %d %q after %v, want SUCCESS", id, out.key, how, last.code, last.status, timeout)
		if out.replayed && out.attempts > 1 && last.code == http.StatusNotFound {
			t.Errorf("task %s: errand handed out, on a retry, the id an earlier request reserved with the Idempotency-Key, "+
				"but has no such task: that request died with api-2 after reserving the key and before recording and queueing the task, "+
				"and the reserved key is never released or taken over (see taskSubmitter.submit)", id)
		}
	}
}

// requireNginx installs nginx when it is missing and the Debian package can
// be installed; otherwise the stack cannot run and the test fails.
func requireNginx(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("nginx"); err == nil {
		return
	}
	install := exec.Command("bash", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx")
	out, err := install.CombinedOutput()
	if _, lookErr := exec.LookPath("nginx"); lookErr != nil {
		t.Fatalf("nginx is not installed and could not be installed (apt-get install nginx: %v):\n%s", err, tail(string(out), 20))
	}
}

// upTestStack brings a test's scripts/stack up in dir, within timeout, and
// takes it down when the test ends (its logs in the test's log if the
// test failed, its database dropped). It returns the stack's stack.env.
func upTestStack(t *testing.T, env []string, dir string, timeout time.Duration) map[string]string {
	t.Helper()
	t.Cleanup(func() {
		if out, err := runStack(env, 3*time.Minute, "down", "--dir", dir); err != nil {
			t.Errorf("scripts/stack down: %v\n%s", err, out)
		}
	})
	if out, err := runStack(env, timeout, "up", "--dir", dir); err != nil {
		dumpStackLogs(t, dir)
		t.Fatalf("scripts/stack up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpStackLogs(t, dir)
		}
	})
	state := readStackEnv(t, dir)
	// The database goes through the stack's own MongoDB-wire server while
	// it still runs: realStack's cleanup reaches the tests' server, which
	// shares the storage only when both run on the same PostgreSQL.
	t.Cleanup(func() { dropDatabase(t, state["MONGODB_URI"], state["MONGODB_DATABASE"]) })
	return state
}

// stackTestEnv is the environment of a test's scripts/stack: the test's
// own names and ports and the settings given, and none of the caller's
// STACK_* knobs (say, a Prometheus port), which must not leak into it.
func stackTestEnv(names map[string]string, base int, settings ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "STACK_") {
			env = append(env, kv)
		}
	}
	return append(append(env,
		"STACK_BASE_PORT="+strconv.Itoa(base),
		"STACK_QUEUE="+names["QUEUE_NAME"],
		"STACK_DB="+names["MONGODB_DATABASE"],
		"STACK_REDIS_PREFIX="+names["REDIS_KEY_PREFIX"],
	), settings...)
}

// freeStackPorts returns a base port whose whole scripts/stack layout is
// free: base (nginx), base+1..3 (apis), base+11..13 (workers), base+20
// (Prometheus), base+30 (mongowire), and with ha scripts/ha's brokers
// from base+40. Bases come from below Linux's ephemeral range, so no
// outgoing connection takes a port between this check and the stack's
// listen.
func freeStackPorts(t *testing.T, ha bool) int {
	t.Helper()
	offsets := []int{0, 1, 2, 3, 11, 12, 13, 20, 30}
	if ha {
		offsets = append(offsets, 40, 41, 42, 50, 51, 52, 60, 61, 65, 66, 67)
	}
	for range 50 {
		base := 20000 + rand.IntN(12000)
		free := true
		for _, off := range offsets {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+off))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return base
		}
	}
	t.Fatal("no free block of ports for the stack in 50 tries")
	return 0
}

// portAnswers says whether something accepts connections on a loopback port.
func portAnswers(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
	if err == nil {
		c.Close()
	}
	return err == nil
}

// runStack runs scripts/stack with env and returns its combined output.
func runStack(env []string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "scripts/stack", args...)
	cmd.Env = env
	// The stack's processes write to their own logs, so nothing should
	// hold the pipe open after the script ends; WaitDelay bounds it anyway.
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// readStackEnv reads DIR/stack.env, the settings scripts/stack up wrote as
// shell assignments (printf %q: plain values, spaces escaped).
func readStackEnv(t *testing.T, dir string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "stack.env"))
	if err != nil {
		t.Fatalf("read stack.env: %v", err)
	}
	state := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		state[k] = strings.ReplaceAll(v, `\`, "")
	}
	for _, k := range []string{"STACK_URL", "MONGODB_URI", "MONGODB_DATABASE"} {
		if state[k] == "" {
			t.Fatalf("stack.env has no %s:\n%s", k, raw)
		}
	}
	return state
}

// stackPid reads the pid scripts/stack recorded for a process.
func stackPid(t *testing.T, dir, name string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "pids", name+".pid"))
	if err != nil {
		t.Fatalf("pid of %s: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatalf("pid file of %s: %v", name, err)
	}
	return pid
}

// postTask sends one submit and reports the task id, whether it was an
// idempotent replay, and the status code.
func postTask(ctx context.Context, client *http.Client, url, key, body string) (id string, replay bool, code int, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return "", false, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return "", false, 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", false, resp.StatusCode, err
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", false, resp.StatusCode, nil
	}
	var acc taskAccepted
	if err := json.Unmarshal(raw, &acc); err != nil || acc.TaskID == "" {
		return "", false, resp.StatusCode, fmt.Errorf("202 without a task id: %q", raw)
	}
	return acc.TaskID, resp.Header.Get("Idempotent-Replayed") == "true", resp.StatusCode, nil
}

// tasksStarted is a worker's errand_tasks_started_total for the heavy task.
func tasksStarted(t *testing.T, worker string) float64 {
	t.Helper()
	v, _ := sampleValue(scrape(t, worker), "errand_tasks_started_total", map[string]string{"task_type": "process_heavy_task"})
	return v
}

// busyWithin waits up to timeout for the worker to be running a task, so
// the kill lands mid-task when it can. With a backlog its prefetched,
// unacked messages are redelivered either way.
func busyWithin(t *testing.T, worker string, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if v, _ := sampleValue(scrape(t, worker), "errand_tasks_in_progress", nil); v > 0 {
			return true
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

// assertStackResults checks task_results in the stack's database: one
// SUCCESS document per accepted task, counted by task_id, and no other.
func assertStackResults(t *testing.T, state map[string]string, ids map[string]submitOutcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	coll := testMongoAt(t, state["MONGODB_URI"]).Database(state["MONGODB_DATABASE"]).Collection("task_results")
	cur, err := coll.Find(ctx, bson.D{}, options.Find().SetProjection(bson.D{{Key: "task_id", Value: 1}, {Key: "status", Value: 1}}))
	if err != nil {
		t.Fatalf("read task_results: %v", err)
	}
	var docs []struct {
		TaskID string `bson:"task_id"`
		Status string `bson:"status"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatalf("read task_results: %v", err)
	}
	perTask := map[string]int{}
	for _, d := range docs {
		perTask[d.TaskID]++
		if d.Status != stateSuccess {
			t.Errorf("result of %s is %s, want SUCCESS", d.TaskID, d.Status)
		}
		if _, ok := ids[d.TaskID]; !ok {
			t.Errorf("task_results holds %s, which no submit was given", d.TaskID)
		}
	}
	missing, duplicated := 0, 0
	for id := range ids {
		switch n := perTask[id]; {
		case n == 0:
			missing++
		case n > 1:
			duplicated++
			t.Errorf("task %s has %d result documents, want 1", id, n)
		}
	}
	if len(docs) != len(ids) || missing > 0 {
		t.Errorf("task_results holds %d documents for %d accepted tasks (%d without one, %d with several), want one each", len(docs), len(ids), missing, duplicated)
	}
}

// dropDatabase drops a database through uri; the test is ending, so a
// failure is only logged.
func dropDatabase(t *testing.T, uri, database string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second))
	if err != nil {
		t.Logf("drop database %s: %v", database, err)
		return
	}
	defer c.Disconnect(ctx)
	if err := c.Database(database).Drop(ctx); err != nil {
		t.Logf("drop database %s: %v", database, err)
	}
}

// dumpStackLogs puts the end of every process log into the test log.
func dumpStackLogs(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, path := range logs {
		b, err := os.ReadFile(path)
		if err != nil || len(b) == 0 {
			continue
		}
		t.Logf("%s:\n%s", filepath.Base(path), tail(string(b), 25))
	}
}

// checkFilesThroughNginx uploads a file five times the JSON body limit
// through nginx, as multipart, and reads it back whole and in part.
func checkFilesThroughNginx(t *testing.T, nginx string) {
	t.Helper()
	data := testFileBytes(5<<20, 3)
	body, headers := multipartUpload(t, "file", "five.bin", "", data)
	var f fileJSON
	if resp := apiCall(t, "POST", nginx+"/api/files", body, headers, &f); resp.StatusCode != http.StatusCreated || f.Size != int64(len(data)) {
		t.Fatalf("upload of 5 MiB through nginx: %d %s", resp.StatusCode, resp.body)
	}
	if resp := apiCall(t, "GET", nginx+f.URL, "", nil, nil); resp.StatusCode != http.StatusOK || resp.body != string(data) {
		t.Errorf("download through nginx: %d, %d bytes, want the %d uploaded", resp.StatusCode, len(resp.body), len(data))
	}
	resp := apiCall(t, "GET", nginx+f.URL, "", map[string]string{"Range": "bytes=4000000-4000099"}, nil)
	if resp.StatusCode != http.StatusPartialContent || resp.body != string(data[4000000:4000100]) {
		t.Errorf("range through nginx: %d, %d bytes", resp.StatusCode, len(resp.body))
	}
}

// checkEventsThroughNginx follows a task due in 3 s through nginx, by the
// API's stream and by the console's: its first event (SCHEDULED) arrives
// at once, seconds before the stream ends with the task's SUCCESS, so
// nginx passes events on as errand writes them.
func checkEventsThroughNginx(t *testing.T, nginx string) {
	t.Helper()
	for _, prefix := range []string{"/api/tasks/", "/ui/tasks/"} {
		checkEventStreamThroughNginx(t, nginx, prefix)
	}
}

func checkEventStreamThroughNginx(t *testing.T, nginx, prefix string) {
	t.Helper()
	var acc taskAccepted
	body := `{"type": "process_heavy_task", "args": {"data": "streamed through nginx", "iterations": 1}, "countdown": 3}`
	if code := apiCall(t, "POST", nginx+"/api/tasks", body, nil, &acc).StatusCode; code != http.StatusAccepted {
		t.Fatalf("submit a scheduled task through nginx: %d", code)
	}
	opened := time.Now()
	events := readEvents(t, openEvents(t, nginx+prefix+acc.TaskID+"/events", ""))
	if len(events) < 2 || events[0].task.Status != stateScheduled || events[len(events)-1].task.Status != stateSuccess {
		t.Fatalf("events of %s through nginx: %+v, want SCHEDULED first and SUCCESS last", prefix, events)
	}
	if first, last := events[0].at.Sub(opened), events[len(events)-1].at.Sub(opened); first > time.Second || last < 2*time.Second {
		t.Errorf("through nginx (%s) the first event came %v after opening and the last %v; want the first at once and the last when the task ends, 3 s after its submit", prefix, first, last)
	}
}
