package main

import (
	"context"
	"encoding/json"
	"errand/tasks"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// handlerEpoch is the time the handler tests' clock starts at. It has
// sub-millisecond digits so the tests see the API truncate them.
var handlerEpoch = time.Date(2026, 1, 2, 3, 4, 5, 678_901_000, time.UTC)

// handlerMaxBody is the handler tests' MaxBodyBytes.
const handlerMaxBody = 64 << 10

// handlerClock is a settable clock for serverDeps.now.
type handlerClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *handlerClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *handlerClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// handlerFixture is errand's HTTP API on the embedded backends, with the
// backends at hand so a test can look behind the API.
type handlerFixture struct {
	server   http.Handler
	items    *memoryStore
	statuses *memoryStatusStore
	keys     *memoryKeyStore
	broker   *memoryBroker
	clock    *handlerClock
	metrics  *metrics
	// revocations are the cancels the API recorded.
	revocations *memoryRevocations
	schedules   *memorySchedules
	workflows   *memoryWorkflows
}

// apiParts are what newHandlerFixture builds the API from: the server's
// dependencies, and the stores and publisher its submitter and status
// reader are built on. An adjust may swap any of them first.
type apiParts struct {
	serverDeps
	statuses  statusStore
	keys      keyStore
	results   finishedTasks
	publisher taskPublisher
}

// newHandlerFixture builds the API on embedded stores with the same
// constructors run uses, the built-in task types, a schedule horizon of
// 30 days and zero TTLs and timeouts (so keys live an hour and are taken
// over after 15 s, and results are kept for ever); each adjust may change
// its parts first.
func newHandlerFixture(t testing.TB, adjust ...func(*apiParts)) *handlerFixture {
	t.Helper()
	f := &handlerFixture{
		items: newMemoryStore(), statuses: newMemoryStatusStore(), keys: newMemoryKeyStore(), broker: newMemoryBroker(),
		revocations: newMemoryRevocations(time.Hour), schedules: newMemorySchedules(), workflows: newMemoryWorkflows(),
		clock: &handlerClock{t: handlerEpoch},
	}
	d := apiParts{
		serverDeps: serverDeps{
			log: slog.New(slog.DiscardHandler), items: f.items,
			health:   map[string]pinger{"rabbitmq": f.broker, "redis": f.statuses, "mongodb": f.items},
			backends: "embedded", maxBody: handlerMaxBody, healthTimeout: time.Second, now: f.clock.now, serveAPI: true,
			metrics: testMetrics(), tracing: disabledTracing(), registry: tasks.NewRegistry(tasks.Config{}), queues: f.broker,
		},
		statuses: f.statuses, keys: f.keys, results: f.items, publisher: f.broker,
	}
	for _, a := range adjust {
		a(&d)
	}
	d.specs = taskSpecs{registry: d.registry, horizon: 30 * 24 * time.Hour, now: d.now, webhooks: d.webhooks}
	d.submitter = newTaskSubmitter(d.statuses, d.keys, d.publisher, submitterConfig{}, d.log, d.metrics, d.tracing, d.now)
	d.reader = taskStatusReader{statuses: d.statuses, results: d.results, log: d.log, now: d.now}
	d.watcher = f.statuses
	d.dead = deadLetterRoutes{queue: f.broker, specs: d.specs, submitter: d.submitter}
	d.schedules = scheduleRoutes{store: f.schedules, specs: d.specs, maxBody: d.maxBody, now: d.now}
	flows := &workflowEngine{store: f.workflows, results: f.items, statuses: d.statuses, revocations: f.revocations, publisher: d.publisher,
		reader: d.reader, tracing: d.tracing, log: d.log, now: d.now}
	d.workflows = workflowRoutes{engine: flows, specs: d.specs, submitter: d.submitter, maxBody: d.maxBody, now: d.now}
	d.canceller = taskCanceller{reader: d.reader, revocations: f.revocations, results: f.items, statuses: d.statuses,
		metrics: d.metrics, log: d.log, now: d.now}
	f.server = newServer(d.serverDeps)
	f.metrics = d.metrics
	t.Cleanup(f.broker.close)
	return f
}

// newAPIRequest returns a request with body; a non-empty body is sent as
// application/json. Each entry of header is set on the request, and an
// empty value removes the header.
func newAPIRequest(method, target, body string, header map[string]string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	return r
}

// serve sends one request through the API and returns its answer.
func (f *handlerFixture) serve(t testing.TB, method, target, body string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	f.server.ServeHTTP(rec, newAPIRequest(method, target, body, header))
	return rec
}

// decodeAnswer checks an answer's status and content type and decodes its
// JSON into out, numbers as json.Number, failing on fields out lacks.
func decodeAnswer(t testing.TB, rec *httptest.ResponseRecorder, wantStatus int, out any) {
	t.Helper()
	if rec.Code != wantStatus {
		t.Fatalf("status: got %d, want %d (body %s)", rec.Code, wantStatus, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	dec := json.NewDecoder(strings.NewReader(rec.Body.String()))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("decode answer %s: %v", rec.Body, err)
	}
}

// checkErrorAnswer checks an error answer: its status, the JSON every
// error answer shares (error, detail, request_id matching the
// X-Request-ID header, and field exactly when wantField is set) and its
// error code.
func checkErrorAnswer(t testing.TB, rec *httptest.ResponseRecorder, wantStatus int, wantCode, wantField string) {
	t.Helper()
	var body map[string]any
	decodeAnswer(t, rec, wantStatus, &body)
	if got := body["error"]; got != wantCode {
		t.Errorf("error: got %v, want %q (body %v)", got, wantCode, body)
	}
	if detail, _ := body["detail"].(string); detail == "" {
		t.Errorf("detail: got %v, want a message (body %v)", body["detail"], body)
	}
	if id, _ := body["request_id"].(string); id == "" || id != rec.Header().Get("X-Request-ID") {
		t.Errorf("request_id: got %v, want the X-Request-ID header %q", body["request_id"], rec.Header().Get("X-Request-ID"))
	}
	field, hasField := body["field"]
	switch {
	case wantField == "" && hasField:
		t.Errorf("field: got %v, want none", field)
	case wantField != "" && field != wantField:
		t.Errorf("field: got %v, want %q (detail %v)", field, wantField, body["detail"])
	}
	for k := range body {
		switch k {
		case "error", "detail", "field", "request_id":
		default:
			t.Errorf("error answer has field %q, want only error, detail, field and request_id", k)
		}
	}
}

// createItem creates an item through the API and returns the answer.
func (f *handlerFixture) createItem(t testing.TB, body string) itemResponse {
	t.Helper()
	var it itemResponse
	decodeAnswer(t, f.serve(t, "POST", "/api/items", body, nil), http.StatusCreated, &it)
	return it
}

// getItem reads an item through the API.
func (f *handlerFixture) getItem(t testing.TB, id string) itemResponse {
	t.Helper()
	var it itemResponse
	decodeAnswer(t, f.serve(t, "GET", "/api/items/"+id, "", nil), http.StatusOK, &it)
	return it
}

// itemCount is the number of items in the memory store.
func (f *handlerFixture) itemCount() int {
	f.items.mu.RLock()
	defer f.items.mu.RUnlock()
	return len(f.items.items)
}

// statusCount is the number of entries in the memory status store.
func (f *handlerFixture) statusCount() int {
	f.statuses.mu.Lock()
	defer f.statuses.mu.Unlock()
	return len(f.statuses.entries)
}

// nextTaskMessage takes the next message off the memory broker, as a
// worker would, and acknowledges it.
func (f *handlerFixture) nextTaskMessage(t testing.TB) taskMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	// Unbuffered, so a message consume has taken but nobody received is
	// rejected back onto the queue when ctx ends.
	out := make(chan delivery)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.broker.consume(ctx, 1, out)
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case d := <-out:
		if err := d.ack(); err != nil {
			t.Fatalf("ack: %v", err)
		}
		m, err := decodeTaskMessage(d.body)
		if err != nil {
			t.Fatalf("%v (body %s)", err, d.body)
		}
		return m
	case <-ctx.Done():
		t.Fatal("no message on the broker within 10s")
		return taskMessage{}
	}
}

// failingStatusStore is a memoryStatusStore whose writes or reads fail
// with err.
type failingStatusStore struct {
	*memoryStatusStore
	putErr, getErr error
}

func (s failingStatusStore) put(ctx context.Context, st taskStatus, ttl time.Duration) error {
	if s.putErr != nil {
		return s.putErr
	}
	return s.memoryStatusStore.put(ctx, st, ttl)
}

func (s failingStatusStore) get(ctx context.Context, taskID string) (taskStatus, error) {
	if s.getErr != nil {
		return taskStatus{}, s.getErr
	}
	return s.memoryStatusStore.get(ctx, taskID)
}
