package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// browserScript runs one of tools/browser's Playwright scripts against
// base, with Debian's chromium, and decodes what it prints. scripts/test
// installs chromium and the scripts' node_modules.
func browserScript(t *testing.T, script, base string, out any) {
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
	cmd := exec.Command("node", filepath.Join("tools/browser", script), base, shots)
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
