package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestSideBySideCostPerUnit holds scripts/sidebyside_cost.py to its
// arithmetic on snapshots written by hand: a role counts its root process
// and the root's descendants, the worker and the services are counted from
// the start of the submit step to the end of the drain, Debian's Redis
// (whose executable is redis-check-rdb) counts as Redis, a pid that now
// belongs to another program starts from zero, and a step without k6's
// CPU gives no k6 figure rather than zero.
func TestSideBySideCostPerUnit(t *testing.T) {
	dir := t.TempDir()
	hz := clockTicks(t)
	write := func(name, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// "pid ppid exe ticks rss cmdline"; ticks are in units of 1/hz s, so
	// hz ticks are one second.
	snap := func(rows ...string) string { return strings.Join(rows, "\n") + "\n" }
	row := func(pid, ppid, exe string, seconds float64) string {
		return pid + " " + ppid + " " + exe + " " + strconv.Itoa(int(seconds*float64(hz))) + " 1000 " + exe
	}
	// API: pid 100 and its child 101. Worker: pid 200 and its child 201,
	// which did not exist before the step. Services: RabbitMQ, Redis,
	// the stand-in and PostgreSQL. Pid 300 was "k6" before and is now an
	// unrelated program, which must count from zero.
	write("cpu-submit-before.txt", snap(row("100", "1", "errand", 10), row("101", "100", "errand", 1),
		row("200", "1", "errand", 20), row("10", "1", "beam.smp", 50), row("11", "1", "redis-check-rdb", 5),
		row("12", "1", "mongo-standin", 7), row("13", "1", "postgres", 3), row("300", "1", "k6", 4)))
	write("cpu-submit-after.txt", snap(row("100", "1", "errand", 11), row("101", "100", "errand", 1.5),
		row("200", "1", "errand", 21), row("201", "200", "errand", 0.5), row("10", "1", "beam.smp", 51),
		row("11", "1", "redis-check-rdb", 5.5), row("12", "1", "mongo-standin", 7.5), row("13", "1", "postgres", 3.25),
		row("300", "1", "bash", 0.25)))
	write("cpu-drain-before.txt", snap(row("200", "1", "errand", 21)))
	write("cpu-drain-after.txt", snap(row("100", "1", "errand", 11.1), row("101", "100", "errand", 1.5),
		row("200", "1", "errand", 21.5), row("201", "200", "errand", 0.5), row("10", "1", "beam.smp", 51.5),
		row("11", "1", "redis-check-rdb", 5.5), row("12", "1", "mongo-standin", 7.5), row("13", "1", "postgres", 3.25)))
	write("submit.k6times", "0m0.010s 0m0.020s\n0m0.600s 0m0.150s\n")
	// No drain.k6times: k6's CPU over submit + drain is unknown.
	write("submit.json", `{"ok": 1000, "wall_s": 12}`)
	write("drain.json", `{"drain_s": 0.5}`)
	write("items.json", `{}`)
	write("e2e.json", `{}`)

	units := func() (map[string]string, string) {
		t.Helper()
		out, err := exec.Command("python3", "scripts/sidebyside_cost.py", "units", dir, "api:100,worker:200").CombinedOutput()
		if err != nil {
			t.Fatalf("sidebyside_cost.py units: %v\n%s", err, out)
		}
		got := map[string]string{}
		for _, field := range strings.Fields(string(out)) {
			k, v, _ := strings.Cut(field, "=")
			got[k] = v
		}
		return got, string(out)
	}
	got, out := units()
	want := map[string]string{
		// (11 - 10) + (1.5 - 1) s of API CPU in the submit step over 1,000 submits.
		"api_us_per_submit": "1500",
		// (21.5 - 20) + 0.5 s of worker CPU over submit and drain.
		"worker_us_per_task": "2000",
		// RabbitMQ 1.5 s, Redis 0.5, the stand-in 0.5, PostgreSQL 0.25.
		"services_us_per_task":   "2750",
		"rabbitmq_us_per_task":   "1500",
		"redis_us_per_task":      "500",
		"mongo_wire_us_per_task": "500",
		"postgres_us_per_task":   "250",
		// k6's 0.75 s in the submit step; pid 300's 0.25 s as "bash" is no one's.
		"client_us_per_submit": "750",
		"ceiling_share":        "NA",
		"e2e_us_per_task":      "NA",
		"api_us_per_item_req":  "NA",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q (output: %s)", k, got[k], v, out)
		}
	}

	// With k6's 0.25 s in the drain too, everything but errand spent
	// 2.75 + 1 s on 1,000 tasks sustained over 12.5 s: 0.3 cores' worth,
	// a share of the machine's cores.
	write("drain.k6times", "0m0.000s 0m0.000s\n0m0.200s 0m0.050s\n")
	cpus, err := exec.Command("python3", "-c", "import os; print(os.cpu_count())").Output()
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(cpus)))
	if err != nil {
		t.Fatal(err)
	}
	got, out = units()
	if want := strconv.FormatFloat(0.3/float64(n), 'f', 2, 64); got["ceiling_share"] != want {
		t.Errorf("ceiling_share = %q, want %q on %d cores (output: %s)", got["ceiling_share"], want, n, out)
	}
}

// clockTicks is the kernel's clock ticks a second, which /proc's CPU times
// count in.
func clockTicks(t *testing.T) int {
	t.Helper()
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		t.Fatalf("getconf CLK_TCK: %v", err)
	}
	hz, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("getconf CLK_TCK said %q: %v", out, err)
	}
	return hz
}
