package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// codeBlock is a fenced block of a markdown document.
type codeBlock struct {
	lang, text string
}

// docSection returns the fenced blocks of the section of the markdown
// file path headed heading, in order.
func docSection(t *testing.T, path, heading string) []codeBlock {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n"+heading+"\n")
	if !ok {
		t.Fatalf("%s has no section %q", path, heading)
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var blocks []codeBlock
	for _, m := range regexp.MustCompile("(?ms)^```(\\w*)\\n(.*?)^```$").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, codeBlock{lang: m[1], text: m[2]})
	}
	return blocks
}

// copyModule copies errand's module (go.mod, go.sum, the package's and
// tasks/'s Go files, tests left out, and the web/ files it embeds) into
// dir.
func copyModule(t *testing.T, dir string) {
	t.Helper()
	for _, pattern := range []string{"go.mod", "go.sum", "*.go", "tasks/*.go", "web/*.*", "web/swagger-ui/*", "web/console/*"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestTutorialAddYourOwnTask follows docs/tasks.md's "Add your own task" as
// a reader would: it saves the section's Go file into a copy of errand,
// adds the section's registration line to NewRegistry, builds and starts
// that errand, runs the section's commands against it, and checks they
// print what the section shows (but for ids and times).
func TestTutorialAddYourOwnTask(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a copy of errand (the full suite: make test)")
	}
	blocks := docSection(t, "docs/tasks.md", "## Add your own task")
	if len(blocks) != 6 {
		t.Fatalf("the section has %d code blocks, want 6: the file, the registration, and two commands with what they print", len(blocks))
	}
	file, register := blocks[0], blocks[1]
	if file.lang != "go" || register.lang != "go" || strings.Count(strings.TrimSpace(register.text), "\n") != 0 {
		t.Fatalf("blocks 1 and 2 are %q and %q, want the Go file and its one registration line", file.lang, register.lang)
	}

	dir := t.TempDir()
	copyModule(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "tasks", "wordcount.go"), []byte(file.text), 0o644); err != nil {
		t.Fatal(err)
	}
	registry := filepath.Join(dir, "tasks", "registry.go")
	src, err := os.ReadFile(registry)
	if err != nil {
		t.Fatal(err)
	}
	const beside = "\tr.Register(Declare(welcomeEmailTask(cfg)))\n"
	if !strings.Contains(string(src), beside) {
		t.Fatalf("tasks/registry.go has no line %q to register beside", beside)
	}
	src = []byte(strings.Replace(string(src), beside, beside+register.text, 1))
	if err := os.WriteFile(registry, src, 0o644); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", "errand", ".")
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build errand with the tutorial's task: %v\n%s", err, out)
	}

	addr := freeAddr(t)
	server := exec.Command(filepath.Join(dir, "errand"))
	server.Env = append(os.Environ(), "ADDR="+addr, "LOG_LEVEL=warn", "AMQP_URL=", "REDIS_URL=", "MONGODB_URI=")
	server.Stdout, server.Stderr = logWriter{t}, logWriter{t}
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Process.Kill(); _ = server.Wait() })
	exited := make(chan error)
	waitForHTTP(t, "http://"+addr+"/health", exited)

	for i := 2; i < len(blocks); i += 2 {
		cmd, shown := blocks[i], blocks[i+1]
		if cmd.lang != "sh" {
			t.Fatalf("block %d is %q, want the commands (sh)", i+1, cmd.lang)
		}
		run := exec.Command("bash", "-e", "-o", "pipefail", "-c", strings.ReplaceAll(cmd.text, "localhost:8080", addr))
		done := make(chan struct{})
		var out []byte
		go func() {
			out, err = run.Output()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = run.Process.Kill()
			t.Fatalf("the commands of block %d did not end within 30s", i+1)
		}
		if err != nil {
			t.Fatalf("the commands of block %d: %v\n%s", i+1, err, out)
		}
		if diff := cmp.Diff(tutorialJSON(t, shown.text), tutorialJSON(t, string(out))); diff != "" {
			t.Errorf("block %d printed %s, not what docs/tasks.md shows (-shown +printed, ids and times left out):\n%s", i+1, out, diff)
		}
	}
}

// tutorialJSON reads the JSON a command printed (after "data: " for an
// event), without the fields that differ from run to run.
func tutorialJSON(t *testing.T, printed string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(strings.TrimPrefix(strings.TrimSpace(printed), "data: ")), &v); err != nil {
		t.Fatalf("%q is not the JSON docs/tasks.md shows: %v", printed, err)
	}
	for _, k := range []string{"task_id", "request_id", "created_at", "started_at", "finished_at", "updated_at"} {
		delete(v, k)
	}
	return v
}
