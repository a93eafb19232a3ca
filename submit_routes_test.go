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
