package main

import (
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"errand/tasks"
)

// TestUnroutablePublishIsRefused: a message the broker cannot route (its
// queue was deleted under the publisher) is an error, not a silent loss.
func TestUnroutablePublishIsRefused(t *testing.T) {
	env := realStack(t)
	b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	msg := taskMessage{ID: "first", Type: tasks.HeavyTaskName, Args: []byte(`{}`), Priority: "normal"}
	if err := b.publish(context.Background(), msg); err != nil {
		t.Fatalf("publish to the declared queue: %v", err)
	}
	ch, closeChannel := testAMQPChannel(t)
	defer closeChannel()
	if _, err := ch.QueueDelete(env["QUEUE_NAME"], false, false, false); err != nil {
		t.Fatal(err)
	}
	msg.ID = "second"
	if err := b.publish(context.Background(), msg); err == nil {
		t.Fatal("publish to a deleted queue succeeded, want an unroutable error")
	}
}

func TestDelayLevels(t *testing.T) {
	tests := []struct{ delay, want time.Duration }{
		{0, 100 * time.Millisecond},
		{time.Millisecond, 100 * time.Millisecond},
		{1234 * time.Millisecond, 1300 * time.Millisecond},
		{10 * time.Second, 10 * time.Second},
		{10*time.Second + time.Millisecond, 11 * time.Second},
		{14*time.Minute + 500*time.Millisecond, 14*time.Minute + time.Second},
		{15 * time.Minute, 15 * time.Minute},
		{29 * time.Minute, 15 * time.Minute},
		{30 * time.Minute, 30 * time.Minute},
		{5 * time.Hour, 4 * time.Hour},
		{365 * 24 * time.Hour, maxDelayLevel},
	}
	for _, tc := range tests {
		if got := delayLevel(tc.delay); got != tc.want {
			t.Errorf("delayLevel(%v) = %v, want %v", tc.delay, got, tc.want)
		}
	}
	// Past the fine levels a wait never passes the task's time, and the
	// levels stay few over any horizon.
	levels := map[time.Duration]bool{}
	for d := coarseDelay; d <= 60*24*time.Hour; d += 7 * time.Minute {
		level := delayLevel(d)
		if level > d {
			t.Fatalf("delayLevel(%v) = %v, past the task's time", d, level)
		}
		levels[level] = true
	}
	if len(levels) > 12 {
		t.Errorf("%d coarse levels up to 60 days, want at most 12", len(levels))
	}
}

// TestScheduledTaskIsNotHeldBehindALaterOne: a task due in 2 s runs about
// 2 s after its submit although one due in an hour was submitted first.
// (A single delay queue with per-message TTLs would hold it for the hour.)
func TestScheduledTaskIsNotHeldBehindALaterOne(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			e := env(t)
			e["HEAVY_TASK_DELAY"] = "1ms"
			base := startErrand(t, e)
			var later, soon taskAccepted
			if code := apiCall(t, "POST", base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "later", "iterations": 1}, "countdown": 3600}`, nil, &later).StatusCode; code != http.StatusAccepted {
				t.Fatalf("submit due in an hour: %d", code)
			}
			submitted := time.Now()
			if code := apiCall(t, "POST", base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "soon", "iterations": 1}, "countdown": 2}`, nil, &soon).StatusCode; code != http.StatusAccepted {
				t.Fatalf("submit due in 2 s: %d", code)
			}
			if soon.Status != stateScheduled {
				t.Errorf("task due in 2 s answered %s, want SCHEDULED", soon.Status)
			}
			st := waitForStatus(t, base, soon.TaskID, stateSuccess, 10*time.Second)
			took := time.Since(submitted)
			if took < 2*time.Second-etaTolerance || took > 3500*time.Millisecond {
				t.Errorf("task due in 2 s finished %v after its submit (status %+v), want within a second of its time", took, st)
			}
			var waiting taskStatus
			apiCall(t, "GET", base+"/api/async/status/"+later.TaskID, "", nil, &waiting)
			if waiting.Status != stateScheduled {
				t.Errorf("task due in an hour is %s, want SCHEDULED", waiting.Status)
			}
		})
	}
}

// TestDelayQueueGoneIsDeclaredAgain: a delay queue can expire under a
// publisher that declared it (RabbitMQ counts declares as use, not
// publishes); a publish to it then comes back unroutable, and the
// publisher declares the queue again and publishes once more instead of
// failing.
func TestDelayQueueGoneIsDeclaredAgain(t *testing.T) {
	env := realStack(t)
	b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	ctx := context.Background()
	msg := taskMessage{ID: "before", Type: tasks.HeavyTaskName, Args: []byte(`{}`), Priority: "normal"}
	if err := b.publishDelayed(ctx, msg, 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first message through its delay", func() bool { return queueDepth(t, env["QUEUE_NAME"]) == 1 })
	ch, closeChannel := testAMQPChannel(t)
	defer closeChannel()
	delayQueue := env["QUEUE_NAME"] + ".delay.200ms"
	if _, err := ch.QueueDelete(delayQueue, false, false, false); err != nil {
		t.Fatal(err)
	}
	msg.ID = "after"
	if err := b.publishDelayed(ctx, msg, 200*time.Millisecond); err != nil {
		t.Fatalf("publish to a delay queue that is gone: %v, want it declared again and the message taken", err)
	}
	waitFor(t, 10*time.Second, "the second message through its delay", func() bool { return queueDepth(t, env["QUEUE_NAME"]) == 2 })
}
