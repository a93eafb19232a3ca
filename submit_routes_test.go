package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"errand/tasks"
)

// taskIDFormat is what a task id errand makes looks like: a version 4 UUID.
var taskIDFormat = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestHandlersSubmitProcess(t *testing.T) {
	const message = "Task submitted successfully. Use /api/async/status/{task_id} to check progress."
	tests := []struct {
		name         string
		body         string
		header       map[string]string
		wantArgs     tasks.HeavyArgs
		wantPriority string
	}{
		{name: "defaults", body: `{"data": "heavy processing task"}`, wantArgs: tasks.HeavyArgs{Data: "heavy processing task", Iterations: 10}, wantPriority: "normal"},
		{name: "null iterations and priority take the defaults", body: `{"data": "d", "iterations": null, "priority": null}`, wantArgs: tasks.HeavyArgs{Data: "d", Iterations: 10}, wantPriority: "normal"},
		{name: "the guide's request", body: `{"data": "heavy processing task", "iterations": 100, "priority": "high"}`, wantArgs: tasks.HeavyArgs{Data: "heavy processing task", Iterations: 100}, wantPriority: "high"},
		{name: "one iteration, low priority", body: `{"data": "d", "iterations": 1, "priority": "low"}`, wantArgs: tasks.HeavyArgs{Data: "d", Iterations: 1}, wantPriority: "low"},
		{name: "1000 iterations", body: `{"data": "d", "iterations": 1000, "priority": "normal"}`, wantArgs: tasks.HeavyArgs{Data: "d", Iterations: 1000}, wantPriority: "normal"},
		{name: "10000 characters of data", body: `{"data": "` + strings.Repeat("é", 10000) + `"}`, wantArgs: tasks.HeavyArgs{Data: strings.Repeat("é", 10000), Iterations: 10}, wantPriority: "normal"},
		{name: "curl -d's form type", body: `{"data": "d"}`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, wantArgs: tasks.HeavyArgs{Data: "d", Iterations: 10}, wantPriority: "normal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/async/process", tc.body, tc.header)
			var acc taskAccepted
			decodeAnswer(t, rec, http.StatusAccepted, &acc)
			if !taskIDFormat.MatchString(acc.TaskID) {
				t.Errorf("task_id: got %q, want a version 4 UUID", acc.TaskID)
			}
			if want := (taskAccepted{TaskID: acc.TaskID, Status: "PENDING", Message: message}); acc != want {
				t.Errorf("answer: got %+v, want %+v", acc, want)
			}
			if loc, want := rec.Header().Get("Location"), "/api/async/status/"+acc.TaskID; loc != want {
				t.Errorf("Location: got %q, want %q", loc, want)
			}

			var st map[string]any
			decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+acc.TaskID, "", nil), http.StatusOK, &st)
			wantStatus := map[string]any{"task_id": acc.TaskID, "status": "PENDING", "task_type": tasks.HeavyTaskName, "updated_at": handlerEpoch.Format(time.RFC3339Nano)}
			if diff := cmp.Diff(wantStatus, st); diff != "" {
				t.Errorf("status right after submit (-want +got):\n%s", diff)
			}

			if ready, _ := f.broker.depth(); ready != 1 {
				t.Fatalf("messages queued: got %d, want 1", ready)
			}
			m := f.nextTaskMessage(t)
			var args tasks.HeavyArgs
			if err := json.Unmarshal(m.Args, &args); err != nil {
				t.Fatalf("decode args %s: %v", m.Args, err)
			}
			if m.ID != acc.TaskID || m.Type != tasks.HeavyTaskName || m.Priority != tc.wantPriority || !m.EnqueuedAt.Equal(handlerEpoch) {
				t.Errorf("message: got id %s type %s priority %s enqueued %v, want id %s type %s priority %s enqueued %v",
					m.ID, m.Type, m.Priority, m.EnqueuedAt, acc.TaskID, tasks.HeavyTaskName, tc.wantPriority, handlerEpoch)
			}
			if args != tc.wantArgs {
				t.Errorf("args: got %+v, want %+v", args, tc.wantArgs)
			}
		})
	}
}

func TestHandlersSubmitProcessErrors(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   string
		wantField  string
	}{
		{name: "data missing", body: `{"iterations": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "data null", body: `{"data": null}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "empty object", body: `{}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "data a number", body: `{"data": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "10001 characters of data", body: `{"data": "` + strings.Repeat("d", 10001) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "iterations 0", body: `{"data": "d", "iterations": 0}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: "iterations 1001", body: `{"data": "d", "iterations": 1001}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: "iterations -1", body: `{"data": "d", "iterations": -1}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: "iterations 2.5", body: `{"data": "d", "iterations": 2.5}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: `iterations "5"`, body: `{"data": "d", "iterations": "5"}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: "iterations beyond int64", body: `{"data": "d", "iterations": 99999999999999999999}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: `priority "urgent"`, body: `{"data": "d", "priority": "urgent"}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: `priority "HIGH"`, body: `{"data": "d", "priority": "HIGH"}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: "priority empty", body: `{"data": "d", "priority": ""}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: "priority a number", body: `{"data": "d", "priority": 9}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: "unknown field", body: `{"data": "d", "countdown": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "countdown"},
		{name: "malformed JSON", body: `{"data": "d"`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "trailing garbage", body: `{"data": "d"}]`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "empty body", body: "", wantStatus: 400, wantCode: "empty_body"},
		{name: "body over MaxBodyBytes", body: `{"data": "` + strings.Repeat("d", handlerMaxBody) + `"}`, wantStatus: 413, wantCode: "body_too_large"},
		{name: "Content-Type text/xml", body: `{"data": "d"}`, header: map[string]string{"Content-Type": "text/xml"}, wantStatus: 415, wantCode: "unsupported_media_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			checkErrorAnswer(t, f.serve(t, "POST", "/api/async/process", tc.body, tc.header), tc.wantStatus, tc.wantCode, tc.wantField)
			if ready, _ := f.broker.depth(); ready != 0 {
				t.Errorf("messages queued: got %d, want 0", ready)
			}
			if n := f.statusCount(); n != 0 {
				t.Errorf("statuses recorded: got %d, want 0", n)
			}
		})
	}
}

// rejectingPublisher is a broker that refuses every message with err.
type rejectingPublisher struct{ err error }

func (p rejectingPublisher) publish(context.Context, taskMessage) error { return p.err }

func (p rejectingPublisher) publishDelayed(context.Context, taskMessage, time.Duration) error {
	return p.err
}

func TestHandlersPublishFailure(t *testing.T) {
	submits := []struct{ name, target, body string }{
		{name: "process", target: "/api/async/process", body: `{"data": "d"}`},
		{name: "welcome email", target: "/api/send-welcome-email?user_email=john@example.com&user_name=John"},
	}
	failures := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
	}{
		{name: "broker unavailable", err: errBrokerUnavailable, wantStatus: 503, wantCode: "unavailable"},
		{name: "broker unavailable, wrapped", err: fmt.Errorf("publish: %w", errBrokerUnavailable), wantStatus: 503, wantCode: "unavailable"},
		{name: "no confirm in time", err: fmt.Errorf("publish: %w", context.DeadlineExceeded), wantStatus: 503, wantCode: "unavailable"},
		{name: "unexpected error", err: errors.New("channel exploded"), wantStatus: 500, wantCode: "internal"},
	}
	for _, s := range submits {
		for _, fail := range failures {
			t.Run(s.name+"/"+fail.name, func(t *testing.T) {
				f := newHandlerFixture(t, func(d *apiParts) { d.publisher = rejectingPublisher{err: fail.err} })
				rec := f.serve(t, "POST", s.target, s.body, nil)
				checkErrorAnswer(t, rec, fail.wantStatus, fail.wantCode, "")
				if strings.Contains(rec.Body.String(), "exploded") {
					t.Errorf("answer %s shows the internal error, want a generic message", rec.Body)
				}
				if n := f.statusCount(); n != 0 {
					t.Errorf("statuses left behind: got %d, want 0", n)
				}
			})
		}
	}
}

func TestHandlersStatusStoreFailure(t *testing.T) {
	f := newHandlerFixture(t, func(d *apiParts) {
		d.statuses = failingStatusStore{memoryStatusStore: newMemoryStatusStore(), putErr: errors.New("redis down")}
	})
	checkErrorAnswer(t, f.serve(t, "POST", "/api/async/process", `{"data": "d"}`, nil), http.StatusServiceUnavailable, "unavailable", "")
	if ready, _ := f.broker.depth(); ready != 0 {
		t.Errorf("messages queued without a status: got %d, want 0", ready)
	}
}

func TestHandlersWelcomeEmail(t *testing.T) {
	tests := []struct {
		name     string
		target   string
		body     string
		header   map[string]string
		wantArgs tasks.EmailArgs
	}{
		{
			name:     "the guide's query string with a JSON type and no body",
			target:   "/api/send-welcome-email?user_email=john@example.com&user_name=John",
			header:   map[string]string{"Content-Type": "application/json"},
			wantArgs: tasks.EmailArgs{UserEmail: "john@example.com", UserName: "John"},
		},
		{
			name:     "query string without a Content-Type",
			target:   "/api/send-welcome-email?user_email=john@example.com&user_name=John%20Smith",
			wantArgs: tasks.EmailArgs{UserEmail: "john@example.com", UserName: "John Smith"},
		},
		{
			name:     "JSON body",
			target:   "/api/send-welcome-email",
			body:     `{"user_email": "jane@example.org", "user_name": "Jane"}`,
			wantArgs: tasks.EmailArgs{UserEmail: "jane@example.org", UserName: "Jane"},
		},
		{
			name:     "query values win over the body",
			target:   "/api/send-welcome-email?user_email=john@example.com",
			body:     `{"user_email": "jane@example.org", "user_name": "Jane"}`,
			wantArgs: tasks.EmailArgs{UserEmail: "john@example.com", UserName: "Jane"},
		},
		{
			name:     "200-character name",
			target:   "/api/send-welcome-email",
			body:     `{"user_email": "jane@example.org", "user_name": "` + strings.Repeat("é", 200) + `"}`,
			wantArgs: tasks.EmailArgs{UserEmail: "jane@example.org", UserName: strings.Repeat("é", 200)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", tc.target, tc.body, tc.header)
			var acc taskAccepted
			decodeAnswer(t, rec, http.StatusAccepted, &acc)
			want := taskAccepted{TaskID: acc.TaskID, Status: "PENDING",
				Message: fmt.Sprintf("Email queued for %s. Check /api/async/status/%s", tc.wantArgs.UserEmail, acc.TaskID)}
			if !taskIDFormat.MatchString(acc.TaskID) || acc != want {
				t.Errorf("answer: got %+v, want %+v with a version 4 UUID", acc, want)
			}
			if loc, want := rec.Header().Get("Location"), "/api/async/status/"+acc.TaskID; loc != want {
				t.Errorf("Location: got %q, want %q", loc, want)
			}
			var st taskStatus
			decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+acc.TaskID, "", nil), http.StatusOK, &st)
			if st.Status != statePending || st.TaskType != tasks.WelcomeEmailName {
				t.Errorf("status right after submit: got %s %s, want PENDING %s", st.Status, st.TaskType, tasks.WelcomeEmailName)
			}
			m := f.nextTaskMessage(t)
			var args tasks.EmailArgs
			if err := json.Unmarshal(m.Args, &args); err != nil {
				t.Fatalf("decode args %s: %v", m.Args, err)
			}
			if m.ID != acc.TaskID || m.Type != tasks.WelcomeEmailName || m.Priority != "normal" {
				t.Errorf("message: got id %s type %s priority %s, want id %s type %s priority normal", m.ID, m.Type, m.Priority, acc.TaskID, tasks.WelcomeEmailName)
			}
			if args != tc.wantArgs {
				t.Errorf("args: got %+v, want %+v", args, tc.wantArgs)
			}
		})
	}
}

func TestHandlersWelcomeEmailErrors(t *testing.T) {
	const path = "/api/send-welcome-email"
	tests := []struct {
		name       string
		target     string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   string
		wantField  string
	}{
		{name: "no email", target: path + "?user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "nothing at all", target: path, wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "empty JSON object", target: path, body: `{}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email without a domain", target: path + "?user_email=john&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email with a display name", target: path + "?user_email=John%20%3Cjohn@example.com%3E&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email with a dotless domain", target: path + "?user_email=a@b&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email with a header injected", target: path + "?user_email=john@example.com%0ABcc:x@example.com&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email over 254 characters", target: path + "?user_email=" + strings.Repeat("j", 250) + "@example.com&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email in JSON invalid", target: path, body: `{"user_email": "john", "user_name": "John"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "no name", target: path + "?user_email=john@example.com", wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "empty name", target: path + "?user_email=john@example.com&user_name=", wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "name with a newline in the query", target: path + "?user_email=john@example.com&user_name=Jo%0Ahn", wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "name not UTF-8 in the query", target: path + "?user_email=john@example.com&user_name=Jo%FFhn", wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "name with a newline in JSON", target: path, body: `{"user_email": "john@example.com", "user_name": "Jo\nhn"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "name with a carriage return", target: path, body: `{"user_email": "john@example.com", "user_name": "Jo\rhn"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "201-character name", target: path, body: `{"user_email": "john@example.com", "user_name": "` + strings.Repeat("n", 201) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "email a number", target: path, body: `{"user_email": 5, "user_name": "John"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "unknown field", target: path, body: `{"user_email": "john@example.com", "user_name": "John", "cc": "x@example.com"}`, wantStatus: 422, wantCode: "validation_error", wantField: "cc"},
		{name: "malformed JSON", target: path + "?user_email=john@example.com&user_name=John", body: `{"user_email": `, wantStatus: 400, wantCode: "malformed_json"},
		{name: "Content-Type text/xml", target: path, body: `<user/>`, header: map[string]string{"Content-Type": "text/xml"}, wantStatus: 415, wantCode: "unsupported_media_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			checkErrorAnswer(t, f.serve(t, "POST", tc.target, tc.body, tc.header), tc.wantStatus, tc.wantCode, tc.wantField)
			if ready, _ := f.broker.depth(); ready != 0 {
				t.Errorf("messages queued: got %d, want 0", ready)
			}
			if n := f.statusCount(); n != 0 {
				t.Errorf("statuses recorded: got %d, want 0", n)
			}
		})
	}
}

func TestSubmitTask(t *testing.T) {
	tests := []struct {
		name         string
		body         string
		wantType     string
		wantArgs     string
		wantPriority string
	}{
		{name: "defaults filled in", body: `{"type": "process_heavy_task", "args": {"data": "d"}}`,
			wantType: tasks.HeavyTaskName, wantArgs: `{"data":"d","iterations":10}`, wantPriority: "normal"},
		{name: "priority given", body: `{"type": "process_heavy_task", "args": {"data": "d", "iterations": 3}, "priority": "high"}`,
			wantType: tasks.HeavyTaskName, wantArgs: `{"data":"d","iterations":3}`, wantPriority: "high"},
		{name: "null priority is the default", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "priority": null}`,
			wantType: tasks.HeavyTaskName, wantArgs: `{"data":"d","iterations":10}`, wantPriority: "normal"},
		{name: "another type", body: `{"type": "send_welcome_email", "args": {"user_email": "john@example.com", "user_name": "John"}}`,
			wantType: tasks.WelcomeEmailName, wantArgs: `{"user_email":"john@example.com","user_name":"John"}`, wantPriority: "normal"},
		{name: "countdown in the past runs now", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "countdown": -5}`,
			wantType: tasks.HeavyTaskName, wantArgs: `{"data":"d","iterations":10}`, wantPriority: "normal"},
		{name: "eta in the past runs now", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "eta": "2026-01-01T00:00:00Z"}`,
			wantType: tasks.HeavyTaskName, wantArgs: `{"data":"d","iterations":10}`, wantPriority: "normal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/tasks", tc.body, nil)
			var acc taskAccepted
			decodeAnswer(t, rec, http.StatusAccepted, &acc)
			if !taskIDFormat.MatchString(acc.TaskID) || acc.Status != statePending {
				t.Errorf("answer %+v, want a new task id, PENDING", acc)
			}
			m := f.nextTaskMessage(t)
			if m.ID != acc.TaskID || m.Type != tc.wantType || string(m.Args) != tc.wantArgs || m.Priority != tc.wantPriority || !m.ETA.IsZero() {
				t.Errorf("message: id %s type %s args %s priority %s eta %v; want id %s type %s args %s priority %s, no eta",
					m.ID, m.Type, m.Args, m.Priority, m.ETA, acc.TaskID, tc.wantType, tc.wantArgs, tc.wantPriority)
			}
			f.checkPendingStatus(t, acc.TaskID)
		})
	}
}

func TestSubmitTaskErrors(t *testing.T) {
	eta := func(d time.Duration) string { return handlerEpoch.Add(d).Format(time.RFC3339) }
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   string
		wantField  string
		wantDetail string
	}{
		{name: "no type", body: `{"args": {"data": "d"}}`, wantStatus: 422, wantCode: "validation_error", wantField: "type", wantDetail: "known types: generate_monthly_report, import_csv_data, process_heavy_task, process_image, send_welcome_email"},
		{name: "unknown type", body: `{"type": "mine", "args": {}}`, wantStatus: 422, wantCode: "validation_error", wantField: "type", wantDetail: "known types: generate_monthly_report, import_csv_data, process_heavy_task, process_image, send_welcome_email"},
		{name: "missing argument", body: `{"type": "process_heavy_task", "args": {}}`, wantStatus: 422, wantCode: "validation_error", wantField: "args.data"},
		{name: "no args at all", body: `{"type": "process_heavy_task"}`, wantStatus: 422, wantCode: "validation_error", wantField: "args.data"},
		{name: "argument out of range", body: `{"type": "process_heavy_task", "args": {"data": "d", "iterations": 1001}}`, wantStatus: 422, wantCode: "validation_error", wantField: "args.iterations"},
		{name: "argument of the wrong type", body: `{"type": "process_heavy_task", "args": {"data": "d", "iterations": "5"}}`, wantStatus: 422, wantCode: "validation_error", wantField: "args.iterations"},
		{name: "unknown argument", body: `{"type": "process_heavy_task", "args": {"data": "d", "colour": "red"}}`, wantStatus: 422, wantCode: "validation_error", wantField: "args.colour"},
		{name: "args not an object", body: `{"type": "process_heavy_task", "args": ["d"]}`, wantStatus: 422, wantCode: "validation_error", wantField: "args"},
		{name: "a type's own rule", body: `{"type": "send_welcome_email", "args": {"user_email": "john@localhost", "user_name": "J"}}`, wantStatus: 422, wantCode: "validation_error", wantField: "args.user_email"},
		{name: "bad priority", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "priority": "urgent"}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: "countdown and eta", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "countdown": 5, "eta": "` + eta(time.Minute) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "eta"},
		{name: "countdown past the horizon", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "countdown": 2592001}`, wantStatus: 422, wantCode: "validation_error", wantField: "countdown"},
		{name: "eta past the horizon", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "eta": "` + eta(31*24*time.Hour) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "eta"},
		{name: "eta not a time", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "eta": "tomorrow"}`, wantStatus: 422, wantCode: "validation_error", wantField: "eta"},
		{name: "empty idempotency key", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "idempotency_key": ""}`, wantStatus: 422, wantCode: "validation_error", wantField: "idempotency_key"},
		{name: "keys that disagree", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "idempotency_key": "a"}`, header: map[string]string{"Idempotency-Key": "b"}, wantStatus: 422, wantCode: "validation_error", wantField: "idempotency_key"},
		{name: "unknown field", body: `{"type": "process_heavy_task", "args": {"data": "d"}, "colour": "red"}`, wantStatus: 422, wantCode: "validation_error", wantField: "colour"},
		{name: "malformed JSON", body: `{"type": "process_heavy_task"`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "empty body", body: "", wantStatus: 400, wantCode: "empty_body"},
		{name: "body over MaxBodyBytes", body: `{"type": "process_heavy_task", "args": {"data": "` + strings.Repeat("d", handlerMaxBody) + `"}}`, wantStatus: 413, wantCode: "body_too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/tasks", tc.body, tc.header)
			checkErrorAnswer(t, rec, tc.wantStatus, tc.wantCode, tc.wantField)
			if !strings.Contains(rec.Body.String(), tc.wantDetail) {
				t.Errorf("answer %s does not say %q", rec.Body, tc.wantDetail)
			}
			f.checkNothingQueued(t)
		})
	}
}

func TestSubmitTaskScheduled(t *testing.T) {
	f := newHandlerFixture(t)
	body := `{"type": "process_heavy_task", "args": {"data": "later"}, "countdown": 90}`
	var acc taskAccepted
	decodeAnswer(t, f.serve(t, "POST", "/api/tasks", body, map[string]string{"Idempotency-Key": "k1"}), http.StatusAccepted, &acc)
	if acc.Status != stateScheduled {
		t.Errorf("status: got %s, want SCHEDULED", acc.Status)
	}
	if ready, _ := f.broker.depth(); ready != 0 {
		t.Errorf("a task due in 90 s is on the work queue at once (%d ready)", ready)
	}
	var st taskStatus
	decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+acc.TaskID, "", nil), http.StatusOK, &st)
	if st.Status != stateScheduled || st.ScheduledFor == nil || !st.ScheduledFor.Equal(handlerEpoch.Add(90*time.Second)) {
		t.Errorf("status %s scheduled for %v, want SCHEDULED for %v", st.Status, st.ScheduledFor, handlerEpoch.Add(90*time.Second))
	}
	// The client's retry a little later is the same request: its countdown
	// is what it sent, not the time it ends.
	f.clock.set(handlerEpoch.Add(3 * time.Second))
	var again taskAccepted
	rec := f.serve(t, "POST", "/api/tasks", body, map[string]string{"Idempotency-Key": "k1"})
	decodeAnswer(t, rec, http.StatusAccepted, &again)
	if again.TaskID != acc.TaskID || again.Status != stateScheduled || rec.Header().Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry with the key: %+v (replayed %q), want task %s replayed, SCHEDULED", again, rec.Header().Get("Idempotent-Replayed"), acc.TaskID)
	}
	eta := handlerEpoch.Add(time.Hour).Format(time.RFC3339)
	decodeAnswer(t, f.serve(t, "POST", "/api/tasks", `{"type": "process_heavy_task", "args": {"data": "at"}, "eta": "`+eta+`"}`, nil), http.StatusAccepted, &acc)
	decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+acc.TaskID, "", nil), http.StatusOK, &st)
	if st.Status != stateScheduled || st.ScheduledFor == nil || st.ScheduledFor.Format(time.RFC3339) != eta {
		t.Errorf("eta task: %s for %v, want SCHEDULED for %s", st.Status, st.ScheduledFor, eta)
	}
	if got := testutil.ToFloat64(f.metrics.tasksScheduled.WithLabelValues(tasks.HeavyTaskName)); got != 2 {
		t.Errorf("errand_tasks_scheduled_total: got %v, want 2 (the replay is not a new task)", got)
	}
}

// selectivePublisher publishes through next, but fails the tasks fail
// picks with errBrokerUnavailable.
type selectivePublisher struct {
	next taskPublisher
	fail func(taskMessage) bool
}

func (p selectivePublisher) publish(ctx context.Context, m taskMessage) error {
	if p.fail(m) {
		return fmt.Errorf("publish %s: %w", m.ID, errBrokerUnavailable)
	}
	return p.next.publish(ctx, m)
}

func (p selectivePublisher) publishDelayed(ctx context.Context, m taskMessage, delay time.Duration) error {
	if p.fail(m) {
		return fmt.Errorf("publish %s: %w", m.ID, errBrokerUnavailable)
	}
	return p.next.publishDelayed(ctx, m, delay)
}

func TestSubmitBatch(t *testing.T) {
	f := newHandlerFixture(t)
	body := `{"tasks": [
		{"type": "process_heavy_task", "args": {"data": "a"}},
		{"type": "send_welcome_email", "args": {"user_email": "john@example.com", "user_name": "John"}, "priority": "high"},
		{"type": "process_heavy_task", "args": {"data": "c"}, "countdown": 60}
	]}`
	var answer batchAnswer
	decodeAnswer(t, f.serve(t, "POST", "/api/tasks/batch", body, nil), http.StatusAccepted, &answer)
	if answer.Accepted != 3 || answer.Failed != 0 || len(answer.Tasks) != 3 {
		t.Fatalf("answer %+v, want 3 accepted", answer)
	}
	for i, want := range []string{statePending, statePending, stateScheduled} {
		got := answer.Tasks[i]
		if got.Index != i || !got.Accepted || got.Status != want || !taskIDFormat.MatchString(got.TaskID) || got.Error != nil {
			t.Errorf("task %d: %+v, want accepted, %s, with an id", i, got, want)
		}
	}
	if ready, _ := f.broker.depth(); ready != 2 {
		t.Errorf("ready messages: got %d, want 2 (the third is due in 60 s)", ready)
	}
	if n := f.statusCount(); n != 3 {
		t.Errorf("statuses: got %d, want 3", n)
	}
}

func TestSubmitBatchErrors(t *testing.T) {
	task := `{"type": "process_heavy_task", "args": {"data": "d"}}`
	many := func(n int) string { return `{"tasks": [` + strings.TrimSuffix(strings.Repeat(task+",", n), ",") + `]}` }
	tests := []struct {
		name       string
		body       string
		wantStatus int
		wantField  string
	}{
		{name: "an invalid task names its index and field", body: `{"tasks": [` + task + `, {"type": "process_heavy_task", "args": {"iterations": 2}}]}`, wantStatus: 422, wantField: "tasks[1].args.data"},
		{name: "an unknown type", body: `{"tasks": [` + task + `, ` + task + `, {"type": "nope"}]}`, wantStatus: 422, wantField: "tasks[2].type"},
		{name: "a bad priority", body: `{"tasks": [{"type": "process_heavy_task", "args": {"data": "d"}, "priority": "now"}]}`, wantStatus: 422, wantField: "tasks[0].priority"},
		{name: "no tasks field", body: `{}`, wantStatus: 422, wantField: "tasks"},
		{name: "no tasks", body: `{"tasks": []}`, wantStatus: 422, wantField: "tasks"},
		{name: "over the limit", body: many(maxBatchTasks + 1), wantStatus: 422, wantField: "tasks"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t, func(d *apiParts) { d.maxBody = 1 << 20 })
			checkErrorAnswer(t, f.serve(t, "POST", "/api/tasks/batch", tc.body, nil), tc.wantStatus, "validation_error", tc.wantField)
			f.checkNothingQueued(t)
		})
	}
	t.Run("the limit itself", func(t *testing.T) {
		f := newHandlerFixture(t, func(d *apiParts) { d.maxBody = 1 << 20 })
		var answer batchAnswer
		decodeAnswer(t, f.serve(t, "POST", "/api/tasks/batch", many(maxBatchTasks), nil), http.StatusAccepted, &answer)
		if ready, _ := f.broker.depth(); answer.Accepted != maxBatchTasks || ready != maxBatchTasks {
			t.Errorf("accepted %d, queued %d; want %d of each", answer.Accepted, ready, maxBatchTasks)
		}
	})
	t.Run("a body over MaxBodyBytes", func(t *testing.T) {
		f := newHandlerFixture(t)
		body := `{"tasks": [{"type": "process_heavy_task", "args": {"data": "` + strings.Repeat("d", handlerMaxBody) + `"}}]}`
		checkErrorAnswer(t, f.serve(t, "POST", "/api/tasks/batch", body, nil), http.StatusRequestEntityTooLarge, "body_too_large", "")
		f.checkNothingQueued(t)
	})
}

// TestSubmitBatchBrokerFailsMidway: when the broker refuses some tasks of
// a valid batch, the answer says which were accepted; those are queued
// and the others left no status behind.
func TestSubmitBatchBrokerFailsMidway(t *testing.T) {
	f := newHandlerFixture(t, func(d *apiParts) {
		d.publisher = selectivePublisher{next: d.publisher, fail: func(m taskMessage) bool { return strings.Contains(string(m.Args), `"fail`) }}
	})
	body := `{"tasks": [
		{"type": "process_heavy_task", "args": {"data": "ok-0"}},
		{"type": "process_heavy_task", "args": {"data": "fail-1"}},
		{"type": "process_heavy_task", "args": {"data": "ok-2"}}
	]}`
	var answer batchAnswer
	decodeAnswer(t, f.serve(t, "POST", "/api/tasks/batch", body, nil), http.StatusAccepted, &answer)
	if answer.Accepted != 2 || answer.Failed != 1 {
		t.Fatalf("answer %+v, want 2 accepted and 1 failed", answer)
	}
	failed := answer.Tasks[1]
	if failed.Accepted || failed.TaskID != "" || failed.Error == nil || failed.Error.Error != "unavailable" {
		t.Errorf("task 1: %+v (error %+v), want not accepted, no id, error unavailable", failed, failed.Error)
	}
	if ready, _ := f.broker.depth(); ready != 2 {
		t.Errorf("ready messages: got %d, want the 2 accepted", ready)
	}
	if n := f.statusCount(); n != 2 {
		t.Errorf("statuses: got %d, want the 2 accepted tasks' only", n)
	}

	all := newHandlerFixture(t, func(d *apiParts) {
		d.publisher = selectivePublisher{next: d.publisher, fail: func(taskMessage) bool { return true }}
	})
	checkErrorAnswer(t, all.serve(t, "POST", "/api/tasks/batch", body, nil), http.StatusServiceUnavailable, "unavailable", "")
	all.checkNothingQueued(t)
}
