package main

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// browserScript runs one of tools/browser's Playwright scripts against
// base (with args after the screenshot directory), with Debian's
// chromium, and decodes what it prints. scripts/test installs chromium and
// the scripts' node_modules.
func browserScript(t *testing.T, script, base string, out any, args ...string) {
	t.Helper()
	for _, need := range []string{"node", "/usr/bin/chromium"} {
		if _, err := exec.LookPath(need); err != nil {
			t.Fatalf("%s is needed for the browser tests (scripts/test installs it): %v", need, err)
		}
	}
	if _, err := os.Stat("tools/browser/node_modules/playwright-core"); err != nil {
		t.Fatalf("tools/browser's node_modules are needed (scripts/test runs npm ci there): %v", err)
	}
	shots := t.TempDir()
	cmd := exec.Command("node", append([]string{filepath.Join("tools/browser", script), base, shots}, args...)...)
	output, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node %s: %v\n%s%s", script, err, output, stderr)
	}
	if err := json.Unmarshal(output, out); err != nil {
		t.Fatalf("node %s printed %q: %v", script, output, err)
	}
	t.Logf("screenshots in %s", shots)
}

// TestDocsTryItOutInABrowser opens /docs in headless Chromium, as the
// guide's Part 8 does, runs "Try it out" on POST /api/tasks, and follows
// the task it submitted to SUCCESS; the page reaches nothing but errand.
func TestDocsTryItOutInABrowser(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "10ms"
	base := startErrand(t, env)
	var got struct {
		Status  string       `json:"status"`
		Answer  taskAccepted `json:"answer"`
		Outside []string     `json:"outside"`
		Errors  []string     `json:"errors"`
	}
	browserScript(t, "docs.mjs", base, &got)
	if got.Status != "202" || got.Answer.TaskID == "" || got.Answer.Status != statePending {
		t.Fatalf("Try it out on POST /api/tasks: %s %+v, want 202 with a PENDING task", got.Status, got.Answer)
	}
	if len(got.Outside) > 0 || len(got.Errors) > 0 {
		t.Errorf("the page asked for %v outside errand and logged errors %v; want neither", got.Outside, got.Errors)
	}
	waitForStatus(t, base, got.Answer.TaskID, stateSuccess, 30*time.Second)
}

// TestConsoleInABrowser uses the console in headless Chromium against the
// real stack: a task submitted from the form is followed to SUCCESS on
// its page with no reload, a running task is cancelled, a failed one
// retried, a refused submit explained, the list filtered and a task found
// by id; the page reaches nothing but errand, and fits a phone.
func TestConsoleInABrowser(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "100ms"
	base := startErrand(t, env)
	var got struct {
		Watch struct {
			TaskID string `json:"task_id"`
			Midway struct {
				Status   string   `json:"status"`
				Progress int      `json:"progress"`
				Timeline []string `json:"timeline"`
			} `json:"midway"`
			Final       string `json:"final"`
			Navigations int    `json:"navigations"`
			Result      string `json:"result"`
		} `json:"watch"`
		Cancel struct {
			TaskID string `json:"task_id"`
			Final  string `json:"final"`
		} `json:"cancel"`
		Retry struct {
			Failed  string `json:"failed"`
			Retried string `json:"retried"`
			Error   string `json:"error"`
		} `json:"retry"`
		Refused struct {
			URL     string `json:"url"`
			Message string `json:"message"`
		} `json:"refused"`
		Filter struct {
			States []string `json:"states"`
			IDs    []string `json:"ids"`
		} `json:"filter"`
		Search struct{ URL string } `json:"search"`
		Dead   struct {
			IDs      []string `json:"ids"`
			Reasons  []string `json:"reasons"`
			Requeued string   `json:"requeued"`
			Unticked string   `json:"unticked"`
			Purged   string   `json:"purged"`
			Left     int      `json:"left"`
		} `json:"dead"`
		Overview struct {
			Failures int `json:"failures"`
		} `json:"overview"`
		Workflow struct {
			ID       string   `json:"id"`
			State    string   `json:"state"`
			Steps    []string `json:"steps"`
			States   []string `json:"states"`
			Groups   int      `json:"groups"`
			StepPage string   `json:"stepPage"`
			Back     string   `json:"back"`
		} `json:"workflow"`
		Phone struct {
			ScrollWidth         int `json:"scrollWidth"`
			WorkflowScrollWidth int `json:"workflowScrollWidth"`
		} `json:"phone"`
		Outside []string `json:"outside"`
		Errors  []string `json:"errors"`
	}
	browserScript(t, "console.mjs", base, &got)

	w := got.Watch
	if w.Midway.Status != stateProgress || w.Midway.Progress < 20 || w.Midway.Progress >= 100 {
		t.Errorf("task page midway: %s at %d%%, want PROGRESS between 20 and 99", w.Midway.Status, w.Midway.Progress)
	}
	if !slices.ContainsFunc(w.Midway.Timeline, func(e string) bool { return strings.HasSuffix(e, "UTC Started") }) {
		t.Errorf("task page midway: timeline %q, want the start among its entries", w.Midway.Timeline)
	}
	if w.Final != stateSuccess || w.Navigations != 0 {
		t.Errorf("task page at the end: %s after %d navigations, want SUCCESS with none", w.Final, w.Navigations)
	}
	var result struct {
		TotalProcessed int `json:"total_processed"`
	}
	if err := json.Unmarshal([]byte(w.Result), &result); err != nil || result.TotalProcessed != 40 {
		t.Errorf("result shown: %q (%v), want total_processed 40", w.Result, err)
	}
	waitForStatus(t, base, w.TaskID, stateSuccess, 10*time.Second)

	if got.Cancel.Final != stateRevoked {
		t.Errorf("cancelled task's page: %s, want REVOKED", got.Cancel.Final)
	}
	waitForStatus(t, base, got.Cancel.TaskID, stateRevoked, 10*time.Second)

	r := got.Retry
	if r.Retried == "" || r.Retried == r.Failed || !strings.Contains(r.Error, "file not found") {
		t.Errorf("retry: %+v, want a new task failing with file not found", r)
	}
	waitForStatus(t, base, r.Failed, stateFailure, 10*time.Second)
	retried := waitForStatus(t, base, r.Retried, stateFailure, 10*time.Second)
	if retried.TaskType != "process_image" {
		t.Errorf("retried task's type: %s, want process_image", retried.TaskType)
	}

	if !strings.HasSuffix(got.Refused.URL, "/ui/submit") || !strings.Contains(got.Refused.Message, "iterations") {
		t.Errorf("refused submit: %+v, want the form again with the iterations error", got.Refused)
	}
	for _, s := range got.Filter.States {
		if s != stateFailure {
			t.Errorf("filtered to FAILURE, the list shows a %s task", s)
		}
	}
	if !slices.Contains(got.Filter.IDs, r.Failed) || !slices.Contains(got.Filter.IDs, r.Retried) {
		t.Errorf("filtered to FAILURE: %v, want %s and %s among them", got.Filter.IDs, r.Failed, r.Retried)
	}
	if !strings.HasSuffix(got.Search.URL, "/ui/tasks/"+w.TaskID) {
		t.Errorf("search by id went to %s, want the task's page", got.Search.URL)
	}
	d := got.Dead
	if !slices.Contains(d.IDs, r.Failed) || !slices.Contains(d.IDs, r.Retried) || !slices.ContainsFunc(d.Reasons, func(s string) bool { return strings.Contains(s, "file not found") }) {
		t.Errorf("dead letters page: %v %v, want both failed tasks with their reason", d.IDs, d.Reasons)
	}
	if d.Requeued == "" || slices.Contains([]string{r.Failed, r.Retried}, d.Requeued) {
		t.Errorf("requeue from the dead letters opened %q, want a new task", d.Requeued)
	}
	waitForStatus(t, base, d.Requeued, stateFailure, 10*time.Second)
	if !strings.HasSuffix(d.Unticked, "/ui/dead-letters") {
		t.Errorf("purge without ticking the box went to %s, want to stay on the page", d.Unticked)
	}
	if !strings.Contains(d.Purged, "Dead letters purged: ") || d.Left != 0 {
		t.Errorf("after the purge: %q, %d rows left; want the count and none left", d.Purged, d.Left)
	}
	var dead deadLetterListJSON
	apiCall(t, "GET", base+"/api/dead-letters", "", nil, &dead)
	if len(dead.DeadLetters) != 0 {
		t.Errorf("the API still lists %d dead letters after the console's purge", len(dead.DeadLetters))
	}
	if got.Overview.Failures < 2 {
		t.Errorf("overview lists %d recent failures, want at least 2", got.Overview.Failures)
	}
	wf := got.Workflow
	if wf.State != stateSuccess || !slices.Equal(wf.Steps, []string{"chain[0]", "chain[1].group[0]", "chain[1].group[1]", "chain[1].then"}) ||
		!slices.Equal(wf.States, []string{stateSuccess, stateSuccess, stateSuccess, stateSuccess}) || wf.Groups != 1 {
		t.Errorf("workflow page: %+v, want its four steps drawn SUCCESS, the two members as one group", wf)
	}
	var wfDoc workflowJSON
	apiCall(t, "GET", base+"/api/workflows/"+wf.ID, "", nil, &wfDoc)
	if len(wfDoc.Steps) == 0 || !strings.HasSuffix(wf.StepPage, "/ui/tasks/"+wfDoc.Steps[0].TaskID) || wf.Back != "/ui/workflows/"+wf.ID {
		t.Errorf("the first step's card led to %s and its page back to %s; want its task's page and back to the workflow", wf.StepPage, wf.Back)
	}
	if got.Phone.ScrollWidth > 390 || got.Phone.WorkflowScrollWidth > 390 {
		t.Errorf("task and workflow pages on a 390 px phone are %d and %d px wide, want no sideways scrolling", got.Phone.ScrollWidth, got.Phone.WorkflowScrollWidth)
	}
	if len(got.Outside) > 0 || len(got.Errors) > 0 {
		t.Errorf("the console asked for %v outside errand and logged errors %v; want neither", got.Outside, got.Errors)
	}
}

// TestConsoleSignInInABrowser signs in to the console with one of two API
// keys: it sees that key's tasks only, its cookies are HttpOnly and
// SameSite=Strict, and a POST without the form's CSRF token is refused.
func TestConsoleSignInInABrowser(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1s"
	env["API_KEYS"] = "console-key-a,console-key-b"
	base := startErrand(t, env)
	submitAs := func(key string) string {
		var acc taskAccepted
		body := `{"type": "process_heavy_task", "args": {"data": "x", "iterations": 600}}`
		if code := apiCall(t, "POST", base+"/api/tasks", body, map[string]string{"X-API-Key": key}, &acc).StatusCode; code != http.StatusAccepted {
			t.Fatalf("submit as %s: status %d", key, code)
		}
		return acc.TaskID
	}
	own, other := submitAs("console-key-a"), submitAs("console-key-b")
	var got struct {
		Redirected string `json:"redirected"`
		WrongKey   struct {
			Status int    `json:"status"`
			Alert  string `json:"alert"`
		} `json:"wrongKey"`
		Listed  []string `json:"listed"`
		Cookies []struct {
			Name     string `json:"name"`
			HTTPOnly bool   `json:"httpOnly"`
			SameSite string `json:"sameSite"`
			Path     string `json:"path"`
		} `json:"cookies"`
		OtherTask struct {
			Status  int    `json:"status"`
			Heading string `json:"heading"`
		} `json:"otherTask"`
		OwnTask      string   `json:"ownTask"`
		Forged       int      `json:"forged"`
		AfterSignOut string   `json:"afterSignOut"`
		Outside      []string `json:"outside"`
		Errors       []string `json:"errors"`
	}
	browserScript(t, "console-keys.mjs", base, &got, "console-key-a", own, other)

	if !strings.Contains(got.Redirected, "/ui/login?next=%2Fui%2Ftasks") {
		t.Errorf("/ui/tasks without a session went to %s, want the sign-in page", got.Redirected)
	}
	if got.WrongKey.Status != http.StatusUnauthorized || !strings.Contains(got.WrongKey.Alert, "not one of") {
		t.Errorf("a wrong key: %d %q, want 401 saying so", got.WrongKey.Status, got.WrongKey.Alert)
	}
	if !slices.Contains(got.Listed, own) || slices.Contains(got.Listed, other) {
		t.Errorf("signed in with key a, the list shows %v; want %s and not key b's %s", got.Listed, own, other)
	}
	names := map[string]bool{}
	for _, c := range got.Cookies {
		names[c.Name] = true
		if !c.HTTPOnly || c.SameSite != "Strict" || c.Path != "/ui/" {
			t.Errorf("cookie %s: HttpOnly %v, SameSite %s, path %s; want HttpOnly, Strict, /ui/", c.Name, c.HTTPOnly, c.SameSite, c.Path)
		}
	}
	if !names[sessionCookie] || !names[csrfCookie] {
		t.Errorf("cookies %v, want %s and %s", got.Cookies, sessionCookie, csrfCookie)
	}
	if got.OtherTask.Status != http.StatusNotFound {
		t.Errorf("key b's task in key a's console: %d %q, want 404", got.OtherTask.Status, got.OtherTask.Heading)
	}
	if !strings.Contains(got.OwnTask, own) {
		t.Errorf("own task's page: %q, want its id", got.OwnTask)
	}
	if got.Forged != http.StatusForbidden {
		t.Errorf("a cancel posted without the CSRF token: %d, want 403", got.Forged)
	}
	var st taskJSON
	apiCall(t, "GET", base+"/api/tasks/"+own, "", map[string]string{"X-API-Key": "console-key-a"}, &st)
	if st.Revoked != nil || st.Status == stateRevoked {
		t.Errorf("the forged cancel cancelled the task: %+v", st)
	}
	if !strings.Contains(got.AfterSignOut, "/ui/login") {
		t.Errorf("after signing out, /ui/tasks went to %s, want the sign-in page", got.AfterSignOut)
	}
	if len(got.Outside) > 0 || len(got.Errors) > 0 {
		t.Errorf("the console asked for %v outside errand and logged errors %v; want neither", got.Outside, got.Errors)
	}
	for _, id := range []string{own, other} {
		key := map[string]string{own: "console-key-a", other: "console-key-b"}[id]
		apiCall(t, "POST", base+"/api/tasks/"+id+"/cancel", "", map[string]string{"X-API-Key": key}, nil)
	}
}
