package main

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAPIKeys(t *testing.T) {
	base := startErrand(t, map[string]string{"API_KEYS": "key-a, key-b", "HEAVY_TASK_DELAY": "1ms"})
	a := map[string]string{"X-API-Key": "key-a"}
	b := map[string]string{"Authorization": "Bearer key-b"}

	for name, h := range map[string]map[string]string{"none": nil, "wrong": {"X-API-Key": "key-c"}, "prefix": {"X-API-Key": "key-"}, "bearer wrong": {"Authorization": "Bearer nope"}} {
		resp := apiCall(t, "GET", base+"/api/items", "", h, nil)
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.body, `"error":"unauthorized"`) || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s key: %d %s, want 401 JSON with WWW-Authenticate", name, resp.StatusCode, resp.body)
		}
	}
	for _, path := range []string{"/health", "/metrics"} {
		if resp := apiCall(t, "GET", base+path, "", nil, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a key: %d, want 200 (open for probes)", path, resp.StatusCode)
		}
	}

	resp := apiCall(t, "POST", base+"/api/async/process", `{"data": "mine", "iterations": 1}`, a, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit with key a: %d %s", resp.StatusCode, resp.body)
	}
	id := resp.Header.Get("Location")[len("/api/async/status/"):]
	waitFor(t, 10*time.Second, "the task to finish", func() bool {
		body := apiCall(t, "GET", base+"/api/async/status/"+id, "", a, nil).body
		return strings.Contains(body, `"SUCCESS"`)
	})
	if body := apiCall(t, "GET", base+"/api/async/status/"+id, "", a, nil).body; strings.Contains(body, "owner") {
		t.Errorf("status shows its owner: %s", body)
	}
	if resp := apiCall(t, "GET", base+"/api/async/status/"+id, "", b, nil); resp.StatusCode != http.StatusNotFound {
		t.Errorf("key b reading key a's task: %d, want 404", resp.StatusCode)
	}
	if body := apiCall(t, "GET", base+"/api/tasks", "", b, nil).body; strings.Contains(body, id) {
		t.Errorf("key b's task list shows key a's task: %s", body)
	}
	if body := apiCall(t, "GET", base+"/api/tasks", "", a, nil).body; !strings.Contains(body, id) {
		t.Errorf("key a's task list lacks its task: %s", body)
	}

	// Another key's task is not found, whatever the route.
	var later taskAccepted
	if resp := apiCall(t, "POST", base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "a's later"}, "countdown": 600}`, a, &later); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit a scheduled task with key a: %d %s", resp.StatusCode, resp.body)
	}
	for _, req := range []struct{ method, path string }{
		{"GET", "/api/tasks/" + later.TaskID}, {"GET", "/api/tasks/" + later.TaskID + "/events"}, {"POST", "/api/tasks/" + later.TaskID + "/cancel"},
	} {
		if resp := apiCall(t, req.method, base+req.path, "", b, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s with key b: %d, want 404", req.method, req.path, resp.StatusCode)
		}
	}
	var own taskJSON
	if resp := apiCall(t, "GET", base+"/api/tasks/"+later.TaskID, "", a, &own); resp.StatusCode != http.StatusOK || own.Status != stateScheduled || own.Owner == "" {
		t.Errorf("key a's own scheduled task: %d %+v, want it SCHEDULED, with its owner's id", resp.StatusCode, own)
	}
	// Schedules too: names are per key.
	sched := `{"name": "mine", "every": "1h", "task": {"type": "process_heavy_task", "args": {"data": "d"}}}`
	if resp := apiCall(t, "POST", base+"/api/schedules", sched, a, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create a schedule with key a: %d %s", resp.StatusCode, resp.body)
	}
	for _, req := range []struct{ method, path string }{{"GET", "/api/schedules/mine"}, {"POST", "/api/schedules/mine/pause"}, {"DELETE", "/api/schedules/mine"}} {
		if resp := apiCall(t, req.method, base+req.path, "", b, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s with key b: %d, want 404", req.method, req.path, resp.StatusCode)
		}
	}
	if resp := apiCall(t, "GET", base+"/api/schedules", "", b, nil); strings.Contains(resp.body, "mine") {
		t.Errorf("key b's schedules list key a's: %s", resp.body)
	}
	if resp := apiCall(t, "POST", base+"/api/schedules", sched, b, nil); resp.StatusCode != http.StatusCreated {
		t.Errorf("key b's own schedule of the same name: %d %s, want 201", resp.StatusCode, resp.body)
	}

	// Items belong to their key the same way.
	var it itemResponse
	if resp := apiCall(t, "POST", base+"/api/items", `{"name": "a's"}`, a, &it); resp.StatusCode != http.StatusCreated {
		t.Fatalf("create an item with key a: %d %s", resp.StatusCode, resp.body)
	}
	for _, req := range []struct{ method, body string }{{"GET", ""}, {"PUT", `{"name": "b's now"}`}, {"DELETE", ""}} {
		if resp := apiCall(t, req.method, base+"/api/items/"+it.ID, req.body, b, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s key a's item with key b: %d, want 404", req.method, resp.StatusCode)
		}
	}
	if body := apiCall(t, "GET", base+"/api/items", "", b, nil).body; strings.Contains(body, it.ID) {
		t.Errorf("key b's item list shows key a's item: %s", body)
	}
	var got itemResponse
	if resp := apiCall(t, "GET", base+"/api/items/"+it.ID, "", a, &got); resp.StatusCode != http.StatusOK || got.Name != "a's" {
		t.Errorf("key a's item after key b's tries: %d %+v, want it unchanged", resp.StatusCode, got)
	}
	if body := apiCall(t, "GET", base+"/api/items", "", a, nil).body; !strings.Contains(body, it.ID) {
		t.Errorf("key a's item list lacks its item: %s", body)
	}

	// And files.
	var f fileJSON
	fileHeaders := map[string]string{"X-API-Key": "key-a", "Content-Type": "text/plain"}
	if resp := apiCall(t, "POST", base+"/api/files", "a's notes", fileHeaders, &f); resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload a file with key a: %d %s", resp.StatusCode, resp.body)
	}
	for _, method := range []string{"GET", "HEAD", "DELETE"} {
		if resp := apiCall(t, method, base+f.URL, "", b, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s key a's file with key b: %d, want 404", method, resp.StatusCode)
		}
	}
	if body := apiCall(t, "GET", base+"/api/files", "", b, nil).body; strings.Contains(body, f.FileID) {
		t.Errorf("key b's file list shows key a's file: %s", body)
	}
	if resp := apiCall(t, "GET", base+f.URL, "", a, nil); resp.StatusCode != http.StatusOK || resp.body != "a's notes" {
		t.Errorf("key a's file after key b's tries: %d %q", resp.StatusCode, resp.body)
	}
	if body := apiCall(t, "GET", base+"/api/files", "", a, nil).body; !strings.Contains(body, f.FileID) {
		t.Errorf("key a's file list lacks its file: %s", body)
	}
}

func TestRateLimit(t *testing.T) {
	base := startErrand(t, map[string]string{"API_KEYS": "key-a,key-b", "RATE_LIMIT": "1", "RATE_BURST": "3"})
	a := map[string]string{"X-API-Key": "key-a"}
	for i := range 3 {
		if resp := apiCall(t, "GET", base+"/api/items", "", a, nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d within the burst: %d %s", i, resp.StatusCode, resp.body)
		}
	}
	resp := apiCall(t, "GET", base+"/api/items", "", a, nil)
	retry, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || retry < 1 || !strings.Contains(resp.body, `"error":"rate_limited"`) {
		t.Errorf("request over the limit: %d Retry-After %q %s, want 429 with Retry-After >= 1", resp.StatusCode, resp.Header.Get("Retry-After"), resp.body)
	}
	if resp := apiCall(t, "GET", base+"/api/items", "", map[string]string{"X-API-Key": "key-b"}, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("another client while key a is limited: %d, want 200", resp.StatusCode)
	}
	if resp := apiCall(t, "GET", base+"/health", "", nil, nil); resp.StatusCode != http.StatusOK {
		t.Errorf("/health while limited: %d, want 200", resp.StatusCode)
	}
}
