package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestWorkflowClaimsHaveOneHolder: claimers racing for the same steps
// each get a share, no step goes to two, and a claimer asking again gets
// back what it holds (on MongoDB through FerretDB, and in memory).
func TestWorkflowClaimsHaveOneHolder(t *testing.T) {
	stores := map[string]func(t *testing.T) workflowStore{
		"memory": func(*testing.T) workflowStore { return newMemoryWorkflows() },
		"mongo": func(t *testing.T) workflowStore {
			env := realStack(t)
			m := newMongoWorkflows(testMongo(t).Database(env["MONGODB_DATABASE"]))
			if err := m.ensureIndexes(context.Background()); err != nil {
				t.Fatal(err)
			}
			return m
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			store := open(t)
			ctx := context.Background()
			const claimers, steps = 12, 40
			all := make([]int, steps)
			for i := range all {
				all[i] = i
			}
			held := make([][]int, claimers)
			var wg sync.WaitGroup
			for c := range claimers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					mine, before, err := store.claimSteps(ctx, "wf-race", all, fmt.Sprintf("claimer-%d", c))
					if err != nil {
						t.Errorf("claimer %d: %v", c, err)
					}
					if len(before) != 0 {
						t.Errorf("claimer %d held %v before it claimed anything", c, before)
					}
					held[c] = mine
				}()
			}
			wg.Wait()
			owner := map[int]int{}
			for c, mine := range held {
				for _, s := range mine {
					if prev, taken := owner[s]; taken {
						t.Errorf("step %d claimed by claimer %d and claimer %d", s, prev, c)
					}
					owner[s] = c
				}
			}
			if len(owner) != steps {
				t.Errorf("%d of %d steps claimed", len(owner), steps)
			}
			for c, mine := range held {
				fresh, again, err := store.claimSteps(ctx, "wf-race", all, fmt.Sprintf("claimer-%d", c))
				if err != nil {
					t.Fatal(err)
				}
				if len(fresh) != 0 || !slices.Equal(again, mine) {
					t.Errorf("claimer %d asking again: fresh %v, held %v; it claimed %v", c, fresh, again, mine)
				}
			}
			runs := make([]bool, claimers)
			for c := range claimers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ok, err := store.claimRun(ctx, "wf-race", 5, fmt.Sprintf("copy-%d", c))
					if err != nil {
						t.Errorf("copy %d: %v", c, err)
					}
					runs[c] = ok
				}()
			}
			wg.Wait()
			if n := len(slices.DeleteFunc(slices.Clone(runs), func(ok bool) bool { return !ok })); n != 1 {
				t.Errorf("%d copies of one step may run, want 1", n)
			}
			winner := slices.Index(runs, true)
			if ok, err := store.claimRun(ctx, "wf-race", 5, fmt.Sprintf("copy-%d", winner)); err != nil || !ok {
				t.Errorf("the running copy, delivered again, may not run: %v %v", ok, err)
			}
			if err := store.recordEnd(ctx, "wf-race", 3, stateSuccess); err != nil {
				t.Fatal(err)
			}
			if err := store.recordEnd(ctx, "wf-race", 3, stateFailure); err != nil {
				t.Fatal(err)
			}
			if ended, err := store.ended(ctx, "wf-race"); err != nil || len(ended) != 1 || ended[3] != stateSuccess {
				t.Errorf("ended: %v, %v; want step 3 SUCCESS, the first end recorded", ended, err)
			}
		})
	}
}

// TestWorkflowStepStartsWhenItsWorkerDiesBeforeStartingIt: a worker
// process stores a step's result and claims the next step, and is killed
// (SIGKILL) before the broker has confirmed the next step: RabbitMQ's
// memory alarm, set to block every publisher, holds its publish. Another
// worker gets the first step again (its ack never came), finds its result
// and its own claim, and publishes the next step again: it runs once
// whether or not the dead worker's copy reached the queue, and the
// workflow ends SUCCESS.
func TestWorkflowStepStartsWhenItsWorkerDiesBeforeStartingIt(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "300ms"
	api := startChild(t, withEnv(env, "ROLE", "api"))
	first := startChild(t, withEnv(withEnv(env, "ROLE", "worker"), "WORKERS", "1"))
	acc := submitWorkflow(t, api.base, `{"chain": [{"type": "process_heavy_task", "args": {"data": "one", "iterations": 3}},
		{"type": "process_heavy_task", "args": {"data": "two", "iterations": 1}}]}`)
	waitForStatus(t, api.base, acc.Steps[0].TaskID, stateProgress, 20*time.Second)

	rabbitmqctl(t, "set_vm_memory_high_watermark", "0")
	alarmOn := true
	restore := func() {
		if alarmOn {
			rabbitmqctl(t, "set_vm_memory_high_watermark", "0.4")
			alarmOn = false
		}
	}
	t.Cleanup(restore)

	claims := testMongo(t).Database(env["MONGODB_DATABASE"]).Collection("workflow_claims")
	waitFor(t, 20*time.Second, "the first worker to claim the second step", func() bool {
		n, err := claims.CountDocuments(context.Background(), bson.D{{Key: "_id", Value: workflowStepID(acc.WorkflowID, 1)}})
		return err == nil && n == 1
	})
	if err := first.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-first.exited
	restore()
	// The first step is back in the queue (its ack never came). The
	// second may be there too: RabbitMQ may have taken the dead worker's
	// publish without confirming it, so the redelivery's publish makes a
	// second copy, which must not run.
	waitFor(t, 10*time.Second, "the first step to return to the queue", func() bool { return queueDepth(t, env["QUEUE_NAME"]) >= 1 })
	time.Sleep(300 * time.Millisecond)
	switch n := queueDepth(t, env["QUEUE_NAME"]); n {
	case 1:
		t.Log("the dead worker's publish of the second step never reached the queue")
	case 2:
		t.Log("the dead worker's publish of the second step reached the queue unconfirmed")
	default:
		t.Fatalf("%d messages in the queue after the kill, want the first step's and maybe the second's", n)
	}

	second := startChild(t, withEnv(withEnv(env, "ROLE", "worker"), "WORKERS", "1"))
	wf := waitForWorkflow(t, api.base, acc.WorkflowID, 30*time.Second)
	if wf.Status != stateSuccess {
		t.Fatalf("workflow ended %s: %+v", wf.Status, wf.Steps)
	}
	for i, step := range acc.Steps {
		starts := 0
		for _, c := range []*child{first, second} {
			log, err := os.ReadFile(c.logPath)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(log), "\n") {
				if strings.Contains(line, `"task started"`) && strings.Contains(line, step.TaskID) {
					starts++
				}
			}
		}
		if starts != 1 {
			t.Errorf("step %d started %d times, want once", i, starts)
		}
	}
}
