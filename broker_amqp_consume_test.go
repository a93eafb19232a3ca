package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"errand/tasks"
)

// TestConsumerSurvivesConnectionClose: closing the worker's AMQP
// connection under running tasks (as `rabbitmqctl close_connection` does)
// loses nothing: the consumer redials and every task completes once.
func TestConsumerSurvivesConnectionClose(t *testing.T) {
	env := realStack(t)
	var mu sync.Mutex
	started := map[string]int{}
	slow := tasks.Definition{Name: "slow", Run: func(ctx context.Context, task tasks.Task, _ json.RawMessage) (any, error) {
		mu.Lock()
		started[task.ID]++
		mu.Unlock()
		select {
		case <-time.After(300 * time.Millisecond):
			return map[string]any{"id": task.ID}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}
	s := startPoolStack(t, env, 3, slow)
	ids := make([]string, 12)
	for i := range ids {
		ids[i] = s.submit(t, "slow", map[string]any{})
	}
	waitFor(t, 10*time.Second, "tasks running", func() bool { mu.Lock(); defer mu.Unlock(); return len(started) >= 2 })
	if n := closeConnections(t, "errand-consumer", os.Getpid()); n != 1 {
		t.Fatalf("closed %d consumer connections, want 1", n)
	}
	for _, id := range ids {
		waitForStatus(t, s.base, id, stateSuccess, 60*time.Second)
	}
	assertOneResultEach(t, env, ids)
}

// closeConnections closes, with rabbitmqctl close_connection, the
// RabbitMQ connections that process pid opened for purpose ("errand-consumer"
// or "errand-publisher"), and returns how many it closed.
func closeConnections(t testing.TB, purpose string, pid int) int {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", "list_connections", "pid", "client_properties", "-q").CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl list_connections: %v\n%s", err, out)
	}
	closed := 0
	for _, line := range strings.Split(string(out), "\n") {
		if !strings.Contains(line, `"`+purpose+" ") || !strings.Contains(line, fmt.Sprintf(" pid %d\"", pid)) {
			continue
		}
		connPid, _, _ := strings.Cut(line, "\t")
		if out, err := exec.Command("rabbitmqctl", "close_connection", connPid, "closed by an errand test").CombinedOutput(); err != nil {
			t.Fatalf("rabbitmqctl close_connection %s: %v\n%s", connPid, err, out)
		}
		closed++
	}
	return closed
}
