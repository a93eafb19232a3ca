package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// startMongoWire builds and starts ../mongowire (an embedded FerretDB), on
// PostgreSQL when it answers on 127.0.0.1:5432, else on SQLite, for the
// rest of the test, and returns its URI.
func startMongoWire(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "mongowire")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = "../mongowire"
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build tools/mongowire: %v\n%s", err, out)
	}
	args := []string{"-addr", "127.0.0.1:0", "-sqlite-dir", filepath.Join(dir, "data")}
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err == nil {
		conn.Close()
		args = []string{"-addr", "127.0.0.1:0", "-postgres", "postgres://postgres@127.0.0.1:5432/postgres"}
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mongowire: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line := make(chan string, 1)
	go func() {
		s := bufio.NewScanner(out)
		s.Scan()
		line <- strings.TrimSpace(s.Text())
	}()
	select {
	case uri := <-line:
		if !strings.HasPrefix(uri, "mongodb://") {
			t.Fatalf("mongowire printed %q, want a mongodb:// URI", uri)
		}
		return uri
	case <-time.After(60 * time.Second):
		t.Fatal("mongowire did not start within 60 s")
		return ""
	}
}

// TestWorkerKeepsAWorkersPromises: -mode worker runs every task the
// promises queue, acks it, and leaves its result in MongoDB and its final
// status in Redis, as errand's worker leaves them.
func TestWorkerKeepsAWorkersPromises(t *testing.T) {
	mongoURI := startMongoWire(t)
	base, queue, ch := startPromises(t)
	opts, err := redis.ParseURL(testRedis)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opts)
	// Cleanups run last first: the client closes after the deletes.
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	database := fmt.Sprintf("floor_test_%d", time.Now().UnixNano())
	client, err := mongo.Connect(options.Client().ApplyURI(mongoURI))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Disconnect(ctx) })
	t.Cleanup(func() { client.Database(database).Drop(ctx) })
	var ids []string
	for i := range 50 {
		code, a := submit(t, base, fmt.Sprintf(`{"data": "task %d", "iterations": %d}`, i, 1+i%3))
		if code != http.StatusAccepted {
			t.Fatalf("submit %d: got %d, want 202", i, code)
		}
		ids = append(ids, a.TaskID)
		t.Cleanup(func() { rdb.Del(ctx, statusKey(a.TaskID)) })
	}
	workCtx, stop := context.WithCancel(ctx)
	worked := make(chan error, 1)
	go func() {
		worked <- work(workCtx, config{amqpURL: testAMQP, redisURL: testRedis, queue: queue, mongoURI: mongoURI, mongoDatabase: database})
	}()
	// The worker writes a task's status after its result and acks after
	// both: once every status is final, every result is stored.
	deadline := time.Now().Add(30 * time.Second)
	for done := 0; done < len(ids); {
		select {
		case err := <-worked:
			t.Fatalf("work stopped before the tasks were done: %v", err)
		default:
		}
		done = 0
		for _, id := range ids {
			if raw, err := rdb.Get(ctx, statusKey(id)).Bytes(); err == nil && strings.Contains(string(raw), `"status":"SUCCESS"`) {
				done++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d tasks done after 30 s of work", done, len(ids))
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	if err := <-worked; err != nil {
		t.Fatalf("work: %v", err)
	}
	// Its connection is closed: what it had not acked is back in the queue.
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, amqp.Table{"x-max-priority": int32(maxPriority)})
	if err != nil || q.Messages != 0 {
		t.Errorf("queue after the worker stopped: %d messages (%v), want every task acked", q.Messages, err)
	}

	results := client.Database(database).Collection("task_results")
	for i, id := range ids {
		want := make([]string, 1+i%3)
		for n := range want {
			want[n] = fmt.Sprintf("TASK %d_ITERATION_%d", i, n+1)
		}
		var doc resultDoc
		if err := results.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc); err != nil {
			t.Fatalf("result of task %d (%s): %v", i, id, err)
		}
		if doc.Status != "SUCCESS" || strings.Join(doc.Result.ProcessedItems, ",") != strings.Join(want, ",") {
			t.Errorf("result of task %d: status %s, items %v; want SUCCESS, %v", i, doc.Status, doc.Result.ProcessedItems, want)
		}
		raw, err := rdb.Get(ctx, statusKey(id)).Bytes()
		if err != nil {
			t.Fatalf("status of task %d (%s): %v", i, id, err)
		}
		var st finalStatus
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		if st.Status != "SUCCESS" || st.Result.TotalProcessed != len(want) || st.TaskType != "process_heavy_task" ||
			st.Args.Data != fmt.Sprintf("task %d", i) || st.CreatedAt.IsZero() || st.CompletedAt.Before(st.StartedAt) {
			t.Errorf("status of task %d: %+v; want SUCCESS of process_heavy_task with its args, times and %d items", i, st, len(want))
		}
	}
	if n, err := results.CountDocuments(ctx, bson.D{}); err != nil || n != int64(len(ids)) {
		t.Errorf("task_results holds %d documents (%v), want %d", n, err, len(ids))
	}
}
