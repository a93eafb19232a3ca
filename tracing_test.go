package main

import (
	"bufio"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// exportedSpan is the part of a console-exported span the test reads.
type exportedSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct{ TraceID, SpanID string }
	Resource    []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s exportedSpan) resource(key string) string {
	for _, kv := range s.Resource {
		if kv.Key == key {
			v, _ := kv.Value.Value.(string)
			return v
		}
	}
	return ""
}

// readSpans returns the spans a process exported to its log with
// OTEL_TRACES_EXPORTER=console, keeping those of trace traceID.
func readSpans(t *testing.T, path, traceID string) []exportedSpan {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var spans []exportedSpan
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<22)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.HasPrefix(string(line), `{"Name":`) {
			continue
		}
		var s exportedSpan
		if err := json.Unmarshal(line, &s); err != nil {
			t.Fatalf("decode span %q: %v", line, err)
		}
		if s.SpanContext.TraceID == traceID {
			spans = append(spans, s)
		}
	}
	return spans
}

// TestOneTraceAcrossProcesses submits a task to an api process and lets a
// separate worker process run it: the status names the trace, and both
// processes' spans belong to it, the worker's consume span a child of the
// api's publish span, down to the result write.
func TestOneTraceAcrossProcesses(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	env["OTEL_TRACES_EXPORTER"] = "console"
	api := startChild(t, withEnv(withEnv(env, "ROLE", "api"), "OTEL_SERVICE_NAME", "errand-api"))
	worker := startChild(t, withEnv(withEnv(env, "ROLE", "worker"), "OTEL_SERVICE_NAME", "errand-worker"))

	id := submitTask(t, api.base, `{"data": "traced", "iterations": 2}`)
	st := waitForStatus(t, api.base, id, stateSuccess, 20*time.Second)
	if len(st.TraceID) != 32 {
		t.Fatalf("status trace_id = %q, want a 32-hex trace id", st.TraceID)
	}
	// SIGTERM flushes the span batches.
	for _, c := range []*child{api, worker} {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		if err := c.wait(t, 30*time.Second); err != nil {
			t.Fatalf("errand exited with %v", err)
		}
	}

	byName := map[string]exportedSpan{}
	for _, c := range []*child{api, worker} {
		for _, s := range readSpans(t, c.logPath, st.TraceID) {
			byName[s.Name] = s
		}
	}
	want := map[string]string{
		"POST /api/async/process":    "errand-api",
		"publish process_heavy_task": "errand-api",
		"redis put_status":           "",
		"process process_heavy_task": "errand-worker",
		"run process_heavy_task":     "errand-worker",
		"mongodb save_result":        "errand-worker",
	}
	for name, service := range want {
		s, ok := byName[name]
		if !ok {
			t.Errorf("trace %s has no span %q (has %v)", st.TraceID, name, keys(byName))
			continue
		}
		if service != "" && s.resource("service.name") != service {
			t.Errorf("span %q from service %q, want %q", name, s.resource("service.name"), service)
		}
	}
	if c, p := byName["process process_heavy_task"], byName["publish process_heavy_task"]; c.Parent.SpanID != p.SpanContext.SpanID {
		t.Errorf("consume span's parent %s, want the publish span %s", c.Parent.SpanID, p.SpanContext.SpanID)
	}
	if byName["process process_heavy_task"].resource("errand.role") != "worker" {
		t.Errorf("worker span resource lacks errand.role=worker")
	}

	// Log lines of the request and of the task carry their ids and the trace.
	logLine := func(path, msg, key, value string) bool {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg && rec[key] == value &&
				rec["trace_id"] == st.TraceID && rec["span_id"] != nil {
				return true
			}
		}
		return false
	}
	if !logLine(api.logPath, "request", "task_id", id) {
		t.Errorf("api log has no access line for the submit with task_id %s and trace_id %s", id, st.TraceID)
	}
	if !logLine(worker.logPath, "task finished", "task_id", id) {
		t.Errorf("worker log has no \"task finished\" line with task_id %s and trace_id %s", id, st.TraceID)
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTraceContextPassesThroughWithTracingOff: with no OTEL_* variable
// errand records no spans, but a trace a client started still reaches
// the task, so the client can find its task in its own trace.
func TestTraceContextPassesThroughWithTracingOff(t *testing.T) {
	base := startErrand(t, map[string]string{"HEAVY_TASK_DELAY": "0s"})
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	traceparent := map[string]string{"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01"}
	var acc taskAccepted
	if code := apiCall(t, "POST", base+"/api/async/process", `{"data": "traced", "iterations": 1}`, traceparent, &acc).StatusCode; code != http.StatusAccepted {
		t.Fatalf("submit: status %d", code)
	}
	st := waitForStatus(t, base, acc.TaskID, stateSuccess, 10*time.Second)
	if st.TraceID != traceID {
		t.Errorf("task trace_id = %q, want the client's %s", st.TraceID, traceID)
	}
}
