package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSchedulesCreateListPauseDelete(t *testing.T) {
	f := newHandlerFixture(t)
	var every scheduleJSON
	rec := f.serve(t, "POST", "/api/schedules", `{"name": "tick", "every": "30s", "task": {"type": "process_heavy_task", "args": {"data": "d"}}}`, nil)
	decodeAnswer(t, rec, http.StatusCreated, &every)
	if rec.Header().Get("Location") != "/api/schedules/tick" {
		t.Errorf("Location: %q", rec.Header().Get("Location"))
	}
	created := handlerEpoch.Truncate(time.Millisecond)
	if every.Every != "30s" || every.NextRun == nil || !every.NextRun.Equal(created.Add(30*time.Second)) || string(every.Task.Args) != `{"data":"d","iterations":10}` || every.Task.Priority != "normal" {
		t.Errorf("created %+v, want every 30s, first run 30 s after its creation, arguments with their defaults", every)
	}
	var nightly scheduleJSON
	decodeAnswer(t, f.serve(t, "POST", "/api/schedules", `{"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Paris",
		"task": {"type": "send_welcome_email", "args": {"user_email": "ops@example.com", "user_name": "Ops"}, "priority": "low"}}`, nil), http.StatusCreated, &nightly)
	// handlerEpoch is 2026-01-02 03:04:05 UTC; 3 a.m. in Paris in winter is 2 a.m. UTC.
	if want := time.Date(2026, 1, 3, 2, 0, 0, 0, time.UTC); nightly.NextRun == nil || !nightly.NextRun.Equal(want) {
		t.Errorf("nightly's next run %v, want %v", nightly.NextRun, want)
	}
	checkErrorAnswer(t, f.serve(t, "POST", "/api/schedules", `{"name": "tick", "every": "1m", "task": {"type": "process_heavy_task", "args": {"data": "d"}}}`, nil),
		http.StatusConflict, "schedule_exists", "")

	var list struct{ Schedules []scheduleJSON }
	decodeAnswer(t, f.serve(t, "GET", "/api/schedules", "", nil), http.StatusOK, &list)
	if len(list.Schedules) != 2 || list.Schedules[0].Name != "nightly" || list.Schedules[1].Name != "tick" {
		t.Errorf("list %+v, want nightly and tick", list.Schedules)
	}

	f.clock.set(handlerEpoch.Add(95 * time.Second))
	var paused scheduleJSON
	decodeAnswer(t, f.serve(t, "POST", "/api/schedules/tick/pause", "", nil), http.StatusOK, &paused)
	if !paused.Paused || paused.NextRun != nil {
		t.Errorf("paused %+v, want paused with no next run", paused)
	}
	var resumed scheduleJSON
	decodeAnswer(t, f.serve(t, "POST", "/api/schedules/tick/resume", "", nil), http.StatusOK, &resumed)
	// The ticks it missed while paused do not fire: it goes on from the
	// first tick after now.
	if resumed.Paused || resumed.NextRun == nil || !resumed.NextRun.Equal(created.Add(120*time.Second)) {
		t.Errorf("resumed %+v, want its next run at %v", resumed, created.Add(120*time.Second))
	}
	decodeAnswer(t, f.serve(t, "DELETE", "/api/schedules/tick", "", nil), http.StatusOK, &map[string]string{})
	checkErrorAnswer(t, f.serve(t, "GET", "/api/schedules/tick", "", nil), http.StatusNotFound, "not_found", "")
	checkErrorAnswer(t, f.serve(t, "DELETE", "/api/schedules/tick", "", nil), http.StatusNotFound, "not_found", "")
	checkErrorAnswer(t, f.serve(t, "POST", "/api/schedules/tick/pause", "", nil), http.StatusNotFound, "not_found", "")
}

func TestSchedulesRefuseBadRequests(t *testing.T) {
	task := `"task": {"type": "process_heavy_task", "args": {"data": "d"}}`
	tests := []struct {
		name, body, field, detail string
	}{
		{"no name", `{"every": "1m", ` + task + `}`, "name", ""},
		{"a name with a slash", `{"name": "a/b", "every": "1m", ` + task + `}`, "name", ""},
		{"neither cron nor every", `{"name": "n", ` + task + `}`, "cron", ""},
		{"both", `{"name": "n", "cron": "* * * * *", "every": "1m", ` + task + `}`, "cron", ""},
		{"a cron that does not parse", `{"name": "n", "cron": "0 25 * * *", ` + task + `}`, "cron", "above maximum"},
		{"a cron of four fields", `{"name": "n", "cron": "* * * *", ` + task + `}`, "cron", "expected exactly 5 fields"},
		{"an unknown zone", `{"name": "n", "cron": "* * * * *", "timezone": "Mars/Olympus", ` + task + `}`, "timezone", ""},
		{"the server's zone", `{"name": "n", "cron": "* * * * *", "timezone": "Local", ` + task + `}`, "timezone", ""},
		{"a zone inside the expression", `{"name": "n", "cron": "CRON_TZ=Asia/Tokyo 0 3 * * *", ` + task + `}`, "cron", "timezone"},
		{"a cron that never matches", `{"name": "n", "cron": "0 0 30 2 *", ` + task + `}`, "cron", "matches no time"},
		{"a zone with every", `{"name": "n", "every": "1m", "timezone": "UTC", ` + task + `}`, "timezone", ""},
		{"too often", `{"name": "n", "every": "500ms", ` + task + `}`, "every", ""},
		{"not a duration", `{"name": "n", "every": "weekly", ` + task + `}`, "every", ""},
		{"no task", `{"name": "n", "every": "1m"}`, "task", ""},
		{"an unknown task type", `{"name": "n", "every": "1m", "task": {"type": "nope"}}`, "task.type", ""},
		{"bad task arguments", `{"name": "n", "every": "1m", "task": {"type": "process_heavy_task", "args": {"iterations": 0}}}`, "task.args.data", ""},
		{"an unknown field", `{"name": "n", "every": "1m", "start": "now", ` + task + `}`, "start", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/schedules", tc.body, nil)
			checkErrorAnswer(t, rec, http.StatusUnprocessableEntity, "validation_error", tc.field)
			if !strings.Contains(rec.Body.String(), tc.detail) {
				t.Errorf("answer %s does not say %q", rec.Body, tc.detail)
			}
			if list, _ := f.schedules.listSchedules(t.Context(), ""); len(list) != 0 {
				t.Errorf("schedules stored after a refusal: %+v", list)
			}
		})
	}
}
