package main

import (
	"context"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"errand/tasks"
)

func TestCancelQueuedOrScheduledTask(t *testing.T) {
	for _, body := range []string{
		`{"type": "process_heavy_task", "args": {"data": "d"}}`,
		`{"type": "process_heavy_task", "args": {"data": "d"}, "countdown": 600}`,
	} {
		f := newHandlerFixture(t)
		var acc taskAccepted
		decodeAnswer(t, f.serve(t, "POST", "/api/tasks", body, nil), http.StatusAccepted, &acc)
		f.clock.set(handlerEpoch.Add(time.Second))
		var task taskJSON
		decodeAnswer(t, f.serve(t, "POST", "/api/tasks/"+acc.TaskID+"/cancel", "", nil), http.StatusOK, &task)
		at := handlerEpoch.Add(time.Second).Truncate(time.Millisecond)
		if task.Status != stateRevoked || task.Revoked == nil || !task.Revoked.At.Equal(at) || task.FinishedAt == nil {
			t.Errorf("cancel of a %s task answered %+v, want REVOKED at %v", acc.Status, task, at)
		}
		var st map[string]any
		decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+acc.TaskID, "", nil), http.StatusOK, &st)
		if st["status"] != stateRevoked {
			t.Errorf("the guide's status after the cancel: %v, want REVOKED", st)
		}
		if rev, err := f.revocations.revoked(context.Background(), acc.TaskID); err != nil || rev == nil {
			t.Errorf("no cancel recorded for the workers (%v)", err)
		}
		var listed taskListJSON
		decodeAnswer(t, f.serve(t, "GET", "/api/tasks?status=REVOKED", "", nil), http.StatusOK, &listed)
		if len(listed.Tasks) != 1 || listed.Tasks[0].TaskID != acc.TaskID {
			t.Errorf("REVOKED tasks listed: %+v, want the cancelled one", listed.Tasks)
		}
		// A second cancel finds it finished.
		checkErrorAnswer(t, f.serve(t, "POST", "/api/tasks/"+acc.TaskID+"/cancel", "", nil), http.StatusConflict, "already_finished", "")
		if got := testutil.ToFloat64(f.metrics.tasksRevoked.WithLabelValues(tasks.HeavyTaskName)); got != 1 {
			t.Errorf("errand_tasks_revoked_total: got %v, want 1", got)
		}
	}
}

func TestCancelErrors(t *testing.T) {
	f := newHandlerFixture(t)
	const done = "6d1f1c2e-0000-4000-8000-000000000001"
	if _, err := f.items.saveResult(context.Background(), taskRecord{TaskID: done, TaskType: tasks.HeavyTaskName, Status: stateSuccess, CompletedAt: handlerEpoch}); err != nil {
		t.Fatal(err)
	}
	checkErrorAnswer(t, f.serve(t, "POST", "/api/tasks/"+done+"/cancel", "", nil), http.StatusConflict, "already_finished", "")
	checkErrorAnswer(t, f.serve(t, "POST", "/api/tasks/6d1f1c2e-0000-4000-8000-000000000002/cancel", "", nil), http.StatusNotFound, "not_found", "")
	checkErrorAnswer(t, f.serve(t, "POST", "/api/tasks/-x/cancel", "", nil), http.StatusBadRequest, "invalid_id", "")
	if rev, _ := f.revocations.revoked(context.Background(), done); rev != nil {
		t.Errorf("a refused cancel was recorded: %+v", rev)
	}
}

// TestCancelReachesAnotherProcess: the API and the worker are separate
// processes; a cancel through the API stops the task where it runs, and a
// cancel of a scheduled task holds after every errand process restarts.
func TestCancelReachesAnotherProcess(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "100ms"
	api := startErrand(t, withEnv(env, "ROLE", "api"))
	worker := startChild(t, withEnv(env, "ROLE", "worker"))

	running := submitTask(t, api, `{"data": "long", "iterations": 300}`)
	waitForStatus(t, api, running, stateProgress, 20*time.Second)
	cancelled := time.Now()
	if code := apiCall(t, "POST", api+"/api/tasks/"+running+"/cancel", "", nil, nil).StatusCode; code != http.StatusOK {
		t.Fatalf("cancel of a running task: %d", code)
	}
	waitForStatus(t, api, running, stateRevoked, 10*time.Second)
	if took := time.Since(cancelled); took > 5*time.Second {
		t.Errorf("the worker process stopped the task %v after the cancel, want within seconds (it had 30 s to go)", took)
	}

	var later taskAccepted
	if code := apiCall(t, "POST", api+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "later", "iterations": 1}, "countdown": 3}`, nil, &later).StatusCode; code != http.StatusAccepted {
		t.Fatalf("submit a scheduled task: %d", code)
	}
	due := time.Now().Add(3 * time.Second)
	if code := apiCall(t, "POST", api+"/api/tasks/"+later.TaskID+"/cancel", "", nil, nil).StatusCode; code != http.StatusOK {
		t.Fatalf("cancel of a scheduled task: %d", code)
	}
	if err := worker.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = worker.wait(t, 10*time.Second)
	second := startChild(t, withEnv(env, "ROLE", "worker"))
	// The scheduled message comes due, and the new worker settles it
	// (its log names the task) without a run.
	waitFor(t, 20*time.Second, "the new worker to settle the scheduled task", func() bool {
		log, err := os.ReadFile(second.logPath)
		return err == nil && strings.Contains(string(log), later.TaskID)
	})
	if !time.Now().After(due) {
		t.Errorf("the scheduled task was settled before its time")
	}
	started, _ := sampleValue(scrape(t, second.base), "errand_tasks_started_total", map[string]string{"task_type": tasks.HeavyTaskName})
	if started != 0 {
		t.Errorf("the new worker started %v heavy tasks, want none (the only one due was cancelled)", started)
	}
	if st := waitForStatus(t, api, later.TaskID, stateRevoked, time.Second); st.Status != stateRevoked {
		t.Errorf("scheduled task after the restart: %+v, want REVOKED", st)
	}
}
