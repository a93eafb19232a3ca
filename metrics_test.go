package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsEndToEnd drives a submit, a status read and a bad request
// through errand, then scrapes /metrics and checks the series a dashboard
// or alert reads, on the embedded backends and on the real servers.
func TestMetricsEndToEnd(t *testing.T) {
	for name, stack := range backendModes {
		t.Run(name, func(t *testing.T) {
			env := stack(t)
			env["HEAVY_TASK_DELAY"] = "1ms"
			env["WORKERS"] = "3"
			base := startErrand(t, env)
			queue := env["QUEUE_NAME"]
			if queue == "" {
				queue = "errand.tasks"
			}

			id := submitTask(t, base, `{"data": "metrics", "iterations": 2, "priority": "high"}`)
			waitForStatus(t, base, id, stateSuccess, 20*time.Second)
			if code := apiCall(t, "POST", base+"/api/async/process", `{"iterations": 2}`, nil, nil).StatusCode; code != http.StatusUnprocessableEntity {
				t.Fatalf("bad submit: %d, want 422", code)
			}

			families := scrape(t, base)
			checks := []struct {
				name   string
				labels map[string]string
				want   float64
			}{
				{"errand_tasks_submitted_total", map[string]string{"task_type": "process_heavy_task", "priority": "high"}, 1},
				{"errand_tasks_started_total", map[string]string{"task_type": "process_heavy_task"}, 1},
				{"errand_tasks_succeeded_total", map[string]string{"task_type": "process_heavy_task"}, 1},
				{"errand_worker_pool_size", nil, 3},
				{"errand_workers_busy", nil, 0},
				{"errand_dependency_up", map[string]string{"dependency": "rabbitmq"}, 1},
				{"errand_dependency_up", map[string]string{"dependency": "redis"}, 1},
				{"errand_dependency_up", map[string]string{"dependency": "mongodb"}, 1},
				{"errand_queue_messages", map[string]string{"queue": queue}, 0},
				{"errand_queue_messages", map[string]string{"queue": queue + ".dead"}, 0},
				{"errand_build_info", nil, 1},
			}
			for _, c := range checks {
				if got, ok := sampleValue(families, c.name, c.labels); !ok || got != c.want {
					t.Errorf("%s%v = %v (present %v), want %v", c.name, c.labels, got, ok, c.want)
				}
			}
			counts := []struct {
				name   string
				labels map[string]string
				want   uint64
			}{
				{"errand_http_request_duration_seconds", map[string]string{"method": "POST", "route": "POST /api/async/process", "code": "202"}, 1},
				{"errand_http_request_duration_seconds", map[string]string{"method": "POST", "route": "POST /api/async/process", "code": "422"}, 1},
				{"errand_task_run_duration_seconds", map[string]string{"task_type": "process_heavy_task"}, 1},
				{"errand_task_queue_wait_seconds", map[string]string{"task_type": "process_heavy_task"}, 1},
				{"errand_broker_publish_duration_seconds", map[string]string{"outcome": "confirmed"}, 1},
			}
			for _, c := range counts {
				if got, ok := histogramCount(families, c.name, c.labels); !ok || got != c.want {
					t.Errorf("%s%v count = %d (present %v), want %d", c.name, c.labels, got, ok, c.want)
				}
			}
			// Route labels are patterns, never raw paths with ids in them.
			for _, m := range families["errand_http_request_duration_seconds"].GetMetric() {
				if route := labelValue(m, "route"); strings.Contains(route, id) {
					t.Errorf("route label %q contains a task id", route)
				}
			}
		})
	}
}

// TestWorkerOnlyServesMetrics: a ROLE=worker process serves /health and
// /metrics for probes and scraping, and nothing of the API.
func TestWorkerOnlyServesMetrics(t *testing.T) {
	env := realStack(t)
	env["ROLE"] = "worker"
	env["WORKERS"] = "2"
	base := startErrand(t, env)
	families := scrape(t, base)
	if got, ok := sampleValue(families, "errand_worker_pool_size", nil); !ok || got != 2 {
		t.Errorf("errand_worker_pool_size = %v (present %v), want 2", got, ok)
	}
	if code := apiCall(t, "GET", base+"/api/items", "", nil, nil).StatusCode; code != http.StatusNotFound {
		t.Errorf("GET /api/items on a worker: %d, want 404", code)
	}
}

func scrape(t testing.TB, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return families
}

func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

func findMetric(families map[string]*dto.MetricFamily, name string, labels map[string]string) (*dto.Metric, bool) {
	for _, m := range families[name].GetMetric() {
		match := true
		for k, v := range labels {
			if labelValue(m, k) != v {
				match = false
			}
		}
		if match {
			return m, true
		}
	}
	return nil, false
}

func sampleValue(families map[string]*dto.MetricFamily, name string, labels map[string]string) (float64, bool) {
	m, ok := findMetric(families, name, labels)
	if !ok {
		return 0, false
	}
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	default:
		panic(fmt.Sprintf("%s is neither a counter nor a gauge", name))
	}
}

func histogramCount(families map[string]*dto.MetricFamily, name string, labels map[string]string) (uint64, bool) {
	m, ok := findMetric(families, name, labels)
	if !ok || m.Histogram == nil {
		return 0, false
	}
	return m.Histogram.GetSampleCount(), true
}

// TestMetricsFollowPrometheusConventions feeds a real stack's /metrics,
// after some traffic, to `promtool check metrics`, which flags names,
// units and help texts that break Prometheus's conventions.
func TestMetricsFollowPrometheusConventions(t *testing.T) {
	needsServices(t)
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool (Debian's prometheus package, which make test installs) is needed: %v", err)
	}
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	base := startErrand(t, env)
	waitForStatus(t, base, submitTask(t, base, `{"data": "lint", "iterations": 1}`), stateSuccess, 20*time.Second)
	apiCall(t, "GET", base+"/api/items/nope", "", nil, nil)

	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = resp.Body
	out, err := check.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}
