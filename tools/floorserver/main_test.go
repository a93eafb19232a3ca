package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
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
	go func() { done <- serve(ctx, ln, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
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
// status in Redis and is on the queue, once, whether it travelled alone
// or in an envelope with others.
func TestPromisesKeptBeforeThe202(t *testing.T) {
	queue := fmt.Sprintf("errand.floor.test.%d", time.Now().UnixNano())
	conn, err := amqp.Dial(testAMQP)
	if err != nil {
		t.Fatalf("RabbitMQ at %s: %v", testAMQP, err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	defer ch.QueueDelete(queue, false, false, false)
	base := startServer(t, config{mode: "promises", amqpURL: testAMQP, redisURL: testRedis, queue: queue})

	const n = 200
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, a := submit(t, base, fmt.Sprintf(`{"data": "task %d", "iterations": 1}`, i))
			if code != http.StatusAccepted || a.Status != "PENDING" || a.TaskID == "" {
				t.Errorf("submit %d: %d %+v, want 202 PENDING with a task id", i, code, a)
				return
			}
			ids <- a.TaskID
		}()
	}
	wg.Wait()
	close(ids)

	opts, _ := redis.ParseURL(testRedis)
	rdb := redis.NewClient(opts)
	defer rdb.Close()
	want := map[string]bool{}
	for id := range ids {
		want[id] = true
		doc, err := rdb.Get(context.Background(), statusKey(id)).Result()
		if err != nil || !strings.Contains(doc, `"PENDING"`) {
			t.Errorf("status of %s: %q (%v), want PENDING", id, doc, err)
		}
		rdb.Del(context.Background(), statusKey(id))
	}
	if len(want) != n {
		t.Fatalf("%d distinct task ids accepted, want %d", len(want), n)
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
		for _, m := range queuedTasks(t, d.Body) {
			seen[m.ID]++
			if m.Type != "process_heavy_task" || m.Args.Iterations != 1 {
				t.Errorf("queued %+v, want a process_heavy_task of 1 iteration", m)
			}
		}
	}
	for id := range want {
		if seen[id] != 1 {
			t.Errorf("task %s queued %d times, want once", id, seen[id])
		}
	}
	if len(seen) != n {
		t.Errorf("%d tasks on the queue, want the %d accepted", len(seen), n)
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

func TestBareAnswersWithoutServices(t *testing.T) {
	base := startServer(t, config{mode: "bare"})
	code, a := submit(t, base, `{"data": "x", "iterations": 2}`)
	if code != http.StatusAccepted || a.Status != "PENDING" || len(a.TaskID) != 36 {
		t.Errorf("submit: %d %+v, want 202 PENDING with a UUID", code, a)
	}
	if code, _ := submit(t, base, `{"data": `); code != http.StatusBadRequest {
		t.Errorf("malformed body: %d, want 400", code)
	}
}

func TestRefusesWhatIsNotLoopback(t *testing.T) {
	for _, args := range [][]string{
		{"-addr", "10.0.0.1:8090"},
		{"-amqp", "amqp://guest:guest@rabbit.example.com:5672/"},
		{"-redis", "redis://192.168.1.5:6379/0"},
		{"-mode", "sideways", "-addr", "127.0.0.1:0"},
	} {
		if err := run(context.Background(), args); err == nil {
			t.Errorf("run %v: no error", args)
		}
	}
}
