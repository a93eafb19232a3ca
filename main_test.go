package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// services are the real servers the tests of the real backends use.
// TestMain fills it in, except in -short mode; tests read it only.
var services struct {
	amqpURL  string
	redisURL string
	mongoURI string
	// mongoWire is the built tools/mongowire binary.
	mongoWire string
	// embeddedFerretDB: mongoURI is tools/mongowire's FerretDB,
	// started by TestMain, not a server MONGODB_URI named.
	embeddedFerretDB bool
}

// childEnv marks a copy of the test binary started by a test as an errand
// process (see startChild): it runs run() instead of the tests.
const childEnv = "ERRAND_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := run(ctx, []string{"errand"}, os.Getenv, os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "errand:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	flag.Parse()
	if fuzzing() {
		// The fuzz targets are pure decoders on the embedded backends, and
		// every fuzz worker process runs TestMain: no servers for them.
		return m.Run()
	}
	if testing.Short() {
		// The unit tests only (go test -short): no servers, and no
		// tools/mongowire to build. A test that needs them skips itself
		// through needsServices.
		return m.Run()
	}
	services.amqpURL = envOr("ERRAND_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	services.redisURL = envOr("ERRAND_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
	services.mongoURI = os.Getenv("MONGODB_URI")
	dir, err := os.MkdirTemp("", "errand-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	services.mongoWire = filepath.Join(dir, "mongowire")
	build := exec.Command("go", "build", "-o", services.mongoWire, ".")
	build.Dir = "tools/mongowire"
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build tools/mongowire: %v\n%s", err, out)
		return 1
	}
	if services.mongoURI == "" {
		uri, stop, err := startMongoWireAt("127.0.0.1:0", filepath.Join(dir, "data"))
		if err != nil {
			fmt.Fprintln(os.Stderr, "start the MongoDB-wire server (FerretDB):", err)
			return 1
		}
		defer stop()
		services.mongoURI = uri
		services.embeddedFerretDB = true
	}
	return m.Run()
}

// needsServices skips t in -short mode, where TestMain sets up none of the
// real servers and builds no tools. realStack and the helpers that reach
// a server call it; so does every test that reaches one, or runs a program
// of the full suite (promtool, prometheus, nginx, redis-server,
// tools/mongowire), before anything else.
func needsServices(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs RabbitMQ, Redis and MongoDB (the full suite: make test)")
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// startMongoWireAt starts tools/mongowire, an embedded FerretDB, on addr:
// on PostgreSQL when it answers on 127.0.0.1:5432 (ERRAND_TEST_POSTGRES_URL
// overrides), else on SQLite in sqliteDir. Data outlives a stop either way,
// so a server started again on the same addr and dir has it back.
func startMongoWireAt(addr, sqliteDir string) (uri string, stop func(), err error) {
	args := []string{"-addr", addr}
	pg := envOr("ERRAND_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err == nil || os.Getenv("ERRAND_TEST_POSTGRES_URL") != "" {
		if conn != nil {
			conn.Close()
		}
		args = append(args, "-postgres", pg)
	} else {
		args = append(args, "-sqlite-dir", sqliteDir)
	}
	cmd := exec.Command(services.mongoWire, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("start mongowire: %w", err)
	}
	// SIGKILL: an outage test wants the server gone at once, and the
	// data is committed either way.
	stop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		if s.Scan() {
			line <- strings.TrimSpace(s.Text())
		}
		close(line)
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case uri, ok := <-line:
		if !ok || !strings.HasPrefix(uri, "mongodb://") {
			stop()
			return "", nil, fmt.Errorf("mongowire printed %q, want a mongodb:// URI", uri)
		}
		return uri, stop, nil
	case <-time.After(60 * time.Second):
		stop()
		return "", nil, fmt.Errorf("mongowire did not start within 60s")
	}
}

// quietSubmitter submits tasks to bk as the API does, logging nothing.
func quietSubmitter(bk *backends) taskSubmitter {
	return newTaskSubmitter(bk.statuses, bk.keys, bk.publisher, submitterConfig{}, slog.New(slog.DiscardHandler),
		testMetrics(), disabledTracing(), time.Now)
}

// specOf is the spec of a task of taskType with args, at normal priority
// and due at once, as a submit would make it.
func specOf(t testing.TB, taskType string, args any) taskSpec {
	t.Helper()
	raw, err := json.Marshal(args)
	if err != nil {
		t.Fatalf("encode %s arguments: %v", taskType, err)
	}
	return taskSpec{Type: taskType, Args: raw, Priority: "normal"}
}

// testMetrics is errand's metrics with the broker's figures, on a
// registry of their own.
func testMetrics() *metrics { return newMetrics("test", maxEnvelopeTasks, envelopeHoldLimit) }

// backendModes are the two ways a test or benchmark runs errand: on its
// embedded backends (an empty environment) and on the real servers.
var backendModes = map[string]func(testing.TB) map[string]string{
	"embedded": func(testing.TB) map[string]string { return map[string]string{} },
	"real":     realStack,
}

// realStack returns the environment of an errand process on the real
// servers, isolated from every other test: its own queue, Redis key
// prefix and MongoDB database, all removed when the test ends.
func realStack(t testing.TB) map[string]string {
	t.Helper()
	needsServices(t)
	suffix := newRandomID(6)
	env := map[string]string{
		"AMQP_URL":         services.amqpURL,
		"REDIS_URL":        services.redisURL,
		"MONGODB_URI":      services.mongoURI,
		"MONGODB_DATABASE": "errand_test_" + suffix,
		"QUEUE_NAME":       "errand.test." + suffix,
		"REDIS_KEY_PREFIX": "errand-test:" + suffix + ":",
	}
	t.Cleanup(func() { removeStack(t, env) })
	return env
}

func removeStack(t testing.TB, env map[string]string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if conn, err := amqp.Dial(env["AMQP_URL"]); err == nil {
		if ch, err := conn.Channel(); err == nil {
			for _, q := range []string{env["QUEUE_NAME"], env["QUEUE_NAME"] + ".dead"} {
				if _, err := ch.QueueDelete(q, false, false, false); err != nil {
					t.Logf("delete queue %s: %v", q, err)
					break
				}
			}
		}
		conn.Close()
	}
	rdb := testRedis(t)
	iter := rdb.Scan(ctx, 0, env["REDIS_KEY_PREFIX"]+"*", 1000).Iterator()
	for iter.Next(ctx) {
		rdb.Del(ctx, iter.Val())
	}
	mc := testMongoAt(t, env["MONGODB_URI"])
	if err := mc.Database(env["MONGODB_DATABASE"]).Drop(ctx); err != nil {
		t.Logf("drop database %s: %v", env["MONGODB_DATABASE"], err)
	}
}

func testRedis(t testing.TB) *redis.Client {
	t.Helper()
	needsServices(t)
	opts, err := redis.ParseURL(services.redisURL)
	if err != nil {
		t.Fatalf("parse redis url: %v", err)
	}
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func testMongo(t testing.TB) *mongo.Client {
	t.Helper()
	return testMongoAt(t, services.mongoURI)
}

func testMongoAt(t testing.TB, uri string) *mongo.Client {
	t.Helper()
	needsServices(t)
	c, err := mongo.Connect(options.Client().ApplyURI(uri))
	if err != nil {
		t.Fatalf("connect mongodb: %v", err)
	}
	t.Cleanup(func() { c.Disconnect(context.Background()) })
	return c
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

// lockedBuffer is an output that writers on several goroutines may share
// while a test reads what they wrote.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// logWriter sends each line a process writes to t.Log, which shows only
// for failing tests (or with -v).
type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// startErrand runs errand in this process through run(), with env as its
// whole environment, and waits until /health answers. It returns the base
// URL. The test's cleanup stops it and checks that it stopped cleanly.
func startErrand(t testing.TB, env map[string]string) string {
	t.Helper()
	addr := freeAddr(t)
	full := map[string]string{"ADDR": addr, "LOG_LEVEL": "warn"}
	for k, v := range env {
		full[k] = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"errand"}, func(k string) string { return full[k] }, logWriter{t}, logWriter{t})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run returned %v, want nil", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("errand did not stop within 60s of its context ending")
		}
	})
	base := "http://" + addr
	waitForHTTP(t, base+"/health", done)
	return base
}

// waitForHTTP polls url until it answers (any status), failing the test
// if exited reports that the server ended first.
func waitForHTTP(t testing.TB, url string, exited <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("errand exited before serving: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not answer within 30s", url)
}

// child is an errand process started from the test binary.
type child struct {
	cmd     *exec.Cmd
	base    string
	logPath string        // the process's stdout and stderr
	exited  chan struct{} // closed when the process has exited
	exitErr error         // valid once exited is closed
}

// wait returns the process's exit error, or fails the test if it is still
// running after timeout.
func (c *child) wait(t testing.TB, timeout time.Duration) error {
	t.Helper()
	select {
	case <-c.exited:
		return c.exitErr
	case <-time.After(timeout):
		t.Fatalf("errand child %d still running after %v", c.cmd.Process.Pid, timeout)
		return nil
	}
}

// startChild starts errand as a separate process (this test binary,
// re-executed as errand; see TestMain) with env added to the environment.
func startChild(t testing.TB, env map[string]string) *child {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "ADDR="+addr, "LOG_LEVEL=info")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logFile, err := os.Create(filepath.Join(t.TempDir(), "errand.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start errand child: %v", err)
	}
	c := &child{cmd: cmd, base: "http://" + addr, logPath: logFile.Name(), exited: make(chan struct{})}
	go func() { c.exitErr = cmd.Wait(); close(c.exited) }()
	exitedEarly := make(chan error)
	go func() {
		<-c.exited
		close(exitedEarly)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("log of errand child %d:\n%s", cmd.Process.Pid, tail(string(b), 60))
		}
	})
	waitForHTTP(t, c.base+"/health", exitedEarly)
	return c
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// apiAnswer is an answer apiCall got: the response, with its body read.
type apiAnswer struct {
	*http.Response
	body string
}

// apiCall sends a request with an optional JSON body and with headers
// (nil for none; a Content-Type among them replaces the JSON one), reads
// the answer and, when out is not nil, decodes its JSON into out.
func apiCall(t testing.TB, method, url, body string, headers map[string]string, out any) apiAnswer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s %s: %v", method, url, err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
	return apiAnswer{Response: resp, body: string(raw)}
}

// submitTask posts a process_heavy_task and returns its id.
func submitTask(t testing.TB, base, body string) string {
	t.Helper()
	var acc taskAccepted
	if code := apiCall(t, "POST", base+"/api/async/process", body, nil, &acc).StatusCode; code != http.StatusAccepted {
		t.Fatalf("submit %s: status %d, want 202", body, code)
	}
	return acc.TaskID
}

// waitForStatus polls a task until its status is want (or final, which
// fails the test when it is not want).
func waitForStatus(t testing.TB, base, id, want string, timeout time.Duration) taskStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var st taskStatus
	for time.Now().Before(deadline) {
		code := apiCall(t, "GET", base+"/api/async/status/"+id, "", nil, &st).StatusCode
		if code == http.StatusOK && st.Status == want {
			return st
		}
		if code == http.StatusOK && st.final() {
			t.Fatalf("task %s ended %s (error %q), want %s", id, st.Status, st.Error, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("task %s is %s after %v, want %s", id, st.Status, timeout, want)
	return st
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
		if code := apiCall(t, "GET", base+"/api/async/status/"+id, "", nil, &st).StatusCode; code != http.StatusOK {
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
