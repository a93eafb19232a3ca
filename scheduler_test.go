package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"errand/tasks"
)

// openTestBackends opens the backends env names, as run does.
func openTestBackends(t *testing.T, env map[string]string) (*backends, *metrics) {
	t.Helper()
	cfg, err := parseConfig([]string{"errand"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	m := testMetrics()
	b, err := openBackends(context.Background(), cfg, slog.New(slog.DiscardHandler), m, disabledTracing().tracer)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.close)
	return b, m
}

// TestSchedulerFiresEachTickOnce drives schedulers on a clock of the
// test's: a due tick fires once however many schedulers look at it; ticks
// missed while none ran are skipped and counted, not fired late; a tick
// claimed by a scheduler that died before queueing its task is queued by
// another after the lease.
func TestSchedulerFiresEachTickOnce(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			b, m := openTestBackends(t, env(t))
			t0 := time.Now().Truncate(time.Millisecond)
			var mu sync.Mutex
			clock := t0
			now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
			set := func(d time.Duration) { mu.Lock(); clock = t0.Add(d); mu.Unlock() }
			newSched := func() *scheduler {
				s := newScheduler(b.schedules, quietSubmitter(b), m, slog.New(slog.DiscardHandler))
				s.now = now
				return s
			}
			sched := schedule{Name: "tick", Owner: "owner-" + newRandomID(3), Every: time.Second, CreatedAt: t0, NextRun: t0.Add(time.Second),
				Task: specOf(t, tasks.HeavyTaskName, tasks.HeavyArgs{Data: "tick", Iterations: 1})}
			ctx := context.Background()
			if err := b.schedules.createSchedule(ctx, sched); err != nil {
				t.Fatal(err)
			}
			fired := func() float64 { return testutil.ToFloat64(m.scheduleFired.WithLabelValues(tasks.HeavyTaskName)) }
			queued := func() int {
				t.Helper()
				page, err := b.statuses.listLive(ctx, taskQuery{owner: sched.Owner, limit: 100})
				if err != nil {
					t.Fatal(err)
				}
				return len(page.tasks)
			}

			set(1100 * time.Millisecond)
			newSched().fireDue(ctx)
			newSched().fireDue(ctx)
			if fired() != 1 || queued() != 1 {
				t.Errorf("after the first tick: %v fired, %d queued; want 1 and 1", fired(), queued())
			}
			// Three schedulers (three processes) at the second tick at once.
			set(2100 * time.Millisecond)
			var wg sync.WaitGroup
			for range 3 {
				wg.Add(1)
				go func() { defer wg.Done(); newSched().fireDue(ctx) }()
			}
			wg.Wait()
			if fired() != 2 || queued() != 2 {
				t.Errorf("after the second tick, three schedulers: %v fired, %d queued; want 2 and 2", fired(), queued())
			}
			got, err := b.schedules.getSchedule(ctx, sched.Owner, sched.Name)
			if err != nil || got.LastFired == nil || !got.LastFired.Tick.Equal(t0.Add(2*time.Second)) || !got.NextRun.Equal(t0.Add(3*time.Second)) {
				t.Fatalf("schedule after two ticks: %+v, %v", got, err)
			}

			// Every scheduler down from 2.1 s to 10.5 s: of ticks 3 to 10,
			// the latest (half a second ago) fires, and the seven before it
			// are counted and skipped, not fired late.
			set(10500 * time.Millisecond)
			newSched().fireDue(ctx)
			skipped := func() float64 { return testutil.ToFloat64(m.scheduleSkipped.WithLabelValues(tasks.HeavyTaskName)) }
			if fired() != 3 || queued() != 3 || skipped() != 7 {
				t.Errorf("after a gap of 8 ticks: %v fired, %d queued, %v skipped; want 3, 3 and 7", fired(), queued(), skipped())
			}

			// A scheduler claims tick 11 and dies before queueing its task.
			set(11100 * time.Millisecond)
			if won, err := b.schedules.claimTick(ctx, sched.id(), t0.Add(11*time.Second), t0.Add(11*time.Second), t0.Add(12*time.Second), true, now()); err != nil || !won {
				t.Fatalf("claim tick 11: %v, %v", won, err)
			}
			set(12100 * time.Millisecond)
			newSched().fireDue(ctx) // tick 12 fires; tick 11 is its claimer's until the lease ends
			if fired() != 4 || queued() != 4 {
				t.Errorf("tick 12, with tick 11 claimed within its lease: %v fired, %d queued; want 4 and 4", fired(), queued())
			}
			set(11100*time.Millisecond + 31*time.Second)
			var takeover sync.WaitGroup
			for range 2 {
				takeover.Add(1)
				go func() { defer takeover.Done(); newSched().fireDue(ctx) }()
			}
			takeover.Wait()
			// Tick 11 queued once by one of them, and the latest tick (42)
			// fired by one of them too.
			if fired() != 6 || queued() != 6 {
				t.Errorf("after tick 11's lease, two schedulers: %v fired, %d queued; want tick 11 and tick 42 queued once each (6 and 6)", fired(), queued())
			}
			if stuck, err := b.schedules.stuckTicks(ctx, now()); err != nil || len(stuck) != 0 {
				t.Errorf("ticks left unqueued after the takeover: %+v, %v", stuck, err)
			}

			// A claimed tick left unqueued past its lease and the grace is
			// skipped, not fired: an outage's ticks do not come in a burst.
			if won, err := b.schedules.claimTick(ctx, sched.id(), t0.Add(43*time.Second), t0.Add(43*time.Second), t0.Add(44*time.Second), true, now()); err != nil || !won {
				t.Fatalf("claim tick 43: %v, %v", won, err)
			}
			before := skipped()
			set(43*time.Second + 40*time.Second)
			newSched().fireDue(ctx)
			if queued() != 7 || skipped() < before+1 {
				t.Errorf("after tick 43 waited past its lease and the grace: %d queued, %v skipped; want tick 43 skipped and only the latest tick (83) queued (7)", queued(), skipped()-before)
			}
		})
	}
}

// listOwnTasks lists every task of key through base, newest first.
func listOwnTasks(t *testing.T, base string, key map[string]string) []taskJSON {
	t.Helper()
	var page taskListJSON
	if resp := apiCall(t, "GET", base+"/api/tasks?limit=1000", "", key, &page); resp.StatusCode != http.StatusOK {
		t.Fatalf("list tasks: %d %s", resp.StatusCode, resp.body)
	}
	return page.Tasks
}

// TestScheduleFiresOncePerTickAcrossProcesses: three API processes run a
// scheduler each; a schedule of every second fires once a second, not
// three times.
func TestScheduleFiresOncePerTickAcrossProcesses(t *testing.T) {
	env := realStack(t)
	apiKey := "schedule-key-" + newRandomID(4)
	env["API_KEYS"] = apiKey
	env["ROLE"] = "api"
	key := map[string]string{"X-API-Key": apiKey}
	procs := []*child{startChild(t, env), startChild(t, env), startChild(t, env)}
	body := `{"name": "every-second", "every": "1s", "task": {"type": "process_heavy_task", "args": {"data": "tick", "iterations": 1}}}`
	if resp := apiCall(t, "POST", procs[0].base+"/api/schedules", body, key, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create the schedule: %d %s", resp.StatusCode, resp.body)
	}
	waitFor(t, 20*time.Second, "five ticks", func() bool { return len(listOwnTasks(t, procs[1].base, key)) >= 5 })
	if resp := apiCall(t, "DELETE", procs[2].base+"/api/schedules/every-second", "", key, nil); resp.StatusCode != http.StatusOK {
		t.Fatalf("delete the schedule: %d", resp.StatusCode)
	}
	// A tick being fired as the schedule went may still land.
	time.Sleep(1500 * time.Millisecond)
	tasks := listOwnTasks(t, procs[0].base, key)
	fired := 0.0
	for _, p := range procs {
		n, _ := sampleValue(scrape(t, p.base), "errand_schedule_ticks_fired_total", map[string]string{"task_type": "process_heavy_task"})
		fired += n
	}
	if int(fired) != len(tasks) {
		t.Errorf("the three processes fired %v ticks and %d tasks were queued; want one task a tick", fired, len(tasks))
	}
	for i := 1; i < len(tasks); i++ {
		if gap := tasks[i-1].CreatedAt.Sub(*tasks[i].CreatedAt); gap < 500*time.Millisecond {
			t.Errorf("tasks %d and %d queued %v apart, want a second apart (one a tick)", i-1, i, gap)
		}
	}
}

// TestScheduleSkipsTicksMissedWhileDown: ticks that fell while no errand
// ran are counted and skipped when one starts again, not fired in a burst.
func TestScheduleSkipsTicksMissedWhileDown(t *testing.T) {
	env := realStack(t)
	env["ROLE"] = "api"
	first := startChild(t, env)
	body := `{"name": "every-second", "every": "1s", "task": {"type": "process_heavy_task", "args": {"data": "tick", "iterations": 1}}}`
	if code := apiCall(t, "POST", first.base+"/api/schedules", body, nil, nil).StatusCode; code != http.StatusCreated {
		t.Fatalf("create the schedule: %d", code)
	}
	waitFor(t, 10*time.Second, "two ticks", func() bool { return len(listOwnTasks(t, first.base, nil)) >= 2 })
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.wait(t, 10*time.Second)
	before := len(listOwnTasksDirect(t, env))
	time.Sleep(8 * time.Second) // every errand down: eight ticks fall
	restarted := time.Now()
	second := startChild(t, env)
	waitFor(t, 10*time.Second, "a tick after the restart", func() bool { return len(listOwnTasks(t, second.base, nil)) > before })
	time.Sleep(1500 * time.Millisecond)
	after := listOwnTasks(t, second.base, nil)
	skipped, _ := sampleValue(scrape(t, second.base), "errand_schedule_ticks_skipped_total", map[string]string{"task_type": "process_heavy_task"})
	if skipped < 7 {
		t.Errorf("skipped %v ticks after 8 s down, want at least 7", skipped)
	}
	fresh := 0
	for _, task := range after {
		if task.CreatedAt.After(restarted) {
			fresh++
		}
	}
	if elapsed := time.Since(restarted); float64(fresh) > elapsed.Seconds()+1 {
		t.Errorf("%d tasks queued in the %v after the restart, want about one a second (no burst of missed ticks)", fresh, elapsed.Round(time.Millisecond))
	}
}

// listOwnTasksDirect lists the tasks of a stack while no errand of it
// runs: an errand of its own, briefly.
func listOwnTasksDirect(t *testing.T, env map[string]string) []taskJSON {
	t.Helper()
	b, _ := openTestBackends(t, env)
	page, err := b.statuses.listLive(context.Background(), taskQuery{limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]taskJSON, len(page.tasks))
	for i, st := range page.tasks {
		out[i] = newTaskJSON(st)
	}
	return out
}

// TestScheduleTickSurvivesRabbitMQRestart: a tick that falls while
// RabbitMQ is down cannot be queued; it stays claimed and unrecorded, and
// after the lease, with RabbitMQ back, a scheduler queues it, once.
func TestScheduleTickSurvivesRabbitMQRestart(t *testing.T) {
	env := realStack(t)
	env["PUBLISH_TIMEOUT"] = "1s"
	b, m := openTestBackends(t, env)
	ctx := context.Background()
	rabbitmqctl(t, "stop_app")
	restarted := false
	t.Cleanup(func() {
		if !restarted {
			rabbitmqctl(t, "start_app")
		}
	})
	t0 := time.Now().Truncate(time.Millisecond)
	sched := schedule{Name: "through-an-outage", Owner: "owner-" + newRandomID(3), Every: time.Hour, CreatedAt: t0, NextRun: t0.Add(-time.Second),
		Task: specOf(t, tasks.HeavyTaskName, tasks.HeavyArgs{Data: "tick", Iterations: 1})}
	if err := b.schedules.createSchedule(ctx, sched); err != nil {
		t.Fatal(err)
	}
	s := newScheduler(b.schedules, quietSubmitter(b), m, slog.New(slog.NewTextHandler(logWriter{t}, nil)))
	s.lease = 2 * time.Second
	s.fireDue(ctx) // the tick is due: claimed, but its task cannot be queued
	page, _ := b.statuses.listLive(ctx, taskQuery{owner: sched.Owner, limit: 10})
	if n := len(page.tasks); n != 0 {
		t.Errorf("%d tasks queued with RabbitMQ down, want none", n)
	}
	rabbitmqctl(t, "start_app")
	restarted = true
	waitFor(t, 60*time.Second, "the tick queued after the lease", func() bool {
		s.fireDue(ctx)
		page, err := b.statuses.listLive(ctx, taskQuery{owner: sched.Owner, limit: 10})
		return err == nil && len(page.tasks) > 0
	})
	s.fireDue(ctx)
	page, _ = b.statuses.listLive(ctx, taskQuery{owner: sched.Owner, limit: 10})
	if n := len(page.tasks); n != 1 {
		t.Errorf("%d tasks queued for the tick, want 1", n)
	}
	if fired := testutil.ToFloat64(m.scheduleFired.WithLabelValues(tasks.HeavyTaskName)); fired != 1 {
		t.Errorf("ticks fired: %v, want 1", fired)
	}
}
