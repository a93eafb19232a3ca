package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDashboardsAndAlertsLive starts a real Prometheus scraping separate
// errand api and worker processes (and RabbitMQ's own metrics) on the real
// stack, drives a mixed load (successes, failures with retries and dead
// letters, 4xx, 503s from an api whose broker is down), then evaluates every
// Grafana panel query and every alert and recording rule through
// Prometheus's HTTP API: none may error, and every panel query returns data.
func TestDashboardsAndAlertsLive(t *testing.T) {
	needsServices(t)
	promBin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not installed (scripts/test installs Debian's package): %v", err)
	}
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "5ms"
	env["EMAIL_STEP_DELAY"] = "0s"
	api := startChild(t, withEnv(env, "ROLE", "api"))
	// An api whose broker is unreachable: its submits answer 503.
	brokenAPI := startChild(t, withEnv(withEnv(env, "ROLE", "api"), "AMQP_URL", "amqp://guest:guest@"+freeAddr(t)+"/"))
	// SMTP_ADDR names a port nothing listens on: every e-mail fails,
	// is retried, and ends dead-lettered.
	worker := startChild(t, withEnv(withEnv(withEnv(env, "ROLE", "worker"), "SMTP_ADDR", freeAddr(t)), "WORKERS", "4"))

	rules, err := filepath.Abs("prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	promAddr := freeAddr(t)
	target := func(c *child) string { return strings.TrimPrefix(c.base, "http://") }
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: errand-api
    static_configs: [{targets: [%q, %q]}]
  - job_name: errand-worker
    static_configs: [{targets: [%q]}]
  - job_name: rabbitmq
    static_configs: [{targets: ["127.0.0.1:15692"]}]
`, rules, target(api), target(brokenAPI), target(worker))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	prom := exec.Command(promBin, "--config.file="+filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--enable-feature=exemplar-storage")
	promLog, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	prom.Stdout, prom.Stderr = promLog, promLog
	if err := prom.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
	t.Cleanup(func() {
		_ = prom.Process.Kill()
		_ = prom.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(promLog.Name())
			t.Logf("prometheus log:\n%s", tail(string(b), 30))
		}
	})
	promURL := "http://" + promAddr
	waitFor(t, 30*time.Second, "prometheus to be ready", func() bool {
		resp, err := http.Get(promURL + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	// The load: successes, failing e-mails, bad requests, refused submits.
	var ids []string
	for i := range 20 {
		ids = append(ids, submitTask(t, api.base, fmt.Sprintf(`{"data": "live %d", "iterations": 3, "priority": "%s"}`, i, []string{"low", "normal", "high"}[i%3])))
	}
	var mail taskAccepted
	if code := apiCall(t, "POST", api.base+"/api/send-welcome-email?user_email=ops@example.com&user_name=Ops", "", nil, &mail).StatusCode; code != http.StatusAccepted {
		t.Fatalf("submit e-mail: %d", code)
	}
	for range 5 {
		apiCall(t, "POST", api.base+"/api/async/process", `{"iterations": 0}`, nil, nil)
		apiCall(t, "GET", api.base+"/api/items/not-an-id", "", nil, nil)
		if code := apiCall(t, "POST", brokenAPI.base+"/api/async/process", `{"data": "refused"}`, nil, nil).StatusCode; code != http.StatusServiceUnavailable {
			t.Errorf("submit to the api without a broker: %d, want 503", code)
		}
	}
	for _, id := range ids {
		waitForStatus(t, api.base, id, stateSuccess, 30*time.Second)
	}
	waitForStatus(t, api.base, mail.TaskID, stateFailure, 60*time.Second)

	// Let Prometheus scrape the end state a few times, so every rate()
	// window has at least two samples of it.
	query := func(q string) (status, errMsg string, n int) {
		resp, err := http.Get(promURL + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			t.Fatalf("query %s: %v", q, err)
		}
		defer resp.Body.Close()
		var out struct {
			Status string
			Error  string
			Data   struct{ Result []json.RawMessage }
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("decode answer to %s: %v", q, err)
		}
		return out.Status, out.Error, len(out.Data.Result)
	}
	waitFor(t, 60*time.Second, "the dead letter to show in Prometheus", func() bool {
		_, _, n := query(`errand_tasks_dead_lettered_total{reason="failed",task_type="send_welcome_email"} > 0`)
		return n > 0
	})
	time.Sleep(3 * time.Second) // three more scrapes of the settled state

	for _, file := range []string{"grafana/dashboards/errand-overview.json", "grafana/dashboards/rabbitmq.json"} {
		exprs := dashboardExprs(t, file)
		if len(exprs) == 0 {
			t.Fatalf("%s has no queries", file)
		}
		for _, q := range exprs {
			status, errMsg, n := query(q)
			if status != "success" {
				t.Errorf("%s: query %q failed: %s", file, q, errMsg)
			} else if n == 0 {
				t.Errorf("%s: query %q returned no data", file, q)
			}
		}
	}

	resp, err := http.Get(promURL + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rulesOut struct {
		Data struct {
			Groups []struct {
				Name  string
				Rules []struct {
					Name, Query, Health, LastError, Type string
				}
			}
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&rulesOut); err != nil {
		t.Fatal(err)
	}
	evaluated := 0
	for _, g := range rulesOut.Data.Groups {
		for _, r := range g.Rules {
			evaluated++
			if r.Health != "ok" || r.LastError != "" {
				t.Errorf("rule %s (%s) health %q: %s", r.Name, r.Query, r.Health, r.LastError)
			}
			if status, errMsg, _ := query(r.Query); status != "success" {
				t.Errorf("rule %s query failed: %s", r.Name, errMsg)
			}
		}
	}
	if evaluated < 10 {
		t.Errorf("Prometheus evaluated %d rules, want every rule in prometheus/alerts.yml", evaluated)
	}
}

// dashboardExprs returns every "expr" in a Grafana dashboard JSON file.
func dashboardExprs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				if s, ok := c.(string); ok && k == "expr" {
					out = append(out, s)
				} else {
					walk(c)
				}
			}
		case []any:
			for _, c := range v {
				walk(c)
			}
		}
	}
	walk(doc)
	return out
}
