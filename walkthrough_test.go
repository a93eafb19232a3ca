package main

import (
	"net/http"
	"regexp"
	"testing"
	"time"
)

// TestGuideWalkthrough runs the guide's curl walkthrough (Steps 5 to 8 and
// Part 5 Step 4) against errand on the embedded backends and on the real
// servers (with either queue type), and checks the guide's JSON shapes.
func TestGuideWalkthrough(t *testing.T) {
	stacks := map[string]func(t *testing.T) map[string]string{
		"embedded": func(*testing.T) map[string]string { return map[string]string{} },
		"real":     func(t *testing.T) map[string]string { return realStack(t) },
		"real quorum": func(t *testing.T) map[string]string {
			env := realStack(t)
			env["QUEUE_TYPE"] = "quorum"
			return env
		},
	}
	for name, stack := range stacks {
		t.Run(name, func(t *testing.T) {
			env := stack(t)
			env["HEAVY_TASK_DELAY"] = "20ms"
			env["EMAIL_STEP_DELAY"] = "20ms"
			env["WORKERS"] = "4"
			base := startErrand(t, env)
			walkthrough(t, base, map[bool]string{true: "embedded", false: "external"}[name == "embedded"])
		})
	}
}

var isoPattern = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

func walkthrough(t *testing.T, base, backends string) {
	// Step 5: health.
	var h healthResponse
	if code := apiCall(t, "GET", base+"/health", "", nil, &h).StatusCode; code != http.StatusOK {
		t.Fatalf("GET /health: status %d, want 200 (%+v)", code, h)
	}
	want := map[string]string{"mongodb": "connected", "redis": "connected", "rabbitmq": "connected"}
	if h.Status != "healthy" || !isoPattern.MatchString(h.Timestamp) || len(h.Services) != 3 || h.Backends != backends {
		t.Errorf("health = %+v, want healthy with a timestamp and three services", h)
	}
	for k, v := range want {
		if h.Services[k] != v {
			t.Errorf("health services[%s] = %q, want %q", k, h.Services[k], v)
		}
	}

	// Step 6: an item.
	var created itemResponse
	code := apiCall(t, "POST", base+"/api/items", `{"name": "Test Item", "description": "My first item", "metadata": {"category": "test"}}`, nil, &created).StatusCode
	if code != http.StatusCreated {
		t.Fatalf("POST /api/items: status %d, want 201", code)
	}
	if len(created.ID) != 24 || created.Name != "Test Item" || created.Description == nil || *created.Description != "My first item" ||
		created.Metadata["category"] != "test" || !isoPattern.MatchString(created.CreatedAt) || created.UpdatedAt != created.CreatedAt {
		t.Errorf("created item = %+v, want the guide's shape", created)
	}
	var fetched itemResponse
	if code := apiCall(t, "GET", base+"/api/items/"+created.ID, "", nil, &fetched).StatusCode; code != http.StatusOK || fetched.ID != created.ID || fetched.CreatedAt != created.CreatedAt {
		t.Errorf("GET item: status %d, %+v; want 200 and %+v", code, fetched, created)
	}

	// Step 7: a heavy task.
	var acc taskAccepted
	code = apiCall(t, "POST", base+"/api/async/process", `{"data": "heavy processing task", "iterations": 5, "priority": "high"}`, nil, &acc).StatusCode
	if code != http.StatusAccepted || acc.Status != "PENDING" || acc.Message == "" || len(acc.TaskID) != 36 {
		t.Fatalf("POST /api/async/process: status %d, %+v; want 202 PENDING with a task id", code, acc)
	}

	// Step 8: its status, PROGRESS with the guide's fields, then SUCCESS.
	deadline := time.Now().Add(20 * time.Second)
	sawProgress := false
	var st taskStatus
	for time.Now().Before(deadline) {
		if code := apiCall(t, "GET", base+"/api/async/status/"+acc.TaskID, "", nil, &st).StatusCode; code != http.StatusOK {
			t.Fatalf("GET status: %d, want 200", code)
		}
		if st.Status == stateProgress && st.Progress != nil && st.Progress.Total == 5 {
			sawProgress = true
			if st.Progress.Current < 1 || st.Progress.Percent != st.Progress.Current*20 || st.Progress.Status == "" {
				t.Errorf("progress = %+v, want current/total/progress/status consistent", *st.Progress)
			}
		}
		if st.final() {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !sawProgress {
		t.Errorf("never saw PROGRESS with current/total while the task ran")
	}
	if st.Status != stateSuccess {
		t.Fatalf("task ended %+v, want SUCCESS", st)
	}
	res := st.Result
	items, _ := res["processed_items"].([]any)
	if res["task_id"] != acc.TaskID || res["status"] != "completed" || res["total_processed"] != float64(5) || len(items) != 5 ||
		items[0] != "HEAVY PROCESSING TASK_ITERATION_1" || !isoPattern.MatchString(res["completed_at"].(string)) {
		t.Errorf("result = %v, want the guide's process_heavy_task result", res)
	}

	// Part 5 Step 4: the welcome e-mail, with the guide's query string.
	code = apiCall(t, "POST", base+"/api/send-welcome-email?user_email=john@example.com&user_name=John", "", nil, &acc).StatusCode
	if code != http.StatusAccepted || acc.Status != "PENDING" || acc.Message != "Email queued for john@example.com. Check /api/async/status/"+acc.TaskID {
		t.Fatalf("POST /api/send-welcome-email: status %d, %+v", code, acc)
	}
	st = waitForStatus(t, base, acc.TaskID, stateSuccess, 20*time.Second)
	if st.Result["user_email"] != "john@example.com" || st.Result["user_name"] != "John" || st.Result["status"] != "sent" || st.Result["task_id"] != acc.TaskID {
		t.Errorf("email result = %v, want the guide's shape", st.Result)
	}

	// The item's update and delete close the loop.
	var updated itemResponse
	if code := apiCall(t, "PUT", base+"/api/items/"+created.ID, `{"name": "Renamed"}`, nil, &updated).StatusCode; code != http.StatusOK ||
		updated.Name != "Renamed" || *updated.Description != "My first item" || updated.CreatedAt != created.CreatedAt {
		t.Errorf("PUT item: status %d, %+v", code, updated)
	}
	var list []itemResponse
	if code := apiCall(t, "GET", base+"/api/items", "", nil, &list).StatusCode; code != http.StatusOK || len(list) != 1 || list[0].Name != "Renamed" {
		t.Errorf("GET /api/items: status %d, %+v; want the one renamed item", code, list)
	}
	var msg map[string]string
	if code := apiCall(t, "DELETE", base+"/api/items/"+created.ID, "", nil, &msg).StatusCode; code != http.StatusOK || msg["id"] != created.ID {
		t.Errorf("DELETE item: status %d, %v", code, msg)
	}
	if code := apiCall(t, "GET", base+"/api/items/"+created.ID, "", nil, nil).StatusCode; code != http.StatusNotFound {
		t.Errorf("GET deleted item: status %d, want 404", code)
	}
	if code := apiCall(t, "GET", base+"/api/async/status/6d1f1c2e-0000-4000-8000-000000000000", "", nil, nil).StatusCode; code != http.StatusNotFound {
		t.Errorf("GET status of an unknown task: %d, want 404", code)
	}
}
