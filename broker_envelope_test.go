package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestTaskEnvelopeRoundTrip(t *testing.T) {
	msgs := []taskMessage{
		{ID: "a", Type: "t", Args: json.RawMessage(`{"x":1}`), Priority: "normal", EnqueuedAt: time.Unix(1, 0).UTC()},
		{ID: "b", Type: "t", Args: json.RawMessage(`{}`), Priority: "normal", EnqueuedAt: time.Unix(2, 0).UTC(), Trace: map[string]string{"traceparent": "00-x"}},
	}
	body, err := encodeTaskEnvelope(msgs)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := splitTaskEnvelope(body)
	if err != nil {
		t.Fatal(err)
	}
	var got []taskMessage
	for _, p := range parts {
		m, err := decodeTaskMessage(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if diff := cmp.Diff(msgs, got); diff != "" {
		t.Errorf("tasks after a round trip (-want +got):\n%s", diff)
	}
	for _, bad := range []string{``, `{}`, `[]`, `[{"id":"a"}`, `"x"`} {
		if _, err := splitTaskEnvelope([]byte(bad)); err == nil {
			t.Errorf("splitTaskEnvelope(%q) succeeded, want an error", bad)
		}
	}
}

// TestEnvelopeSettlement: the message is settled once, by the last part,
// acked only if every part was.
func TestEnvelopeSettlement(t *testing.T) {
	tests := []struct {
		name        string
		acks        []bool // each part's outcome, in settling order
		wantAck     int
		wantRequeue int
	}{
		{"all acked", []bool{true, true, true}, 1, 0},
		{"one rejected", []bool{true, false, true}, 0, 1},
		{"all rejected", []bool{false, false}, 0, 1},
		{"single part", []bool{true}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var acks, requeues int
			e := newEnvelopeSettlement(len(tt.acks), func() error { acks++; return nil }, func() error { requeues++; return nil })
			parts := e.parts(make([][]byte, len(tt.acks)), nil, false)
			for i, ok := range tt.acks {
				if acks+requeues != 0 {
					t.Fatalf("message settled before part %d of %d", i+1, len(parts))
				}
				settle := parts[i].ack
				if !ok {
					settle = func() error { return parts[i].reject(true) }
				}
				if err := settle(); err != nil {
					t.Fatalf("settle part %d: %v", i, err)
				}
			}
			if acks != tt.wantAck || requeues != tt.wantRequeue {
				t.Errorf("got %d acks and %d requeues, want %d and %d", acks, requeues, tt.wantAck, tt.wantRequeue)
			}
			if err := parts[0].ack(); err == nil {
				t.Error("settling a part twice succeeded")
			}
			if acks != tt.wantAck || requeues != tt.wantRequeue {
				t.Errorf("settling a part twice settled the message again")
			}
		})
	}
}

// TestConcurrentPublishesShareEnvelopes: publishes that overlap travel in
// shared messages, and every task arrives exactly once.
func TestConcurrentPublishesShareEnvelopes(t *testing.T) {
	for _, queueType := range []string{queueClassic, queueQuorum} {
		t.Run(queueType, func(t *testing.T) {
			env := realStack(t)
			b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueType, 5*time.Second, slog.New(slog.DiscardHandler))
			t.Cleanup(b.close)
			const publishers, each = 40, 5
			var want []string
			var wg sync.WaitGroup
			start := make(chan struct{})
			for p := range publishers {
				for i := range each {
					want = append(want, fmt.Sprintf("p%02d-%d", p, i))
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					for i := range each {
						id := fmt.Sprintf("p%02d-%d", p, i)
						if err := b.publish(context.Background(), taskMessage{ID: id, Type: "t", Args: []byte(`{}`), Priority: "normal", EnqueuedAt: time.Now()}); err != nil {
							t.Errorf("publish %s: %v", id, err)
						}
					}
				}()
			}
			close(start)
			wg.Wait()

			got, envelopes := drainRaw(t, env["QUEUE_NAME"])
			sort.Strings(want)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("tasks on the queue (-want +got):\n%s", diff)
			}
			if envelopes == 0 {
				t.Errorf("%d overlapping publishes made no envelope", len(want))
			}
		})
	}
}

// drainRaw takes every message off queue with basic.get and returns the
// task ids they carry, sorted, and how many of the messages were envelopes.
func drainRaw(t *testing.T, queue string) (ids []string, envelopes int) {
	t.Helper()
	ch, closeChannel := testAMQPChannel(t)
	defer closeChannel()
	for {
		d, ok, err := ch.Get(queue, true) // autoAck
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		bodies := [][]byte{d.Body}
		if d.ContentType == taskEnvelopeContentType {
			envelopes++
			if bodies, err = splitTaskEnvelope(d.Body); err != nil {
				t.Fatal(err)
			}
		}
		for _, body := range bodies {
			m, err := decodeTaskMessage(body)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, m.ID)
		}
	}
	sort.Strings(ids)
	return ids, envelopes
}

// TestEnvelopeComesBackWholeUntilEveryPartIsAcked: a consumer that acks
// some parts and loses its connection, or rejects one part, gets the
// whole envelope back, every part marked redelivered; acking every part
// removes it.
func TestEnvelopeComesBackWholeUntilEveryPartIsAcked(t *testing.T) {
	env := realStack(t)
	queue := env["QUEUE_NAME"]
	ids := []string{"e-1", "e-2", "e-3"}
	var msgs []taskMessage
	for _, id := range ids {
		msgs = append(msgs, taskMessage{ID: id, Type: "t", Args: []byte(`{}`), Priority: "normal", EnqueuedAt: time.Now()})
	}
	publisher := newAMQPBroker(services.amqpURL, queue, queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(publisher.close)
	if err := publisher.publishTasks(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}

	// receive starts a consumer and returns the deliveries of one message.
	receive := func(t *testing.T) (*amqpBroker, []delivery) {
		t.Helper()
		b := newAMQPBroker(services.amqpURL, queue, queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(func() { cancel(); b.close() })
		out := make(chan delivery)
		go func() { _ = b.consume(ctx, 1, out) }()
		var parts []delivery
		for range ids {
			select {
			case d := <-out:
				parts = append(parts, d)
			case <-time.After(10 * time.Second):
				t.Fatalf("got %d of the envelope's %d tasks", len(parts), len(ids))
			}
		}
		var got []string
		for _, d := range parts {
			m, err := decodeTaskMessage(d.body)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, m.ID)
		}
		if diff := cmp.Diff(ids, got); diff != "" {
			t.Fatalf("the envelope's tasks (-want +got):\n%s", diff)
		}
		return b, parts
	}

	first, parts := receive(t)
	if parts[0].redelivered {
		t.Error("a first delivery is marked redelivered")
	}
	for _, d := range parts[:2] {
		if err := d.ack(); err != nil {
			t.Fatal(err)
		}
	}
	first.close() // the third part is never settled
	waitFor(t, 10*time.Second, "the envelope back on the queue", func() bool { return queueDepth(t, queue) == 1 })

	second, parts := receive(t)
	for i, d := range parts {
		if !d.redelivered {
			t.Errorf("part %d of a redelivered envelope not marked redelivered", i)
		}
	}
	_ = parts[0].ack()
	_ = parts[1].reject(true)
	_ = parts[2].ack()
	second.close()
	waitFor(t, 10*time.Second, "the envelope requeued after a rejected part", func() bool { return queueDepth(t, queue) == 1 })

	third, parts := receive(t)
	for _, d := range parts {
		if err := d.ack(); err != nil {
			t.Fatal(err)
		}
	}
	third.close()
	time.Sleep(200 * time.Millisecond) // a wrongly requeued message would be back by now
	if n := queueDepth(t, queue); n != 0 {
		t.Errorf("%d messages on the queue after every part was acked, want 0", n)
	}
}

// TestEnvelopeShutdownRequeuesUnstartedParts: a consumer that stops while
// an envelope's later parts wait for a worker rejects those parts, so once
// the started part is acked the whole envelope goes back to the queue.
func TestEnvelopeShutdownRequeuesUnstartedParts(t *testing.T) {
	env := realStack(t)
	queue := env["QUEUE_NAME"]
	b := newAMQPBroker(services.amqpURL, queue, queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	var msgs []taskMessage
	for _, id := range []string{"s-1", "s-2", "s-3"} {
		msgs = append(msgs, taskMessage{ID: id, Type: "t", Args: []byte(`{}`), Priority: "normal", EnqueuedAt: time.Now()})
	}
	if err := b.publishTasks(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	out := make(chan delivery)
	consumed := make(chan error, 1)
	go func() { consumed <- b.consume(ctx, 1, out) }()
	var started delivery
	select {
	case started = <-out:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s")
	}
	stop() // parts 2 and 3 are never taken
	if err := <-consumed; err != nil {
		t.Fatalf("consume returned %v, want nil after its context ended", err)
	}
	if n := queueDepth(t, queue); n != 0 {
		t.Fatalf("%d messages ready while a part is still running, want 0", n)
	}
	if err := started.ack(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the envelope back on the queue", func() bool { return queueDepth(t, queue) == 1 })
}

// TestLongHeldEnvelopeTasksGoBackAlone: an envelope none of whose tasks
// has started goes back to the queue as single messages once it has
// waited past the hold limit, and is acked; an envelope with a task
// running, a redelivered envelope and single messages stay where they
// are, in order.
func TestLongHeldEnvelopeTasksGoBackAlone(t *testing.T) {
	env := realStack(t)
	queue := env["QUEUE_NAME"]
	const hold = 200 * time.Millisecond
	newBroker := func() (*amqpBroker, *atomic.Int64) {
		b := newAMQPBroker(services.amqpURL, queue, queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
		b.envelopeHold = hold
		var republished atomic.Int64
		b.onRepublish = func(n int) { republished.Add(int64(n)) }
		t.Cleanup(b.close)
		return b, &republished
	}
	b, republished := newBroker()
	task := func(id string) taskMessage {
		return taskMessage{ID: id, Type: "t", Args: []byte(`{}`), Priority: "normal", EnqueuedAt: time.Now()}
	}
	ctx := context.Background()
	for _, err := range []error{
		b.publishTasks(ctx, []taskMessage{task("h-1"), task("h-2"), task("h-3")}),
		b.publishTasks(ctx, []taskMessage{task("h-4"), task("h-5")}),
		b.publishTask(ctx, task("h-6")),
		b.publishTask(ctx, task("h-7")), // waits on the queue: the prefetch is 3 messages
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	consume := func(b *amqpBroker) (chan delivery, func()) {
		ctx, stop := context.WithCancel(context.Background())
		out := make(chan delivery)
		consumed := make(chan error, 1)
		go func() { consumed <- b.consume(ctx, 3, out) }()
		return out, func() {
			stop()
			if err := <-consumed; err != nil {
				t.Errorf("consume returned %v, want nil after its context ended", err)
			}
		}
	}
	take := func(out chan delivery, want string, redelivered bool) delivery {
		t.Helper()
		select {
		case d := <-out:
			if m, err := decodeTaskMessage(d.body); err != nil || m.ID != want || d.redelivered != redelivered {
				t.Fatalf("delivered %+v (%v, redelivered %v), want %s (redelivered %v)", m, err, d.redelivered, want, redelivered)
			}
			return d
		case <-time.After(10 * time.Second):
			t.Fatalf("no delivery within 10s, want %s", want)
			return delivery{}
		}
	}

	// One busy worker: h-1 runs; the rest of its envelope, the second
	// envelope and h-6 wait. Once the second envelope is republished and
	// acked, its slot takes h-7, and the copies stay on the queue.
	out, stop := consume(b)
	take(out, "h-1", false) // never settled: its connection closes below
	waitFor(t, 10*time.Second, "the waiting envelope's tasks back on the queue", func() bool { return queueDepth(t, queue) == 2 })
	ids, envelopes := drainRaw(t, queue)
	if diff := cmp.Diff([]string{"h-4", "h-5"}, ids); diff != "" || envelopes != 0 {
		t.Fatalf("back on the queue: %v in %d envelopes, want h-4 and h-5 as single messages (-want +got):\n%s", ids, envelopes, diff)
	}
	if n := republished.Load(); n != 2 {
		t.Errorf("onRepublish counted %d tasks, want 2", n)
	}
	// Losing the connection with h-1 unsettled brings back its whole
	// envelope and the single messages, but not the republished envelope,
	// which was acked.
	stop()
	b.close()
	waitFor(t, 10*time.Second, "the started envelope and the single messages back", func() bool { return queueDepth(t, queue) == 3 })

	// Redelivered, the envelope stays held past the limit too: its tasks
	// need the worker's redelivery checks.
	b2, republished2 := newBroker()
	out, stop = consume(b2)
	time.Sleep(4 * hold)
	if n := queueDepth(t, queue); n != 0 || republished2.Load() != 0 {
		t.Fatalf("%d messages on the queue and %d tasks republished after a redelivered envelope waited, want 0 and 0", n, republished2.Load())
	}
	for _, id := range []string{"h-1", "h-2", "h-3", "h-6", "h-7"} {
		if err := take(out, id, true).ack(); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	b2.close()
	for range 10 {
		if n := queueDepth(t, queue); n != 0 {
			t.Fatalf("%d messages back on the queue after every task was acked, want 0", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConcurrentSubmitsRunOnceEach: through the API and a worker, tasks
// submitted together share messages and each still runs to exactly one
// result.
func TestConcurrentSubmitsRunOnceEach(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "0s"
	env["QUEUE_TYPE"] = queueQuorum
	base := startErrand(t, env)
	const clients, each = 16, 8
	ids := make(chan string, clients*each)
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var acc taskAccepted
				body := fmt.Sprintf(`{"data":"c%d-%d","iterations":1}`, c, i)
				if code := apiCall(t, http.MethodPost, base+"/api/async/process", body, nil, &acc).StatusCode; code != http.StatusAccepted {
					t.Errorf("submit %s: %d, want 202", body, code)
					return
				}
				ids <- acc.TaskID
			}
		}()
	}
	wg.Wait()
	close(ids)
	var all []string
	for id := range ids {
		waitForStatus(t, base, id, stateSuccess, 30*time.Second)
		all = append(all, id)
	}
	assertOneResultEach(t, env, all)
	m, ok := findMetric(scrape(t, base), "errand_broker_tasks_per_message", nil)
	if !ok {
		t.Fatal("no errand_broker_tasks_per_message metric")
	}
	h := m.GetHistogram()
	if h.GetSampleSum() != float64(len(all)) {
		t.Errorf("messages carried %v tasks, want %d", h.GetSampleSum(), len(all))
	}
	t.Logf("%d tasks in %d messages", len(all), h.GetSampleCount())
}
