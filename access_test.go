package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"errand/tasks"
)

// request sends method url with headers and an optional body, returning
// the response (body read into the returned string).
func request(t testing.TB, method, url, body string, headers map[string]string) (*http.Response, string) {
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
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestAPIKeys(t *testing.T) {
	base := startErrand(t, map[string]string{"API_KEYS": "key-a, key-b", "HEAVY_TASK_DELAY": "1ms"})
	a := map[string]string{"X-API-Key": "key-a"}
	b := map[string]string{"Authorization": "Bearer key-b"}

	for name, h := range map[string]map[string]string{"none": nil, "wrong": {"X-API-Key": "key-c"}, "prefix": {"X-API-Key": "key-"}, "bearer wrong": {"Authorization": "Bearer nope"}} {
		resp, body := request(t, "GET", base+"/api/items", "", h)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"error":"unauthorized"`) || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s key: %d %s, want 401 JSON with WWW-Authenticate", name, resp.StatusCode, body)
		}
	}
	for _, path := range []string{"/health", "/metrics"} {
		if resp, _ := request(t, "GET", base+path, "", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a key: %d, want 200 (open for probes)", path, resp.StatusCode)
		}
	}

	resp, body := request(t, "POST", base+"/api/async/process", `{"data": "mine", "iterations": 1}`, a)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit with key a: %d %s", resp.StatusCode, body)
	}
	id := resp.Header.Get("Location")[len("/api/async/status/"):]
	waitFor(t, 10*time.Second, "the task to finish", func() bool {
		_, body := request(t, "GET", base+"/api/async/status/"+id, "", a)
		return strings.Contains(body, `"SUCCESS"`)
	})
	if _, body := request(t, "GET", base+"/api/async/status/"+id, "", a); strings.Contains(body, "owner") {
		t.Errorf("status shows its owner: %s", body)
	}
	if resp, _ := request(t, "GET", base+"/api/async/status/"+id, "", b); resp.StatusCode != http.StatusNotFound {
		t.Errorf("key b reading key a's task: %d, want 404", resp.StatusCode)
	}
	if _, body := request(t, "GET", base+"/api/tasks", "", b); strings.Contains(body, id) {
		t.Errorf("key b's task list shows key a's task: %s", body)
	}
	if _, body := request(t, "GET", base+"/api/tasks", "", a); !strings.Contains(body, id) {
		t.Errorf("key a's task list lacks its task: %s", body)
	}
}

func TestRateLimit(t *testing.T) {
	base := startErrand(t, map[string]string{"API_KEYS": "key-a,key-b", "RATE_LIMIT": "1", "RATE_BURST": "3"})
	a := map[string]string{"X-API-Key": "key-a"}
	for i := range 3 {
		if resp, body := request(t, "GET", base+"/api/items", "", a); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d within the burst: %d %s", i, resp.StatusCode, body)
		}
	}
	resp, body := request(t, "GET", base+"/api/items", "", a)
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || retry < 1 || !strings.Contains(body, `"error":"rate_limited"`) {
		t.Errorf("request over the limit: %d Retry-After %q %s, want 429 with Retry-After >= 1", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if resp, _ := request(t, "GET", base+"/api/items", "", map[string]string{"X-API-Key": "key-b"}); resp.StatusCode != http.StatusOK {
		t.Errorf("another client while key a is limited: %d, want 200", resp.StatusCode)
	}
	if resp, _ := request(t, "GET", base+"/health", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/health while limited: %d, want 200", resp.StatusCode)
	}
}

// TestIdempotencyKey: the same Idempotency-Key returns the same task, also
// for concurrent requests to two API processes; a different request with
// the same key is refused; only one task runs.
func TestIdempotencyKey(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	api1 := startErrand(t, env)
	api2 := startErrand(t, withEnv(env, "ROLE", "api"))
	key := map[string]string{"Idempotency-Key": "order-42"}
	body := `{"data": "once", "iterations": 2}`

	var mu sync.Mutex
	ids := map[string]int{}
	replayed := 0
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			base := []string{api1, api2}[i%2]
			resp, b := request(t, "POST", base+"/api/async/process", body, key)
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("submit %d: %d %s", i, resp.StatusCode, b)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			ids[resp.Header.Get("Location")]++
			if resp.Header.Get("Idempotent-Replayed") == "true" {
				replayed++
			}
		}()
	}
	wg.Wait()
	if len(ids) != 1 || replayed != 9 {
		t.Fatalf("10 concurrent submits with one key gave task locations %v and %d replays, want one task and 9 replays", ids, replayed)
	}
	var id string
	for loc := range ids {
		id = strings.TrimPrefix(loc, "/api/async/status/")
	}
	waitForStatus(t, api1, id, stateSuccess, 20*time.Second)
	resp, b := request(t, "POST", api2+"/api/async/process", body, key)
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(b, id) || !strings.Contains(b, `"status":"SUCCESS"`) {
		t.Errorf("replay after completion: %d %s, want 202 with the same id and its SUCCESS", resp.StatusCode, b)
	}
	resp, b = request(t, "POST", api1+"/api/async/process", `{"data": "different"}`, key)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(b, "idempotency_key_reused") {
		t.Errorf("same key, different request: %d %s, want 422", resp.StatusCode, b)
	}
	resp, b = request(t, "POST", api1+"/api/async/process", body, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)})
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("256-character key: %d %s, want 422", resp.StatusCode, b)
	}
	assertOneResultEach(t, env, []string{id})
}

// TestHealthcheckCommand: `errand healthcheck` succeeds against a healthy
// errand and fails against one that does not answer.
func TestHealthcheckCommand(t *testing.T) {
	base := startErrand(t, map[string]string{})
	addr := strings.TrimPrefix(base, "http://")
	var out strings.Builder
	if err := run(t.Context(), []string{"errand", "healthcheck"}, func(k string) string { return map[string]string{"ADDR": addr}[k] }, &out, &out); err != nil {
		t.Errorf("healthcheck of a healthy errand: %v (%s)", err, out.String())
	}
	if err := run(t.Context(), []string{"errand", "healthcheck", "-url", "http://" + freeAddr(t) + "/health"}, func(string) string { return "" }, &out, &out); err == nil {
		t.Errorf("healthcheck of nothing succeeded, want an error")
	}
}

// TestIdempotencyKeyTakeover: an API process that died between reserving
// an Idempotency-Key and publishing its task leaves the key reserved and
// the task never queued. The client's retry with the key takes it over and
// queues the task under the same id, so it runs instead of staying PENDING.
func TestIdempotencyKeyTakeover(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	base := startErrand(t, env)

	crashedID := newTaskID()
	raw, _ := json.Marshal(tasks.HeavyArgs{Data: "retried", Iterations: 2})
	stale := keyReservation{taskID: crashedID, fingerprint: idempotencyFingerprint(tasks.HeavyTaskName, "normal", raw), at: time.Now().Add(-time.Minute)}
	sum := sha256.Sum256([]byte("\x00" + "crash-1"))
	rdb := testRedis(t)
	ctx := context.Background()
	if err := rdb.Set(ctx, env["REDIS_KEY_PREFIX"]+"idem:"+hex.EncodeToString(sum[:]), stale.encode(), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	// What the dead process had written before it died.
	statuses := newRedisStatusStore(rdb, env["REDIS_KEY_PREFIX"])
	if err := statuses.put(ctx, taskStatus{TaskID: crashedID, Status: statePending, TaskType: tasks.HeavyTaskName, UpdatedAt: time.Now()}, 0); err != nil {
		t.Fatal(err)
	}

	resp, body := request(t, "POST", base+"/api/async/process", `{"data": "retried", "iterations": 2}`, map[string]string{"Idempotency-Key": "crash-1"})
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(body, crashedID) {
		t.Fatalf("retry after a crashed request: %d %s, want 202 with task %s", resp.StatusCode, body, crashedID)
	}
	waitForStatus(t, base, crashedID, stateSuccess, 20*time.Second)
	resp, body = request(t, "POST", base+"/api/async/process", `{"data": "retried", "iterations": 2}`, map[string]string{"Idempotency-Key": "crash-1"})
	if resp.Header.Get("Idempotent-Replayed") != "true" || !strings.Contains(body, `"status":"SUCCESS"`) {
		t.Errorf("replay after the takeover: %s %s, want the finished task replayed", resp.Header.Get("Idempotent-Replayed"), body)
	}
}
