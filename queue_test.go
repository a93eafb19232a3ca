package main

import (
	"fmt"
	"testing"
	"time"
)

// TestPriorityReorders queues a backlog of low-priority tasks for a single
// worker, then one high-priority task, and checks that the high one
// finishes before most of the backlog that was queued ahead of it.
func TestPriorityReorders(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			e := env(t)
			e["WORKERS"] = "1"
			e["HEAVY_TASK_DELAY"] = "40ms"
			base := startErrand(t, e)
			const backlog = 12
			var lows []string
			for i := range backlog {
				lows = append(lows, submitTask(t, base, fmt.Sprintf(`{"data": "low %d", "iterations": 2, "priority": "low"}`, i)))
			}
			// Lows that finish while the backlog is still being submitted
			// (a loaded machine submits slowly) were never behind the high
			// one; only those finishing after it was submitted count.
			highSubmitted := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
			high := submitTask(t, base, `{"data": "urgent", "iterations": 2, "priority": "high"}`)

			highDone := waitForStatus(t, base, high, stateSuccess, 30*time.Second).Result["completed_at"].(string)
			overtook, waited := 0, 0
			for _, id := range lows {
				low := waitForStatus(t, base, id, stateSuccess, 30*time.Second).Result["completed_at"].(string)
				if low >= highSubmitted && low < highDone {
					overtook++
				}
				if low >= highDone {
					waited++
				}
			}
			if overtook+waited < backlog/2 {
				t.Fatalf("only %d of %d low-priority tasks were still queued when the high one came: the backlog did not test priority", overtook+waited, backlog)
			}
			// One low task is running when the high one arrives and, at most,
			// one more is already prefetched; every other one must wait.
			if overtook > 2 {
				t.Errorf("%d of %d earlier low-priority tasks finished between the high-priority one's submit and its end, want at most 2", overtook, backlog)
			}
		})
	}
}
