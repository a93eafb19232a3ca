package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"errand/tasks"
)

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
			resp := apiCall(t, "POST", base+"/api/async/process", body, key, nil)
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("submit %d: %d %s", i, resp.StatusCode, resp.body)
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
	resp := apiCall(t, "POST", api2+"/api/async/process", body, key, nil)
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(resp.body, id) || !strings.Contains(resp.body, `"status":"SUCCESS"`) {
		t.Errorf("replay after completion: %d %s, want 202 with the same id and its SUCCESS", resp.StatusCode, resp.body)
	}
	resp = apiCall(t, "POST", api1+"/api/async/process", `{"data": "different"}`, key, nil)
	if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(resp.body, "idempotency_key_reused") {
		t.Errorf("same key, different request: %d %s, want 422", resp.StatusCode, resp.body)
	}
	resp = apiCall(t, "POST", api1+"/api/async/process", body, map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, nil)
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Errorf("256-character key: %d %s, want 422", resp.StatusCode, resp.body)
	}
	assertOneResultEach(t, env, []string{id})
}

// TestIdempotencyKeyTakeover: an API process that died between reserving
// an Idempotency-Key and publishing its task leaves the key reserved and
// the task never queued. The client's retry with the key takes it over and
// queues the task under the same id, so it runs instead of staying PENDING.
func TestIdempotencyKeyTakeover(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	base := startErrand(t, env)

	crashedID := newUUID()
	stale := keyReservation{taskID: crashedID, fingerprint: idempotencyFingerprint(specOf(t, tasks.HeavyTaskName, tasks.HeavyArgs{Data: "retried", Iterations: 2})),
		state: keyReserved, at: time.Now().Add(-time.Minute)}
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

	resp := apiCall(t, "POST", base+"/api/async/process", `{"data": "retried", "iterations": 2}`, map[string]string{"Idempotency-Key": "crash-1"}, nil)
	if resp.StatusCode != http.StatusAccepted || !strings.Contains(resp.body, crashedID) {
		t.Fatalf("retry after a crashed request: %d %s, want 202 with task %s", resp.StatusCode, resp.body, crashedID)
	}
	waitForStatus(t, base, crashedID, stateSuccess, 20*time.Second)
	resp = apiCall(t, "POST", base+"/api/async/process", `{"data": "retried", "iterations": 2}`, map[string]string{"Idempotency-Key": "crash-1"}, nil)
	if resp.Header.Get("Idempotent-Replayed") != "true" || !strings.Contains(resp.body, `"status":"SUCCESS"`) {
		t.Errorf("replay after the takeover: %s %s, want the finished task replayed", resp.Header.Get("Idempotent-Replayed"), resp.body)
	}
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
		code := apiCall(t, "POST", base+"/api/async/process", `{"data": "x"}`, nil, &body).StatusCode
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
	if code := apiCall(t, "GET", base+"/health", "", nil, &h).StatusCode; code != http.StatusServiceUnavailable || h.Services["rabbitmq"] != "disconnected" || h.Services["redis"] != "connected" {
		t.Errorf("health with the broker down: %d %+v, want 503 naming rabbitmq", code, h)
	}
}

// TestNewUUIDIsARandomVersion4UUID: task ids have the form of Celery's
// (RFC 4122 version 4, variant 10xx), and do not repeat.
func TestNewUUIDIsARandomVersion4UUID(t *testing.T) {
	form := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 10_000 {
		id := newUUID()
		if !form.MatchString(id) {
			t.Fatalf("newUUID() = %q, not a version 4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("newUUID() repeated %q", id)
		}
		seen[id] = true
	}
}
