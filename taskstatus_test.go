package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"errand/tasks"
)

func TestHandlersTaskStatus(t *testing.T) {
	const id = "6d1f1c2e-0000-4000-8000-000000000001"
	updated := handlerEpoch.Format(time.RFC3339Nano)
	completed := handlerEpoch.Truncate(time.Millisecond).Format(time.RFC3339Nano)
	tests := []struct {
		name    string
		live    *taskStatus // put in the status store
		durable *taskRecord // saved in the result store
		want    map[string]any
	}{
		{
			name: "PROGRESS of process_heavy_task",
			live: &taskStatus{TaskID: id, Status: stateProgress, TaskType: tasks.HeavyTaskName, UpdatedAt: handlerEpoch,
				Progress: &tasks.Progress{Current: 2, Total: 5, Percent: 40, Status: "Processing iteration 2/5"}},
			want: map[string]any{"task_id": id, "status": "PROGRESS", "task_type": tasks.HeavyTaskName, "updated_at": updated,
				"progress": map[string]any{"current": json.Number("2"), "total": json.Number("5"), "progress": json.Number("40"), "status": "Processing iteration 2/5"}},
		},
		{
			name: "PROGRESS of send_welcome_email",
			live: &taskStatus{TaskID: id, Status: stateProgress, TaskType: tasks.WelcomeEmailName, UpdatedAt: handlerEpoch,
				Progress: &tasks.Progress{Percent: 50, Status: "Connecting to email server..."}},
			want: map[string]any{"task_id": id, "status": "PROGRESS", "task_type": tasks.WelcomeEmailName, "updated_at": updated,
				"progress": map[string]any{"progress": json.Number("50"), "status": "Connecting to email server..."}},
		},
		{
			name: "SUCCESS",
			live: &taskStatus{TaskID: id, Status: stateSuccess, TaskType: tasks.WelcomeEmailName, UpdatedAt: handlerEpoch,
				Result: map[string]any{"task_id": id, "user_email": "john@example.com", "user_name": "John", "status": "sent"}},
			want: map[string]any{"task_id": id, "status": "SUCCESS", "task_type": tasks.WelcomeEmailName, "updated_at": updated,
				"result": map[string]any{"task_id": id, "user_email": "john@example.com", "user_name": "John", "status": "sent"}},
		},
		{
			name: "FAILURE",
			live: &taskStatus{TaskID: id, Status: stateFailure, TaskType: tasks.HeavyTaskName, UpdatedAt: handlerEpoch, Error: "invalid task arguments"},
			want: map[string]any{"task_id": id, "status": "FAILURE", "task_type": tasks.HeavyTaskName, "updated_at": updated, "error": "invalid task arguments"},
		},
		{
			name: "SUCCESS from the result store once the live status is gone",
			durable: &taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateSuccess, CompletedAt: handlerEpoch,
				Result: map[string]any{"task_id": id, "status": "completed", "total_processed": 5}},
			want: map[string]any{"task_id": id, "status": "SUCCESS", "task_type": tasks.HeavyTaskName, "updated_at": completed,
				"result": map[string]any{"task_id": id, "status": "completed", "total_processed": json.Number("5")}},
		},
		{
			name:    "FAILURE from the result store",
			durable: &taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateFailure, CompletedAt: handlerEpoch, Error: "boom"},
			want:    map[string]any{"task_id": id, "status": "FAILURE", "task_type": tasks.HeavyTaskName, "updated_at": completed, "error": "boom"},
		},
		{
			name: "the live status wins over the result store",
			live: &taskStatus{TaskID: id, Status: stateProgress, TaskType: tasks.HeavyTaskName, UpdatedAt: handlerEpoch,
				Progress: &tasks.Progress{Current: 1, Total: 2, Percent: 50, Status: "Processing iteration 1/2"}},
			durable: &taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateSuccess, CompletedAt: handlerEpoch, Result: map[string]any{"x": 1}},
			want: map[string]any{"task_id": id, "status": "PROGRESS", "task_type": tasks.HeavyTaskName, "updated_at": updated,
				"progress": map[string]any{"current": json.Number("1"), "total": json.Number("2"), "progress": json.Number("50"), "status": "Processing iteration 1/2"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			ctx := context.Background()
			if tc.live != nil {
				if err := f.statuses.put(ctx, *tc.live, 0); err != nil {
					t.Fatal(err)
				}
			}
			if tc.durable != nil {
				if _, err := f.items.saveResult(ctx, *tc.durable); err != nil {
					t.Fatal(err)
				}
			}
			var got map[string]any
			decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+id, "", nil), http.StatusOK, &got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlersTaskStatusErrors(t *testing.T) {
	tests := []struct {
		name       string
		id         string
		adjust     func(*apiParts)
		wantStatus int
		wantCode   string
	}{
		{name: "unknown id", id: "6d1f1c2e-0000-4000-8000-000000000000", wantStatus: 404, wantCode: "not_found"},
		{name: "200-character id", id: strings.Repeat("a", 200), wantStatus: 400, wantCode: "invalid_id"},
		{name: "id starting with a dash", id: "-abc", wantStatus: 400, wantCode: "invalid_id"},
		{name: "id with a space", id: "a%20b", wantStatus: 400, wantCode: "invalid_id"},
		{
			name: "status store down, result store has nothing",
			id:   "6d1f1c2e-0000-4000-8000-000000000000",
			adjust: func(d *apiParts) {
				d.statuses = failingStatusStore{memoryStatusStore: newMemoryStatusStore(), getErr: fmt.Errorf("redis get: %w", context.DeadlineExceeded)}
			},
			wantStatus: 503, wantCode: "unavailable",
		},
		{
			name: "status store has nothing, result store down",
			id:   "6d1f1c2e-0000-4000-8000-000000000000",
			adjust: func(d *apiParts) {
				d.results = failingResultStore{memoryStore: newMemoryStore(), err: fmt.Errorf("mongo find: %w", context.DeadlineExceeded)}
			},
			wantStatus: 503, wantCode: "unavailable",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t, func(d *apiParts) {
				if tc.adjust != nil {
					tc.adjust(d)
				}
			})
			checkErrorAnswer(t, f.serve(t, "GET", "/api/async/status/"+tc.id, "", nil), tc.wantStatus, tc.wantCode, "")
		})
	}
}

// failingResultStore is a memoryStore whose result reads fail with err.
type failingResultStore struct {
	*memoryStore
	err error
}

func (s failingResultStore) getResult(context.Context, string) (taskRecord, error) {
	return taskRecord{}, s.err
}

func TestHandlersTaskStatusFallbackWhenStatusStoreDown(t *testing.T) {
	const id = "6d1f1c2e-0000-4000-8000-000000000002"
	f := newHandlerFixture(t, func(d *apiParts) {
		d.statuses = failingStatusStore{memoryStatusStore: newMemoryStatusStore(), getErr: errors.New("redis down")}
	})
	if _, err := f.items.saveResult(context.Background(), taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateSuccess, CompletedAt: handlerEpoch, Result: map[string]any{"status": "completed"}}); err != nil {
		t.Fatal(err)
	}
	var st taskStatus
	decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+id, "", nil), http.StatusOK, &st)
	if st.Status != stateSuccess || st.Result["status"] != "completed" {
		t.Errorf("status: got %+v, want SUCCESS with the stored result", st)
	}
}

// TestStatusFallsBackToResultStore: once the final status expires from
// Redis, the status endpoint answers from MongoDB.
func TestStatusFallsBackToResultStore(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	env["RESULT_TTL"] = "300ms"
	base := startErrand(t, env)
	id := submitTask(t, base, `{"data": "short lived", "iterations": 2}`)
	live := waitForStatus(t, base, id, stateSuccess, 30*time.Second)
	rdb := testRedis(t)
	waitFor(t, 10*time.Second, "the Redis status to expire", func() bool {
		n, err := rdb.Exists(context.Background(), env["REDIS_KEY_PREFIX"]+"task:"+id).Result()
		return err == nil && n == 0
	})
	var fromMongo taskStatus
	if code := apiCall(t, "GET", base+"/api/async/status/"+id, "", nil, &fromMongo).StatusCode; code != http.StatusOK {
		t.Fatalf("status after expiry: %d, want 200", code)
	}
	if fromMongo.Status != stateSuccess || fromMongo.Result["completed_at"] != live.Result["completed_at"] || fromMongo.Result["total_processed"] != float64(2) {
		t.Errorf("status from MongoDB = %+v, want the SUCCESS seen live (%+v)", fromMongo, live)
	}
}
