package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// deadLetterBroker is what the dead-letter contract exercises.
type deadLetterBroker interface {
	contractBroker
	deadLetterQueue
	publishDead(ctx context.Context, body []byte, taskID, reason string) error
}

func TestDeadLetterContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		deadLetterContract(t, newMemoryBroker(), "rejected", true)
	})
	for queueType, keepsOrder := range map[string]bool{queueClassic: true, queueQuorum: false} {
		t.Run("rabbitmq "+queueType, func(t *testing.T) {
			env := realStack(t)
			b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueType, 5*time.Second, slog.New(slog.DiscardHandler))
			t.Cleanup(b.close)
			deadLetterContract(t, b, "dead-lettered by RabbitMQ: rejected", keepsOrder)
		})
	}
}

// deadLetterContract: a sweep sees the dead letters oldest first with
// their reasons, leaves what it does not remove (in place, when the broker
// keepsOrder; a quorum queue puts what a partial sweep gave back behind
// the rest), and removes exactly what it is told to.
func deadLetterContract(t *testing.T, b deadLetterBroker, brokerReason string, keepsOrder bool) {
	ctx := context.Background()
	for _, m := range []taskMessage{{ID: "dead-a", Owner: "k1"}, {ID: "dead-b", Owner: "k2"}} {
		m.Type, m.Args, m.EnqueuedAt = "t", []byte(`{"n": 1}`), time.Now()
		body, err := encodeTaskMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.publishDead(ctx, body, m.ID, "reason of "+m.ID); err != nil {
			t.Fatalf("publish dead letter %s: %v", m.ID, err)
		}
	}
	if err := b.publishDead(ctx, []byte("not a task"), "", "undecodable message"); err != nil {
		t.Fatal(err)
	}
	// One the broker dead-letters itself: rejected without requeue.
	if err := b.publish(ctx, taskMessage{ID: "dead-c", Type: "t", Args: []byte(`{}`), Priority: "normal", EnqueuedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	consumeCtx, stop := context.WithCancel(ctx)
	out := make(chan delivery)
	go func() { _ = b.consume(consumeCtx, 1, out) }()
	select {
	case d := <-out:
		if err := d.reject(false); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
	}
	stop()

	type seen struct{ ID, Reason string }
	sweep := func(scan int, remove ...string) []seen {
		t.Helper()
		var got []seen
		err := b.sweepDead(ctx, scan, func(d deadLetter) (bool, error) {
			shown, _, _ := d.read()
			got = append(got, seen{shown.TaskID, d.reason})
			if shown.TaskID != "" && d.deadAt.IsZero() {
				t.Errorf("dead letter %s has no time", shown.TaskID)
			}
			return slices.Contains(remove, shown.TaskID), nil
		})
		if err != nil {
			t.Fatalf("sweep: %v", err)
		}
		return got
	}
	all := []seen{{"dead-a", "reason of dead-a"}, {"dead-b", "reason of dead-b"}, {"", "undecodable message"}, {"dead-c", brokerReason}}
	var got []seen
	waitFor(t, 5*time.Second, "the broker's own dead letter", func() bool { got = sweep(100); return len(got) == 4 })
	if diff := cmp.Diff(all, got); diff != "" {
		t.Errorf("first sweep (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(all, sweep(100)); diff != "" {
		t.Errorf("a sweep that removes nothing changed the queue (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(all[:1], sweep(1)); diff != "" {
		t.Errorf("a sweep of 1 (-want +got):\n%s", diff)
	}
	failed := errors.New("visit failed")
	err := b.sweepDead(ctx, 100, func(deadLetter) (bool, error) { return false, failed })
	if !errors.Is(err, failed) {
		t.Errorf("a visit's error: sweep returned %v, want it", err)
	}
	sweep(100, "dead-b")
	want := []seen{all[0], all[2], all[3]}
	got = sweep(100)
	if !keepsOrder {
		byReason := func(a, b seen) int { return strings.Compare(a.Reason, b.Reason) }
		slices.SortFunc(want, byReason)
		slices.SortFunc(got, byReason)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after removing dead-b (-want +got):\n%s", diff)
	}
}

// TestDeadLettersThroughTheAPI lists the dead letters of tasks that failed
// for good, requeues one as a new task, and purges the rest, on the
// embedded backends and on RabbitMQ, Redis and MongoDB.
func TestDeadLettersThroughTheAPI(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			base := startErrand(t, env(t))
			failing := `{"type": "process_image", "args": {"file_id": "000000000000000000000000"}}`
			var ids []string
			for range 2 {
				var acc taskAccepted
				apiCall(t, "POST", base+"/api/tasks", failing, nil, &acc)
				waitForStatus(t, base, acc.TaskID, stateFailure, 20*time.Second)
				ids = append(ids, acc.TaskID)
			}
			var list deadLetterListJSON
			waitFor(t, 10*time.Second, "two dead letters", func() bool {
				apiCall(t, "GET", base+"/api/dead-letters", "", nil, &list)
				return len(list.DeadLetters) == 2
			})
			for i, d := range list.DeadLetters {
				if d.TaskID != ids[i] || d.Type != "process_image" || !strings.Contains(d.Reason, "file not found") || !d.Requeueable || d.DeadAt == nil {
					t.Errorf("dead letter %d: %+v, want task %s, its reason and time", i, d, ids[i])
				}
			}

			var again retryAccepted
			resp := apiCall(t, "POST", base+"/api/dead-letters/"+ids[0]+"/requeue", "", nil, &again)
			if resp.StatusCode != http.StatusAccepted || again.RetryOf != ids[0] || again.TaskID == ids[0] {
				t.Fatalf("requeue: %d %+v, want 202 with a new task", resp.StatusCode, again)
			}
			if st := waitForStatus(t, base, again.TaskID, stateFailure, 20*time.Second); st.TaskType != "process_image" {
				t.Errorf("requeued task is a %s, want process_image", st.TaskType)
			}
			var gone errorBody
			if resp := apiCall(t, "POST", base+"/api/dead-letters/"+ids[0]+"/requeue", "", nil, &gone); resp.StatusCode != http.StatusNotFound || gone.Error != "not_found" {
				t.Errorf("requeue of a dead letter already requeued: %d %+v, want 404 not_found", resp.StatusCode, gone)
			}

			waitFor(t, 10*time.Second, "the requeued task's own dead letter", func() bool {
				apiCall(t, "GET", base+"/api/dead-letters", "", nil, &list)
				return len(list.DeadLetters) == 2
			})
			if got := []string{list.DeadLetters[0].TaskID, list.DeadLetters[1].TaskID}; !slices.Equal(got, []string{ids[1], again.TaskID}) {
				t.Errorf("dead letters after the requeue: %v, want %s and the new task %s", got, ids[1], again.TaskID)
			}
			var purged deadLetterPurgedJSON
			if resp := apiCall(t, "DELETE", base+"/api/dead-letters", "", nil, &purged); resp.StatusCode != http.StatusOK || purged.Purged != 2 {
				t.Errorf("purge: %d %+v, want 200 with 2 purged", resp.StatusCode, purged)
			}
			apiCall(t, "GET", base+"/api/dead-letters", "", nil, &list)
			if len(list.DeadLetters) != 0 || !list.Complete {
				t.Errorf("after the purge: %+v, want none", list)
			}
		})
	}
}

// TestDeadLettersBelongToTheirKey: with API keys, a key lists, requeues
// and purges only the dead letters of its own tasks.
func TestDeadLettersBelongToTheirKey(t *testing.T) {
	f := newHandlerFixture(t, func(p *apiParts) { p.apiKeys = newAPIKeys("key-a,key-b") })
	ctx := context.Background()
	for _, m := range []taskMessage{{ID: "task-a", Owner: mustOwner(t, "key-a")}, {ID: "task-b", Owner: mustOwner(t, "key-b")}} {
		m.Type, m.Args, m.Priority = "process_heavy_task", []byte(`{"data": "x"}`), "normal"
		body, err := encodeTaskMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.broker.publishDead(ctx, body, m.ID, "failed"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.broker.publishDead(ctx, []byte("junk"), "", "undecodable message"); err != nil {
		t.Fatal(err)
	}
	as := map[string]string{"X-API-Key": "key-a"}
	var list deadLetterListJSON
	decodeAnswer(t, f.serve(t, "GET", "/api/dead-letters", "", as), http.StatusOK, &list)
	if len(list.DeadLetters) != 1 || list.DeadLetters[0].TaskID != "task-a" || list.Scanned != 3 {
		t.Errorf("key a's dead letters: %+v, want task-a only, of 3 scanned", list)
	}
	checkErrorAnswer(t, f.serve(t, "POST", "/api/dead-letters/task-b/requeue", "", as), http.StatusNotFound, "not_found", "")
	var purged deadLetterPurgedJSON
	decodeAnswer(t, f.serve(t, "DELETE", "/api/dead-letters", "", as), http.StatusOK, &purged)
	if purged.Purged != 1 {
		t.Errorf("key a purged %d, want 1", purged.Purged)
	}
	if _, dead := f.broker.depth(); dead != 2 {
		t.Errorf("%d dead letters left, want key b's and the undecodable one", dead)
	}
	checkErrorAnswer(t, f.serve(t, "GET", "/api/dead-letters?limit=0", "", as), http.StatusUnprocessableEntity, "validation_error", "limit")
	checkErrorAnswer(t, f.serve(t, "POST", "/api/dead-letters/no%20such/requeue", "", as), http.StatusBadRequest, "invalid_id", "")
}

func mustOwner(t *testing.T, key string) string {
	t.Helper()
	owner, ok := newAPIKeys(key).owner(key)
	if !ok {
		t.Fatalf("no owner for %s", key)
	}
	return owner
}
