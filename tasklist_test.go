package main

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"errand/tasks"
)

// listAll pages through GET /api/tasks with query, limit tasks a page,
// and returns the ids in the order listed.
func (f *handlerFixture) listAll(t *testing.T, query url.Values, limit int) []string {
	t.Helper()
	query.Set("limit", strconv.Itoa(limit))
	var ids []string
	for pages := 0; ; pages++ {
		if pages > 50 {
			t.Fatalf("listing %s did not end", query.Encode())
		}
		var page taskListJSON
		decodeAnswer(t, f.serve(t, "GET", "/api/tasks?"+query.Encode(), "", nil), http.StatusOK, &page)
		if len(page.Tasks) > limit {
			t.Errorf("page of %d tasks, want at most %d", len(page.Tasks), limit)
		}
		for _, task := range page.Tasks {
			ids = append(ids, task.TaskID)
		}
		if page.NextCursor == "" {
			return ids
		}
		query.Set("cursor", page.NextCursor)
	}
}

func TestListTasksMergesUnfinishedAndFinished(t *testing.T) {
	f := newHandlerFixture(t)
	submit := func(at time.Duration, body string) string {
		t.Helper()
		f.clock.set(handlerEpoch.Add(at))
		var acc taskAccepted
		decodeAnswer(t, f.serve(t, "POST", "/api/tasks", body, nil), http.StatusAccepted, &acc)
		return acc.TaskID
	}
	finish := func(at time.Duration, id, taskType, state string) string {
		t.Helper()
		if _, err := f.items.saveResult(context.Background(), taskRecord{TaskID: id, TaskType: taskType, Status: state,
			CreatedAt: handlerEpoch.Add(at), CompletedAt: handlerEpoch.Add(at + time.Second)}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	heavy := `{"type": "process_heavy_task", "args": {"data": "d"}}`
	// Newest first: each line is one task, the listing's order.
	want := []string{
		submit(6*time.Second, `{"type": "process_heavy_task", "args": {"data": "later"}, "countdown": 600}`), // SCHEDULED
		finish(5*time.Second, "6d1f1c2e-0000-4000-8000-000000000005", tasks.WelcomeEmailName, stateFailure),
		submit(4*time.Second, heavy),
		finish(3*time.Second, "6d1f1c2e-0000-4000-8000-000000000003", tasks.HeavyTaskName, stateSuccess),
		submit(2*time.Second, heavy),
		finish(time.Second, "6d1f1c2e-0000-4000-8000-000000000001", tasks.HeavyTaskName, stateSuccess),
	}
	for _, limit := range []int{1, 2, 4, 100} {
		if diff := cmp.Diff(want, f.listAll(t, url.Values{}, limit)); diff != "" {
			t.Errorf("listing %d a page (-want +got):\n%s", limit, diff)
		}
	}
	for _, tc := range []struct {
		query url.Values
		want  []string
	}{
		{url.Values{"status": {"PENDING"}}, []string{want[2], want[4]}},
		{url.Values{"status": {"SCHEDULED"}}, []string{want[0]}},
		{url.Values{"status": {"SUCCESS"}}, []string{want[3], want[5]}},
		{url.Values{"type": {tasks.WelcomeEmailName}}, []string{want[1]}},
		{url.Values{"since": {handlerEpoch.Add(3 * time.Second).Format(time.RFC3339)}}, want[:4]},
		{url.Values{"status": {"PROGRESS"}}, nil},
	} {
		if diff := cmp.Diff(tc.want, f.listAll(t, tc.query, 2)); diff != "" {
			t.Errorf("listing %s (-want +got):\n%s", tc.query.Encode(), diff)
		}
	}

	// Tasks added while a client pages do not shift its pages.
	var first taskListJSON
	decodeAnswer(t, f.serve(t, "GET", "/api/tasks?limit=3", "", nil), http.StatusOK, &first)
	submit(10*time.Second, heavy)
	var second taskListJSON
	decodeAnswer(t, f.serve(t, "GET", "/api/tasks?limit=3&cursor="+first.NextCursor, "", nil), http.StatusOK, &second)
	var got []string
	for _, task := range append(first.Tasks, second.Tasks...) {
		got = append(got, task.TaskID)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("two pages with a submit between (-want +got):\n%s", diff)
	}
}

func TestListTasksErrors(t *testing.T) {
	for _, tc := range []struct{ query, field string }{
		{"status=DONE", "status"},
		{"type=nope", "type"},
		{"since=yesterday", "since"},
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"cursor=not-a-cursor", "cursor"},
	} {
		f := newHandlerFixture(t)
		checkErrorAnswer(t, f.serve(t, "GET", "/api/tasks?"+tc.query, "", nil), http.StatusUnprocessableEntity, "validation_error", tc.field)
	}
}

func TestGetTaskShowsWhatWasAskedAndWhatHappened(t *testing.T) {
	f := newHandlerFixture(t)
	var acc taskAccepted
	decodeAnswer(t, f.serve(t, "POST", "/api/tasks", `{"type": "process_heavy_task", "args": {"data": "d"}, "priority": "high", "countdown": 30}`, nil), http.StatusAccepted, &acc)
	var task taskJSON
	decodeAnswer(t, f.serve(t, "GET", "/api/tasks/"+acc.TaskID, "", nil), http.StatusOK, &task)
	due := handlerEpoch.Add(30 * time.Second)
	want := taskJSON{TaskID: acc.TaskID, Type: tasks.HeavyTaskName, Status: stateScheduled, Args: []byte(`{"data":"d","iterations":10}`),
		Priority: "high", CreatedAt: &handlerEpoch, ScheduledFor: &due, UpdatedAt: handlerEpoch}
	if diff := cmp.Diff(want, task); diff != "" {
		t.Errorf("scheduled task (-want +got):\n%s", diff)
	}

	const id = "6d1f1c2e-0000-4000-8000-000000000009"
	started, finished := handlerEpoch.Add(time.Second), handlerEpoch.Add(3*time.Second)
	if _, err := f.items.saveResult(context.Background(), taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateSuccess,
		Args: map[string]any{"data": "x"}, Priority: "normal", Result: map[string]any{"status": "completed"}, Attempts: 1,
		CreatedAt: handlerEpoch, StartedAt: &started, CompletedAt: finished, TraceID: "0af7651916cd43dd8448eb211c80319c"}); err != nil {
		t.Fatal(err)
	}
	var done taskJSON
	decodeAnswer(t, f.serve(t, "GET", "/api/tasks/"+id, "", nil), http.StatusOK, &done)
	// The result store keeps times to the millisecond, as MongoDB does.
	ms := func(t time.Time) *time.Time { t = t.Truncate(time.Millisecond); return &t }
	want = taskJSON{TaskID: id, Type: tasks.HeavyTaskName, Status: stateSuccess, Args: []byte(`{"data":"x"}`), Priority: "normal",
		Result: map[string]any{"status": "completed"}, Attempts: 1, CreatedAt: ms(handlerEpoch), StartedAt: ms(started), FinishedAt: ms(finished),
		UpdatedAt: *ms(finished), TraceID: "0af7651916cd43dd8448eb211c80319c"}
	if diff := cmp.Diff(want, done); diff != "" {
		t.Errorf("finished task (-want +got):\n%s", diff)
	}
	checkErrorAnswer(t, f.serve(t, "GET", "/api/tasks/6d1f1c2e-0000-4000-8000-00000000000f", "", nil), http.StatusNotFound, "not_found", "")
	checkErrorAnswer(t, f.serve(t, "GET", "/api/tasks/-x", "", nil), http.StatusBadRequest, "invalid_id", "")
}

// A task whose final status never reached the status store (it was down
// as the worker finished) is listed as its result says once its live
// status has gone stale, and not under the state it no longer has.
func TestListTasksRepairsStaleUnfinished(t *testing.T) {
	f := newHandlerFixture(t)
	f.clock.set(handlerEpoch)
	var acc taskAccepted
	decodeAnswer(t, f.serve(t, "POST", "/api/tasks", `{"type": "process_heavy_task", "args": {"data": "d"}}`, nil), http.StatusAccepted, &acc)
	if _, err := f.items.saveResult(context.Background(), taskRecord{TaskID: acc.TaskID, TaskType: tasks.HeavyTaskName, Status: stateSuccess,
		CreatedAt: handlerEpoch, CompletedAt: handlerEpoch.Add(time.Second)}); err != nil {
		t.Fatal(err)
	}
	// Still fresh: the live status stands, the worker may yet write.
	f.clock.set(handlerEpoch.Add(statusStaleAfter / 2))
	if diff := cmp.Diff([]string{acc.TaskID}, f.listAll(t, url.Values{"status": {"PENDING"}}, 10)); diff != "" {
		t.Errorf("fresh PENDING listing (-want +got):\n%s", diff)
	}
	f.clock.set(handlerEpoch.Add(statusStaleAfter + time.Second))
	if got := f.listAll(t, url.Values{"status": {"PENDING"}}, 10); len(got) != 0 {
		t.Errorf("stale PENDING listing: %v, want none (the task succeeded)", got)
	}
	var page taskListJSON
	decodeAnswer(t, f.serve(t, "GET", "/api/tasks", "", nil), http.StatusOK, &page)
	if len(page.Tasks) != 1 || page.Tasks[0].TaskID != acc.TaskID || page.Tasks[0].Status != stateSuccess {
		t.Errorf("listing after the repair: %+v, want the task once, %s", page.Tasks, stateSuccess)
	}
}
