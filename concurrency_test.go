package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"errand/tasks"
)

// TestKeySlotsContract: a scope has at most its limit of holders; a
// release frees a slot; a lease that is not renewed ends and frees its
// slot, one that is renewed does not.
func TestKeySlotsContract(t *testing.T) {
	stores := map[string]func(t *testing.T) keySlots{
		"memory": func(*testing.T) keySlots { return newMemoryKeySlots(time.Now) },
		"redis": func(t *testing.T) keySlots {
			return redisKeySlots{client: testRedis(t), prefix: "errand-test:" + newRandomID(6) + ":"}
		},
	}
	for name, newSlots := range stores {
		t.Run(name, func(t *testing.T) {
			s, ctx := newSlots(t), context.Background()
			const lease = 300 * time.Millisecond
			take := func(scope, holder string) bool {
				t.Helper()
				ok, err := s.acquire(ctx, scope, holder, 2, lease)
				if err != nil {
					t.Fatal(err)
				}
				return ok
			}
			if !take("a", "t1") || !take("a", "t2") || take("a", "t3") {
				t.Fatal("limit 2: want t1 and t2 in, t3 out")
			}
			if !take("a", "t1") {
				t.Error("a holder asking again: want its slot kept")
			}
			if !take("b", "t3") {
				t.Error("another scope: want its own slots")
			}
			if n, err := s.held(ctx, "a"); err != nil || n != 2 {
				t.Errorf("held: %d, %v; want 2", n, err)
			}
			if err := s.release(ctx, "a", "t1"); err != nil {
				t.Fatal(err)
			}
			if !take("a", "t3") {
				t.Error("after a release: want t3 in")
			}
			// t2 is renewed, t3 is not: after a lease, only t3's slot is free.
			deadline := time.Now().Add(lease + 150*time.Millisecond)
			for time.Now().Before(deadline) {
				if renewed, err := s.renew(ctx, "a", "t2", lease); err != nil || !renewed {
					t.Fatalf("renew t2: %v, %v; want renewed", renewed, err)
				}
				time.Sleep(lease / 4)
			}
			if n, _ := s.held(ctx, "a"); n != 1 {
				t.Errorf("held after t3's lease ended: %d, want 1 (t2, renewed)", n)
			}
			if !take("a", "t4") || take("a", "t5") {
				t.Error("want t4 in the slot t3's ended lease freed, and t5 out")
			}
			if renewed, err := s.renew(ctx, "a", "t3", lease); err != nil || renewed {
				t.Errorf("renew of t3, whose lease ended: %v, %v; want not renewed", renewed, err)
			}
		})
	}
}

// TestParkedTasksContract: parked tasks leave highest priority first,
// then oldest first; a claimed task is not claimed again until its claim
// is old; removed ones are gone; waiting counts by scope.
func TestParkedTasksContract(t *testing.T) {
	stores := map[string]func(t *testing.T) parkedTasks{
		"memory": func(*testing.T) parkedTasks { return newMemoryParkedTasks(time.Now) },
		"redis and mongodb": func(t *testing.T) parkedTasks {
			db := testMongo(t).Database("errand_test_" + newRandomID(6))
			t.Cleanup(func() { _ = db.Drop(context.Background()) })
			return newDurableParkedTasks(db, testRedis(t), "errand-test:"+newRandomID(6)+":", slog.New(slog.DiscardHandler))
		},
	}
	for name, newParked := range stores {
		t.Run(name, func(t *testing.T) {
			p, ctx := newParked(t), context.Background()
			for i, prio := range []string{"normal", "low", "high", "normal"} {
				m := taskMessage{ID: fmt.Sprintf("t%d", i), Type: "x", Args: json.RawMessage(`{}`), Priority: prio, ConcurrencyKey: "k", Parked: 1, ParkedAt: time.Now()}
				if err := p.park(ctx, "x/k", m); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond) // distinct parked_at, in milliseconds
			}
			if err := p.park(ctx, "x/other", taskMessage{ID: "o1", Type: "x", Priority: "normal", Parked: 1, ParkedAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			if err := p.park(ctx, "x/k", taskMessage{ID: "t0", Type: "x", Priority: "normal", Parked: 1, ParkedAt: time.Now()}); err != nil {
				t.Errorf("parking again a park made already (a duplicate delivery): %v, want nil", err)
			}
			if w, err := p.waiting(ctx); err != nil || w["x/k"] != 4 || w["x/other"] != 1 {
				t.Errorf("waiting: %v, %v; want 4 and 1", w, err)
			}
			ids := func(ms []taskMessage) []string {
				var out []string
				for _, m := range ms {
					out = append(out, m.ID)
				}
				return out
			}
			first, err := p.claim(ctx, "x/k", 2, time.Minute)
			if err != nil || !slices.Equal(ids(first), []string{"t2", "t0"}) {
				t.Fatalf("first claim: %v, %v; want t2 (high) then t0 (normal, older)", ids(first), err)
			}
			if first[0].Priority != "high" || first[0].ConcurrencyKey != "k" {
				t.Errorf("claimed message %+v, want it as parked", first[0])
			}
			second, err := p.claim(ctx, "x/k", 5, time.Minute)
			if err != nil || !slices.Equal(ids(second), []string{"t3", "t1"}) {
				t.Errorf("second claim: %v, %v; want the two not claimed, t3 then t1 (low)", ids(second), err)
			}
			// t3 is released, and parked again (no slot free when it came)
			// before its release forgot it: the new park must survive.
			again := second[0]
			again.Parked++
			if err := p.park(ctx, "x/k", again); err != nil {
				t.Fatal(err)
			}
			for _, m := range []taskMessage{first[0], second[0], second[1]} {
				if err := p.remove(ctx, "x/k", parkedID(m)); err != nil {
					t.Fatal(err)
				}
			}
			if w, _ := p.waiting(ctx); w["x/k"] != 2 {
				t.Errorf("waiting after three releases and a park again: %v, want 2 (t0 claimed, t3 parked again)", w)
			}
			if got, err := p.claim(ctx, "x/k", 5, time.Minute); err != nil || !slices.Equal(ids(got), []string{"t3"}) || got[0].Parked != 2 {
				t.Fatalf("claim: %+v, %v; want t3's second park", got, err)
			} else if err := p.remove(ctx, "x/k", parkedID(got[0])); err != nil {
				t.Fatal(err)
			}
			// t0 was claimed and never removed: its release died. Once its
			// claim is old it can be claimed again.
			if again, _ := p.claim(ctx, "x/k", 5, time.Minute); len(again) != 0 {
				t.Errorf("claim while t0's claim is fresh: %v, want none", ids(again))
			}
			if again, err := p.claim(ctx, "x/k", 5, -time.Second); err != nil || !slices.Equal(ids(again), []string{"t0"}) {
				t.Errorf("claim once t0's claim is old: %v, %v; want t0", ids(again), err)
			}
			if w, _ := p.waiting(ctx); w["x/k"] != 1 {
				t.Errorf("waiting after removals: %v, want 1 left in x/k", w)
			}
		})
	}
}

// taskInterval is when one task ran.
type taskInterval struct{ start, end time.Time }

// maxOverlap is the most intervals that cover one instant; an interval
// that ends as another starts does not overlap it.
func maxOverlap(runs []taskInterval) int {
	type edge struct {
		at    time.Time
		delta int
	}
	var edges []edge
	for _, r := range runs {
		edges = append(edges, edge{r.start, 1}, edge{r.end, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // ends first
	})
	most, now := 0, 0
	for _, e := range edges {
		now += e.delta
		most = max(most, now)
	}
	return most
}

// TestKeyLimitHoldsAcrossProcesses: with MAX_RUNNING_PER_KEY=2, no more
// than two tasks of one key run at once, across three worker processes on
// the real stack (one embedded); the others are parked, not failed, and
// all end SUCCESS; another key has slots of its own.
func TestKeyLimitHoldsAcrossProcesses(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			e := env(t)
			e["MAX_RUNNING_PER_KEY"], e["HEAVY_TASK_DELAY"], e["WORKERS"] = "2", "100ms", "4"
			base := startErrand(t, e)
			bases := []string{base}
			if name == "real" {
				for range 2 {
					bases = append(bases, startErrand(t, withEnv(e, "ROLE", "worker")))
				}
			}
			var batch []string
			for i := range 14 {
				key := "tenant-a"
				if i%4 == 3 {
					key = "tenant-b"
				}
				batch = append(batch, fmt.Sprintf(`{"type": "process_heavy_task", "args": {"data": "k%d", "iterations": 3}, "concurrency_key": %q}`, i, key))
			}
			var answer batchAnswer
			apiCall(t, "POST", base+"/api/tasks/batch", `{"tasks": [`+strings.Join(batch, ",")+`]}`, nil, &answer)
			if answer.Accepted != len(batch) {
				t.Fatalf("batch: %+v", answer)
			}
			runs := map[string][]taskInterval{}
			for _, o := range answer.Tasks {
				waitForStatus(t, base, o.TaskID, stateSuccess, 60*time.Second)
				var task taskJSON
				apiCall(t, "GET", base+"/api/tasks/"+o.TaskID, "", nil, &task)
				if task.StartedAt == nil || task.FinishedAt == nil || task.ConcurrencyKey == "" {
					t.Fatalf("task %s: %+v, want its key, start and end", o.TaskID, task)
				}
				runs[task.ConcurrencyKey] = append(runs[task.ConcurrencyKey], taskInterval{*task.StartedAt, *task.FinishedAt})
			}
			for key, want := range map[string]int{"tenant-a": 11, "tenant-b": 3} {
				if len(runs[key]) != want {
					t.Errorf("%s ran %d tasks, want %d", key, len(runs[key]), want)
				}
				if most := maxOverlap(runs[key]); most != 2 {
					t.Errorf("%s: at most %d tasks ran at once, want exactly its limit, 2", key, most)
				}
			}
			var listed taskListJSON
			apiCall(t, "GET", base+"/api/tasks?concurrency_key=tenant-b&limit=100", "", nil, &listed)
			if len(listed.Tasks) != 3 || slices.ContainsFunc(listed.Tasks, func(tj taskJSON) bool { return tj.ConcurrencyKey != "tenant-b" }) {
				t.Errorf("GET /api/tasks?concurrency_key=tenant-b: %d tasks %+v, want tenant-b's 3", len(listed.Tasks), listed.Tasks)
			}
			page := apiCall(t, "GET", base+"/ui/tasks?concurrency_key=tenant-b", "", nil, nil)
			for _, tj := range listed.Tasks {
				if !strings.Contains(page.body, tj.TaskID) {
					t.Errorf("the console's list filtered by tenant-b lacks %s", tj.TaskID)
				}
			}
			if strings.Count(page.body, "/ui/tasks/") != 3 {
				t.Errorf("the console's list filtered by tenant-b links %d tasks, want 3", strings.Count(page.body, "/ui/tasks/"))
			}

			var parked float64
			for _, b := range bases {
				v, _ := sampleValue(scrape(t, b), "errand_tasks_parked_total", map[string]string{"task_type": tasks.HeavyTaskName})
				parked += v
			}
			if parked < 6 {
				t.Errorf("errand_tasks_parked_total: %g over every process, want most of the tasks over the limit parked", parked)
			}
			var types []taskTypeJSON
			apiCall(t, "GET", base+"/api/task-types", "", nil, &types)
			for _, tt := range types {
				if tt.Policy.MaxRunningPerKey != 2 {
					t.Errorf("%s: max_running_per_key %d, want the default 2", tt.Name, tt.Policy.MaxRunningPerKey)
				}
			}
		})
	}
}

// TestSmallKeyIsNotStuckBehindABigOne: one key queues 10,000 tasks, then
// another submits 10; the second key's tasks start within seconds, not
// after the 10,000 (on the real stack, one process of 8 workers, 4 slots a
// key).
func TestSmallKeyIsNotStuckBehindABigOne(t *testing.T) {
	env := realStack(t)
	env["MAX_RUNNING_PER_KEY"], env["HEAVY_TASK_DELAY"], env["WORKERS"] = "4", "500ms", "8"
	base := startErrand(t, env)
	const big, batchSize = 10_000, 1000
	for b := range big / batchSize {
		var batch []string
		for i := range batchSize {
			batch = append(batch, fmt.Sprintf(`{"type": "process_heavy_task", "args": {"data": "big%d", "iterations": 1}, "concurrency_key": "big"}`, b*batchSize+i))
		}
		var answer batchAnswer
		apiCall(t, "POST", base+"/api/tasks/batch", `{"tasks": [`+strings.Join(batch, ",")+`]}`, nil, &answer)
		if answer.Accepted != batchSize {
			t.Fatalf("big batch %d: %d accepted", b, answer.Accepted)
		}
	}
	submitted := time.Now()
	var small []string
	for i := range 10 {
		small = append(small, submitGenericTask(t, base, fmt.Sprintf(`{"type": "process_heavy_task", "args": {"data": "small%d", "iterations": 1}, "concurrency_key": "small"}`, i)))
	}
	var lastStart time.Time
	for _, id := range small {
		waitForStatus(t, base, id, stateSuccess, 120*time.Second)
		var task taskJSON
		apiCall(t, "GET", base+"/api/tasks/"+id, "", nil, &task)
		if task.StartedAt.After(lastStart) {
			lastStart = *task.StartedAt
		}
	}
	latency := lastStart.Sub(submitted)
	t.Logf("the small key's 10 tasks all started within %s of their submit, behind %d tasks of the big key", latency.Round(time.Millisecond), big)
	// The big key runs 4 at a time, half a second each: 8 a second. Ten
	// thousand take 20 minutes; the small key's must not wait for them.
	if latency > 30*time.Second {
		t.Errorf("the small key's tasks started %s after their submit, want within seconds", latency)
	}
}

// TestKilledWorkersKeySlotEndsWithItsLease: a worker killed (SIGKILL) while
// it holds a key's only slot cannot release it; the slot comes free when
// its lease ends, and the task, redelivered, runs then, as does the next.
func TestKilledWorkersKeySlotEndsWithItsLease(t *testing.T) {
	env := realStack(t)
	env["MAX_RUNNING_PER_KEY"], env["KEY_SLOT_LEASE"], env["HEAVY_TASK_DELAY"] = "1", "3s", "100ms"
	api := startErrand(t, withEnv(env, "ROLE", "api"))
	workerEnv := withEnv(withEnv(env, "ROLE", "worker"), "WORKERS", "2")
	first := startChild(t, workerEnv)

	long := submitGenericTask(t, api, `{"type": "process_heavy_task", "args": {"data": "long", "iterations": 30}, "concurrency_key": "k"}`)
	waitForStatus(t, api, long, stateProgress, 30*time.Second)
	next := submitGenericTask(t, api, `{"type": "process_heavy_task", "args": {"data": "next", "iterations": 1}, "concurrency_key": "k"}`)
	time.Sleep(500 * time.Millisecond) // the next task parked behind it
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = first.wait(t, 10*time.Second)
	killedAt := time.Now()
	startChild(t, workerEnv)

	tasks := map[string]taskJSON{}
	for _, id := range []string{long, next} {
		waitForStatus(t, api, id, stateSuccess, 60*time.Second)
		var task taskJSON
		apiCall(t, "GET", api+"/api/tasks/"+id, "", nil, &task)
		tasks[id] = task
	}
	// The dead worker's lease was renewed at most a third of a lease (1 s)
	// before the kill: its slot stayed taken for 2 s or more after it.
	if wait := tasks[long].StartedAt.Sub(killedAt); wait < 1500*time.Millisecond {
		t.Errorf("the long task started again %s after the kill, want once the dead worker's lease (3 s) ended", wait)
	}
	if !tasks[next].StartedAt.After(*tasks[long].FinishedAt) && !tasks[long].StartedAt.After(*tasks[next].FinishedAt) {
		t.Errorf("the two tasks of the key overlapped: %v–%v and %v–%v, want one at a time",
			tasks[long].StartedAt, tasks[long].FinishedAt, tasks[next].StartedAt, tasks[next].FinishedAt)
	}
}

// TestMaxRunningPerKeySetting: MAX_RUNNING_PER_KEY is a default and
// type=number pairs; a policy's own limit stands unless a pair names its
// type; bad values stop errand at start.
func TestMaxRunningPerKeySetting(t *testing.T) {
	reg := tasks.NewRegistry(tasks.Config{})
	if err := applyKeyLimits(reg, "3, process_image=1"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{"process_image": 1, "process_heavy_task": 3, "import_csv_data": 3} {
		if def, _ := reg.Lookup(name); def.Policy.MaxRunningPerKey != want {
			t.Errorf("%s: %d, want %d", name, def.Policy.MaxRunningPerKey, want)
		}
	}
	if err := applyKeyLimits(reg, "resize_image=2"); err == nil || !strings.Contains(err.Error(), "known types") {
		t.Errorf("a type that does not exist: %v, want an error listing the known ones", err)
	}
	for _, bad := range []string{"-1", "x", "process_image=", "=2", "process_image=two"} {
		if _, err := parseTestConfig(t, map[string]string{"MAX_RUNNING_PER_KEY": bad}); err == nil || !strings.Contains(err.Error(), "MAX_RUNNING_PER_KEY") {
			t.Errorf("MAX_RUNNING_PER_KEY=%s: %v, want an error naming the setting", bad, err)
		}
	}
	f := newHandlerFixture(t)
	for _, bad := range []string{`""`, `"` + strings.Repeat("k", maxConcurrencyKey+1) + `"`, `"tab\there"`, `42`} {
		rec := f.serve(t, "POST", "/api/tasks", `{"type": "process_heavy_task", "args": {"data": "x"}, "concurrency_key": `+bad+`}`, nil)
		if rec.Code != 422 && rec.Code != 400 {
			t.Errorf("concurrency_key %s: %d %s, want a 4xx naming the field", bad, rec.Code, rec.Body)
		}
		if !strings.Contains(rec.Body.String(), "concurrency_key") {
			t.Errorf("concurrency_key %s: %s, want the field named", bad, rec.Body)
		}
	}
}

// TestParkedTasksSurviveRedisLosingThem: parked tasks live in MongoDB;
// should Redis lose their order (a flush, a failover to a replica that
// had not caught up), restore puts them back, in order.
func TestParkedTasksSurviveRedisLosingThem(t *testing.T) {
	ctx := context.Background()
	db := testMongo(t).Database("errand_test_" + newRandomID(6))
	t.Cleanup(func() { _ = db.Drop(context.Background()) })
	rdb, prefix := testRedis(t), "errand-test:"+newRandomID(6)+":"
	p := newDurableParkedTasks(db, rdb, prefix, slog.New(slog.DiscardHandler))
	for _, m := range []taskMessage{{ID: "low", Type: "x", Priority: "low", Parked: 1, ParkedAt: time.Now()}, {ID: "high", Type: "x", Priority: "high", Parked: 1, ParkedAt: time.Now()}} {
		if err := p.park(ctx, "x/k", m); err != nil {
			t.Fatal(err)
		}
	}
	keys, err := rdb.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("redis keys of the parked tasks: %v, %v", keys, err)
	}
	if err := rdb.Del(ctx, keys...).Err(); err != nil {
		t.Fatal(err)
	}
	if w, _ := p.waiting(ctx); len(w) != 0 {
		t.Fatalf("waiting after Redis lost the order: %v, want none seen", w)
	}
	if n, err := p.restore(ctx, time.Now().Add(time.Second)); err != nil || n != 2 {
		t.Fatalf("restore: %d, %v; want 2", n, err)
	}
	if n, err := p.restore(ctx, time.Now().Add(time.Second)); err != nil || n != 0 {
		t.Errorf("restore again: %d, %v; want nothing more to restore", n, err)
	}
	got, err := p.claim(ctx, "x/k", 5, time.Minute)
	if err != nil || len(got) != 2 || got[0].ID != "high" || got[1].ID != "low" {
		t.Errorf("claim after the restore: %+v, %v; want high then low", got, err)
	}
}

// TestCancelledParkedTaskNeverRuns: a task cancelled while it is parked
// ends REVOKED and never starts, although its key's slot comes free.
func TestCancelledParkedTaskNeverRuns(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			e := env(t)
			e["MAX_RUNNING_PER_KEY"], e["HEAVY_TASK_DELAY"] = "1", "100ms"
			base := startErrand(t, e)
			long := submitGenericTask(t, base, `{"type": "process_heavy_task", "args": {"data": "long", "iterations": 50}, "concurrency_key": "k"}`)
			waitForStatus(t, base, long, stateProgress, 20*time.Second)
			parked := submitGenericTask(t, base, `{"type": "process_heavy_task", "args": {"data": "parked", "iterations": 1}, "concurrency_key": "k"}`)
			waitFor(t, 10*time.Second, "the second task parked", func() bool {
				v, _ := sampleValue(scrape(t, base), "errand_tasks_parked_total", map[string]string{"task_type": tasks.HeavyTaskName})
				return v >= 1
			})
			// The overview's gauges: one running, one waiting, over all
			// key buckets (waiting is counted by the sweep).
			waitFor(t, 10*time.Second, "one task running and one waiting in the key gauges", func() bool {
				families := scrape(t, base)
				sum := func(name string) (total float64) {
					for _, m := range families[name].GetMetric() {
						total += m.GetGauge().GetValue()
					}
					return total
				}
				return sum("errand_key_tasks_running") == 1 && sum("errand_key_tasks_waiting") == 1
			})
			var cancelled taskJSON
			if resp := apiCall(t, "POST", base+"/api/tasks/"+parked+"/cancel", "", nil, &cancelled); resp.StatusCode != 200 || cancelled.Status != stateRevoked {
				t.Fatalf("cancel of the parked task: %d %+v", resp.StatusCode, cancelled)
			}
			waitForStatus(t, base, long, stateSuccess, 20*time.Second)
			time.Sleep(2 * keySweepInterval) // a release and a sweep have come and gone
			var task taskJSON
			apiCall(t, "GET", base+"/api/tasks/"+parked, "", nil, &task)
			if task.Status != stateRevoked || task.StartedAt != nil || task.Result != nil {
				t.Errorf("the cancelled parked task: %+v, want REVOKED, never started", task)
			}
		})
	}
}
