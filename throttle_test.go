package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"errand/tasks"
)

// TestThrottleContract: each reservation of a type is one interval after
// the one before, however many callers ask at once; types do not share
// slots; a type left alone starts again at once.
func TestThrottleContract(t *testing.T) {
	throttles := map[string]func(t *testing.T) taskThrottle{
		"memory": func(*testing.T) taskThrottle { return newMemoryThrottle(time.Now) },
		"redis": func(t *testing.T) taskThrottle {
			return redisThrottle{client: testRedis(t), prefix: "errand-test:" + newRandomID(6) + ":"}
		},
	}
	for name, newThrottle := range throttles {
		t.Run(name, func(t *testing.T) {
			th := newThrottle(t)
			ctx := context.Background()
			const interval, callers = 50 * time.Millisecond, 8
			waits := make([]time.Duration, callers)
			var wg sync.WaitGroup
			for i := range callers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					w, err := th.reserve(ctx, "a", interval)
					if err != nil {
						t.Error(err)
					}
					waits[i] = w
				}()
			}
			wg.Wait()
			slices.Sort(waits)
			// The callers asked within a few milliseconds of each other:
			// their slots are one interval apart, the first now.
			for i, w := range waits {
				if want := time.Duration(i) * interval; w > want || w < want-20*time.Millisecond {
					t.Errorf("reservation %d waits %s, want %s (less at most the time the calls took)", i, w, want)
				}
			}
			if w, err := th.reserve(ctx, "b", interval); err != nil || w != 0 {
				t.Errorf("first reservation of another type: %s, %v; want no wait", w, err)
			}
			time.Sleep(callers*interval + interval)
			if w, err := th.reserve(ctx, "a", interval); err != nil || w != 0 {
				t.Errorf("reservation after the slots passed: %s, %v; want no wait", w, err)
			}
		})
	}
}

// TestTaskRateLimitAcrossProcesses: with TASK_RATE_LIMITS, a type's tasks
// start one interval apart, all of them, whichever process runs them
// (three on the real stack, sharing RabbitMQ and Redis); the rest wait on
// the delay queues rather than fail.
func TestTaskRateLimitAcrossProcesses(t *testing.T) {
	const tasksToRun, interval = 12, 200 * time.Millisecond
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			e := env(t)
			e["TASK_RATE_LIMITS"], e["HEAVY_TASK_DELAY"], e["WORKERS"] = "process_heavy_task=5/s", "1ms", "2"
			base := startErrand(t, e)
			bases := []string{base}
			if name == "real" {
				for range 2 {
					worker := map[string]string{"ROLE": "worker"}
					for k, v := range e {
						worker[k] = v
					}
					worker["ROLE"] = "worker"
					bases = append(bases, startErrand(t, worker))
				}
			}
			var types []taskTypeJSON
			apiCall(t, "GET", base+"/api/task-types", "", nil, &types)
			if i := slices.IndexFunc(types, func(tt taskTypeJSON) bool { return tt.Name == tasks.HeavyTaskName }); i < 0 || types[i].Policy.RateLimit != "5/s" {
				t.Errorf("task types: %+v, want process_heavy_task's rate_limit 5/s", types)
			}

			var batch []string
			for i := range tasksToRun {
				batch = append(batch, fmt.Sprintf(`{"type": "process_heavy_task", "args": {"data": "r%d", "iterations": 1}}`, i))
			}
			var answer batchAnswer
			apiCall(t, "POST", base+"/api/tasks/batch", `{"tasks": [`+strings.Join(batch, ",")+`]}`, nil, &answer)
			if answer.Accepted != tasksToRun {
				t.Fatalf("batch: %+v, want all %d accepted", answer, tasksToRun)
			}
			var starts []time.Time
			for _, o := range answer.Tasks {
				waitForStatus(t, base, o.TaskID, stateSuccess, 30*time.Second)
				var task taskJSON
				apiCall(t, "GET", base+"/api/tasks/"+o.TaskID, "", nil, &task)
				if task.StartedAt == nil || task.Attempts != 1 {
					t.Fatalf("task %s: %+v, want one run with its start", o.TaskID, task)
				}
				starts = append(starts, *task.StartedAt)
			}
			slices.SortFunc(starts, func(a, b time.Time) int { return a.Compare(b) })
			// A task may start up to etaTolerance early, another as late:
			// no two starts closer than the interval less both.
			for i := 1; i < len(starts); i++ {
				if gap := starts[i].Sub(starts[i-1]); gap < interval-2*etaTolerance {
					t.Errorf("starts %d and %d are %s apart, want about %s (5/s)", i-1, i, gap, interval)
				}
			}
			if span, want := starts[len(starts)-1].Sub(starts[0]), time.Duration(tasksToRun-1)*interval-etaTolerance; span < want {
				t.Errorf("%d starts over %s, want at least %s", tasksToRun, span, want)
			}

			var throttled float64
			ran := 0
			for _, b := range bases {
				families := scrape(t, b)
				v, _ := sampleValue(families, "errand_tasks_throttled_total", map[string]string{"task_type": tasks.HeavyTaskName})
				throttled += v
				if started, _ := sampleValue(families, "errand_tasks_started_total", map[string]string{"task_type": tasks.HeavyTaskName}); started > 0 {
					ran++
				}
			}
			if throttled < tasksToRun/2 {
				t.Errorf("errand_tasks_throttled_total: %g over every process, want most of the %d tasks put off", throttled, tasksToRun)
			}
			if ran != len(bases) {
				t.Errorf("%d of %d processes ran tasks; the test means to share the limit among all", ran, len(bases))
			}
		})
	}
}

// TestTaskRateLimitsSetting: TASK_RATE_LIMITS is type=rate pairs; a bad
// rate stops errand at start, as does a type that does not exist.
func TestTaskRateLimitsSetting(t *testing.T) {
	rates, err := parseTaskRates(" process_image=10/s, import_csv_data=3/10s ,send_welcome_email=1/h")
	want := map[string]tasks.Rate{"process_image": {Count: 10, Per: time.Second}, "import_csv_data": {Count: 3, Per: 10 * time.Second}, "send_welcome_email": {Count: 1, Per: time.Hour}}
	if err != nil || !maps.Equal(rates, want) {
		t.Errorf("parseTaskRates: %v, %v; want %v", rates, err, want)
	}
	for _, bad := range []string{"process_image", "=5/s", "process_image=0/s", "process_image=5/fortnight", "process_image=5", "process_image=x/s", "process_image=5/-1s"} {
		if _, err := parseTestConfig(t, map[string]string{"TASK_RATE_LIMITS": bad}); err == nil || !strings.Contains(err.Error(), "TASK_RATE_LIMITS") {
			t.Errorf("TASK_RATE_LIMITS=%s: %v, want an error that names the setting", bad, err)
		}
	}
	reg := tasks.NewRegistry(tasks.Config{})
	if err := applyTaskRates(reg, "resize_image=5/s"); err == nil || !strings.Contains(err.Error(), "known types") {
		t.Errorf("a rate for a type that does not exist: %v, want an error listing the known types", err)
	}
	if err := applyTaskRates(reg, "process_image=100/m"); err != nil {
		t.Fatal(err)
	}
	if def, _ := reg.Lookup("process_image"); def.Policy.Rate.String() != "100/m" || def.Policy.Rate.Interval() != 600*time.Millisecond {
		t.Errorf("process_image's rate: %v, want 100/m, one start every 600ms", def.Policy.Rate)
	}
}
