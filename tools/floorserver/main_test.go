package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
)

const (
	testAMQP  = "amqp://guest:guest@127.0.0.1:5672/"
	testRedis = "redis://127.0.0.1:6379/2"
)

// startServer serves cfg on a free loopback port until the test ends.
func startServer(t *testing.T, cfg config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, ln, cfg, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

// startPromises serves -mode promises on a queue of its own, which it
// deletes when the test ends, and returns a channel to inspect it.
func startPromises(t *testing.T) (base, queue string, ch *amqp.Channel) {
	t.Helper()
	queue = fmt.Sprintf("errand.floor.test.%d", time.Now().UnixNano())
	conn, err := amqp.Dial(testAMQP)
	if err != nil {
		t.Fatalf("RabbitMQ at %s: %v", testAMQP, err)
	}
	t.Cleanup(func() { conn.Close() })
	if ch, err = conn.Channel(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.QueueDelete(queue, false, false, false) })
	return startServer(t, config{mode: "promises", amqpURL: testAMQP, redisURL: testRedis, queue: queue}), queue, ch
}

type accepted struct {
	TaskID string `json:"task_id"`
	Status string `json:"status"`
}

func submit(t *testing.T, base, body string) (int, accepted) {
	t.Helper()
	resp, err := http.Post(base+"/api/async/process", "application/json", strings.NewReader(body))
	if err != nil {
		t.Error(err)
		return 0, accepted{}
	}
	defer resp.Body.Close()
	var a accepted
	_ = json.NewDecoder(resp.Body).Decode(&a)
	return resp.StatusCode, a
}

// TestPromisesKeptBeforeThe202: every accepted task has its PENDING
// status in Redis and is on a durable queue as a persistent message,
// once, whether it travelled alone or in an envelope with others.
func TestPromisesKeptBeforeThe202(t *testing.T) {
	base, queue, ch := startPromises(t)

	const n = 200
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, a := submit(t, base, fmt.Sprintf(`{"data": "task %d", "iterations": 1}`, i))
			if code != http.StatusAccepted || a.Status != "PENDING" || a.TaskID == "" {
				t.Errorf("submit %d: got %d %+v, want 202 PENDING with a task id", i, code, a)
				return
			}
			ids <- a.TaskID
		}()
	}
	wg.Wait()
	close(ids)

	opts, err := redis.ParseURL(testRedis)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	want := map[string]bool{}
	for id := range ids {
		want[id] = true
		doc, err := rdb.Get(context.Background(), statusKey(id)).Result()
		var st pendingStatus
		if err == nil {
			err = json.Unmarshal([]byte(doc), &st)
		}
		if err != nil || st.Status != "PENDING" || st.TaskID != id || st.TaskType != "process_heavy_task" {
			t.Errorf("status of %s: got %q (%v), want its PENDING document", id, doc, err)
		}
		rdb.Del(context.Background(), statusKey(id))
	}
	if len(want) != n {
		t.Fatalf("got %d distinct task ids accepted, want %d", len(want), n)
	}

	// Declaring the queue as a transient one fails if it is durable.
	if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{"x-max-priority": int32(maxPriority)}); err != nil {
		t.Fatalf("the queue is not a durable priority queue: %v", err)
	}
	seen := map[string]int{}
	messages := 0
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		messages++
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("message %s: got delivery mode %d, want persistent", d.MessageId, d.DeliveryMode)
		}
		for _, m := range queuedTasks(t, d.Body) {
			seen[m.ID]++
			if m.Type != "process_heavy_task" || m.Args.Iterations != 1 {
				t.Errorf("queued %+v, want a process_heavy_task of 1 iteration", m)
			}
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("task %s: got it queued %d times, want once", id, seen[id])
		}
	}
	if len(seen) != n {
		t.Errorf("got %d tasks on the queue, want the %d accepted", len(seen), n)
	}
	t.Logf("%d tasks in %d messages", n, messages)
}

// queuedTasks decodes a message: one task, or an envelope of several.
func queuedTasks(t *testing.T, body []byte) []taskMessage {
	t.Helper()
	var many []taskMessage
	if err := json.Unmarshal(body, &many); err == nil {
		return many
	}
	var one taskMessage
	if err := json.Unmarshal(body, &one); err != nil {
		t.Fatalf("queued message %q is neither a task nor an envelope: %v", body, err)
	}
	return []taskMessage{one}
}

// TestNo202BeforeThePromisesAreKept: the answer waits for accept, and
// a failed accept is a 503, not a 202.
func TestNo202BeforeThePromisesAreKept(t *testing.T) {
	release := make(chan error)
	h := newHandler(func(ctx context.Context, task taskMessage) error { return <-release })
	answered := make(chan int, 1)
	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/async/process", strings.NewReader(`{"data": "x"}`)))
		answered <- rec.Code
	}()
	select {
	case code := <-answered:
		t.Fatalf("got %d before the promises were kept", code)
	case <-time.After(100 * time.Millisecond):
	}
	release <- nil
	if code := <-answered; code != http.StatusAccepted {
		t.Errorf("got %d once kept, want 202", code)
	}

	go func() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/api/async/process", strings.NewReader(`{"data": "x"}`)))
		answered <- rec.Code
	}()
	release <- errors.New("the broker refused the message")
	if code := <-answered; code != http.StatusServiceUnavailable {
		t.Errorf("got %d when a promise failed, want 503", code)
	}
}

func TestBareAnswersWithoutServices(t *testing.T) {
	base := startServer(t, config{mode: "bare"})
	code, a := submit(t, base, `{"data": "x", "iterations": 2}`)
	if code != http.StatusAccepted || a.Status != "PENDING" || len(a.TaskID) != 36 {
		t.Errorf("submit: got %d %+v, want 202 PENDING with a UUID", code, a)
	}
	if code, _ := submit(t, base, `{"data": `); code != http.StatusBadRequest {
		t.Errorf("malformed body: got %d, want 400", code)
	}
}

func TestCheckLoopback(t *testing.T) {
	for raw, ok := range map[string]bool{
		"http://127.0.0.1:8090":                  true,
		"http://localhost:8090":                  true,
		"amqp://guest:guest@[::1]:5672/":         true,
		"redis://127.0.0.2:6379/2":               true,
		"http://10.0.0.1:8090":                   false,
		"amqp://guest:guest@rabbit.example:5672": false,
		"redis://127.attacker.example:6379/0":    false,
	} {
		if err := checkLoopback(raw); (err == nil) != ok {
			t.Errorf("checkLoopback(%q): got %v, want ok=%v", raw, err, ok)
		}
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-addr", "10.0.0.1:8090"}, "not a loopback address"},
		{[]string{"-addr", "127.0.0.1:0", "-amqp", "amqp://guest:guest@rabbit.example.com:5672/"}, "not a loopback address"},
		{[]string{"-addr", "127.0.0.1:0", "-redis", "redis://192.168.1.5:6379/0"}, "not a loopback address"},
		{[]string{"-mode", "worker", "-mongo", "mongodb://db.example.com:27017"}, "not a loopback address"},
		{[]string{"-addr", "127.0.0.1:0", "-mode", "sideways"}, "want bare, promises or worker"},
	} {
		err := run(context.Background(), c.args, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run %v: got %v, want an error saying %q", c.args, err, c.want)
		}
	}
}
