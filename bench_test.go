package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"errand/tasks"
)

// Benchmarks of the hot paths. They are not part of the test command's
// timing: run them with
//
//	go test -run '^$' -bench . -benchtime 3s .

// benchStack opens the real backends (or the embedded ones for an empty
// env) as run() does.
func benchStack(b *testing.B, env map[string]string) *backends {
	b.Helper()
	bk, _ := benchStackWithMetrics(b, env)
	return bk
}

// benchStackWithMetrics is benchStack that also returns the metrics the
// backends report to.
func benchStackWithMetrics(b *testing.B, env map[string]string) (*backends, *metrics) {
	b.Helper()
	cfg, err := parseConfig([]string{"errand"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	m := testMetrics()
	bk, err := openBackends(context.Background(), cfg, slog.New(slog.DiscardHandler), m, disabledTracing().tracer)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bk.close)
	return bk, m
}

// meanTasksPerMessage is the average fill of the task messages published.
func meanTasksPerMessage(m *metrics) float64 {
	var d dto.Metric
	if err := m.tasksPerMessage.Write(&d); err != nil || d.GetHistogram().GetSampleCount() == 0 {
		return 0
	}
	return d.GetHistogram().GetSampleSum() / float64(d.GetHistogram().GetSampleCount())
}

// BenchmarkSubmit measures the submit path (PENDING status write, then a
// confirmed publish) from many goroutines at once, as concurrent HTTP
// requests drive it. On RabbitMQ it also reports how many tasks each
// message carried (overlapping publishes share one; see broker_envelope.go).
func BenchmarkSubmit(b *testing.B) {
	for name, env := range backendModes {
		b.Run(name, func(b *testing.B) {
			bk, m := benchStackWithMetrics(b, env(b))
			sub := quietSubmitter(bk)
			spec := specOf(b, tasks.HeavyTaskName, tasks.HeavyArgs{Data: "bench", Iterations: 1})
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := sub.submit(context.Background(), spec, ""); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if name == "real" {
				b.ReportMetric(meanTasksPerMessage(m), "tasks/msg")
			}
		})
	}
}

// BenchmarkPublish measures a task message's publish alone, to the
// broker's confirm, from as many goroutines as BenchmarkSubmit: the part
// of a submit after its PENDING status write.
func BenchmarkPublish(b *testing.B) {
	for name, env := range backendModes {
		b.Run(name, func(b *testing.B) {
			bk, m := benchStackWithMetrics(b, env(b))
			args, err := json.Marshal(tasks.HeavyArgs{Data: "bench", Iterations: 1})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					msg := taskMessage{ID: newUUID(), Type: tasks.HeavyTaskName, Args: args, Priority: "normal", EnqueuedAt: time.Now()}
					if err := bk.publisher.publish(context.Background(), msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if name == "real" {
				b.ReportMetric(meanTasksPerMessage(m), "tasks/msg")
			}
		})
	}
}

// BenchmarkTaskPath measures the task path: a worker pool of the default
// size consuming b.N queued process_heavy_task tasks (one iteration, no
// delay), running each, storing its result and final status, and acking
// it. The tasks are queued first, by concurrent submits as HTTP requests
// make them (so on RabbitMQ they share messages), outside the timer.
func BenchmarkTaskPath(b *testing.B) {
	for name, env := range backendModes {
		b.Run(name, func(b *testing.B) {
			e := env(b)
			bk, m := benchStackWithMetrics(b, e)
			sub := quietSubmitter(bk)
			spec := specOf(b, tasks.HeavyTaskName, tasks.HeavyArgs{Data: "bench", Iterations: 1})
			queued := make(chan struct{}, b.N)
			var submitters sync.WaitGroup
			for range 8 {
				submitters.Add(1)
				go func() {
					defer submitters.Done()
					for range queued {
						if _, err := sub.submit(context.Background(), spec, ""); err != nil {
							b.Error(err)
						}
					}
				}()
			}
			for range b.N {
				queued <- struct{}{}
			}
			close(queued)
			submitters.Wait()

			cfg, err := parseConfig([]string{"errand"}, func(k string) string { return e[k] }, io.Discard)
			if err != nil {
				b.Fatal(err)
			}
			pool := newWorkerPool(bk.queue, tasks.NewRegistry(tasks.Config{}), bk.statuses, bk.results, bk.revoked, bk.keyStores(), nil,
				workerConfig{size: cfg.Workers, resultTTL: time.Hour, drainTimeout: 5 * time.Second},
				slog.New(slog.DiscardHandler), m, disabledTracing())
			pool.jitter = func() float64 { return 0 }
			succeeded := m.tasksSucceeded.WithLabelValues(tasks.HeavyTaskName)
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			b.ReportAllocs()
			b.ResetTimer()
			go func() { done <- pool.run(ctx) }()
			for counterValue(succeeded) < float64(b.N) {
				select {
				case err := <-done:
					b.Fatalf("worker pool stopped early: %v", err)
				case <-time.After(time.Millisecond):
				}
			}
			b.StopTimer()
			stop()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
		})
	}
}

// counterValue reads a Prometheus counter.
func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return 0
	}
	return d.GetCounter().GetValue()
}

// BenchmarkSubmitHTTP measures POST /api/async/process through the whole
// handler stack (request id, metrics, tracing, decoding, validation) on
// the embedded backends: the cost errand adds around the broker.
func BenchmarkSubmitHTTP(b *testing.B) {
	bk := benchStack(b, map[string]string{})
	cfg, err := parseConfig([]string{"errand"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	// A real handler, so the access-log line costs what it does in
	// production (LOG_LEVEL=info).
	log, m := slog.New(slog.NewJSONHandler(io.Discard, nil)), testMetrics()
	registry := tasks.NewRegistry(tasks.Config{})
	api := newTaskAPI(cfg, bk, registry, log, m, disabledTracing())
	h := newServer(serverDeps{log: log, items: bk.items, registry: registry, specs: api.specs, submitter: api.submitter, reader: api.reader,
		health: bk.health, backends: bk.mode, maxBody: 1 << 20, healthTimeout: time.Second,
		now: time.Now, serveAPI: true, metrics: m, tracing: disabledTracing()})
	body := `{"data": "heavy processing task", "iterations": 10, "priority": "high"}`
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/api/async/process", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusAccepted {
				b.Fatalf("status %d", rec.Code)
			}
		}
	})
}

// BenchmarkStatusPut measures one status write (the Lua rank check) on
// Redis.
func BenchmarkStatusPut(b *testing.B) {
	bk := benchStack(b, realStack(b))
	b.ReportAllocs()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := newUUID()
		for pb.Next() {
			if err := bk.statuses.put(context.Background(), taskStatus{TaskID: id, Status: stateProgress}, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkStatusGet measures a status read on Redis from 32 goroutines,
// as concurrent polls drive it; reads that overlap share a pipeline.
func BenchmarkStatusGet(b *testing.B) {
	bk := benchStack(b, realStack(b))
	id := newUUID()
	if err := bk.statuses.put(context.Background(), taskStatus{TaskID: id, Status: stateSuccess}, time.Hour); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetParallelism(32 / max(1, runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := bk.statuses.get(context.Background(), id); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSaveResult measures the idempotent result write on MongoDB
// from as many goroutines as a busy worker pool has.
func BenchmarkSaveResult(b *testing.B) {
	bk := benchStack(b, realStack(b))
	b.ReportAllocs()
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, err := bk.results.saveResult(context.Background(), taskRecord{TaskID: newUUID(), TaskType: "bench", Status: stateSuccess,
				Result: map[string]any{"ok": true}, CompletedAt: time.Now()})
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkItems measures one items iteration as the bench harness drives
// it (create, read by id, delete) on MongoDB from 32 goroutines, where
// creates and reads of different requests share round trips.
func BenchmarkItems(b *testing.B) {
	bk := benchStack(b, realStack(b))
	b.ReportAllocs()
	b.SetParallelism(32 / max(1, runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			it, err := bk.items.createItem(ctx, item{Name: "bench", Metadata: map[string]any{"category": "bench"}, CreatedAt: time.Now(), UpdatedAt: time.Now()})
			if err == nil {
				_, err = bk.items.getItem(ctx, "", it.ID)
			}
			if err == nil {
				err = bk.items.deleteItem(ctx, "", it.ID)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkEventStreams measures what open task event streams cost the
// API process that serves them: b.N streams (run it with -benchtime
// 1000x) of scheduled tasks, each a connection and a watch of the task's
// Redis channel, open at once against an errand process of its own on the
// real servers. It reports the process's resident memory per stream and
// its CPU per stream while the streams stay open and quiet for 30 s (two
// heartbeats), then while every task's status changes once.
func BenchmarkEventStreams(b *testing.B) {
	env := realStack(b)
	env["ROLE"] = "api"
	api := startChild(b, env)
	ids := make([]string, b.N)
	for i := range ids {
		var acc taskAccepted
		if code := apiCall(b, "POST", api.base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "watched"}, "countdown": 3600}`, nil, &acc).StatusCode; code != http.StatusAccepted {
			b.Fatalf("submit %d: %d", i, code)
		}
		ids[i] = acc.TaskID
	}
	runtime.GC()
	rssBefore, cpuBefore := procUsage(b, api.cmd.Process.Pid)
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 0, MaxIdleConnsPerHost: b.N}}
	var opened, ended sync.WaitGroup
	events := make(chan string, 4*b.N)
	b.ResetTimer()
	for _, id := range ids {
		opened.Add(1)
		ended.Add(1)
		go func() {
			defer ended.Done()
			resp, err := client.Get(api.base + "/api/tasks/" + id + "/events")
			if err != nil {
				opened.Done()
				b.Error(err)
				return
			}
			defer resp.Body.Close()
			opened.Done()
			buf := make([]byte, 4096)
			for {
				n, err := resp.Body.Read(buf)
				if n > 0 && strings.Contains(string(buf[:n]), "REVOKED") {
					events <- id
				}
				if err != nil {
					return
				}
			}
		}()
	}
	opened.Wait()
	time.Sleep(time.Second) // the first event of each stream written
	rssOpen, cpuOpen := procUsage(b, api.cmd.Process.Pid)
	time.Sleep(30 * time.Second)
	_, cpuIdle := procUsage(b, api.cmd.Process.Pid)
	// Every task's status changes once: a cancel makes it REVOKED, and
	// each stream sends that and ends.
	for _, id := range ids {
		if code := apiCall(b, "POST", api.base+"/api/tasks/"+id+"/cancel", "", nil, nil).StatusCode; code != http.StatusOK {
			b.Fatalf("cancel %s: %d", id, code)
		}
	}
	ended.Wait()
	b.StopTimer()
	_, cpuEnd := procUsage(b, api.cmd.Process.Pid)
	if len(events) != b.N {
		b.Errorf("%d streams saw their task REVOKED, want %d", len(events), b.N)
	}
	n := float64(b.N)
	b.ReportMetric(float64(rssOpen-rssBefore)/n, "rss-B/stream")
	b.ReportMetric((cpuOpen-cpuBefore).Seconds()*1e6/n, "open-cpu-µs/stream")
	b.ReportMetric((cpuIdle-cpuOpen).Seconds()*1e6/n/30, "idle-cpu-µs/stream/s")
	b.ReportMetric((cpuEnd-cpuIdle).Seconds()*1e6/n, "cancel+event-cpu-µs/stream")
}

// procUsage reads a process's resident memory (bytes) and its CPU time so
// far from /proc.
func procUsage(tb testing.TB, pid int) (rss int64, cpu time.Duration) {
	tb.Helper()
	rss = procStatusBytes(tb, pid, "VmRSS")
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		tb.Fatal(err)
	}
	// The fields after the command (which may hold spaces) start after ")".
	fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+2:]))
	utime, _ := strconv.ParseInt(fields[11], 10, 64)
	stime, _ := strconv.ParseInt(fields[12], 10, 64)
	const ticksPerSecond = 100 // USER_HZ on Linux
	return rss, time.Duration(utime+stime) * time.Second / ticksPerSecond
}

// procStatusBytes is a size field of /proc/PID/status (VmRSS, VmHWM: the
// peak resident memory) in bytes.
func procStatusBytes(tb testing.TB, pid int, field string) int64 {
	tb.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if kb, ok := strings.CutPrefix(line, field+":"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(kb), "kB")), 10, 64)
			return n * 1024
		}
	}
	tb.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// BenchmarkFileTransfer uploads (multipart) and downloads files of 32 MiB
// (the default FILE_MAX_BYTES) and 128 MiB, one at a time, through an
// errand process of its own, and reports each direction's throughput and
// how far the process's peak resident memory rose over the run: on
// MongoDB (GridFS) files stream through, so the rise does not grow with
// the file; embedded, they are held in memory.
func BenchmarkFileTransfer(b *testing.B) {
	for _, bench := range []struct {
		mode string
		size int64
	}{{"real", 32 << 20}, {"real", 128 << 20}, {"embedded", 32 << 20}} {
		size := bench.size
		b.Run(fmt.Sprintf("%s/%dMiB", bench.mode, size>>20), func(b *testing.B) {
			env := backendModes[bench.mode](b)
			env["FILE_MAX_BYTES"] = strconv.FormatInt(size, 10)
			api := startChild(b, env)
			runtime.GC()
			peakBefore := procStatusBytes(b, api.cmd.Process.Pid, "VmHWM")
			var up, down time.Duration
			b.ResetTimer()
			for i := range b.N {
				pr, pw := io.Pipe()
				mw := multipart.NewWriter(pw)
				go func() {
					part, err := mw.CreateFormFile("file", "big.bin")
					if err == nil {
						_, err = io.Copy(part, io.LimitReader(rand.NewChaCha8([32]byte{byte(i)}), size))
					}
					if err == nil {
						err = mw.Close()
					}
					pw.CloseWithError(err)
				}()
				start := time.Now()
				resp, err := http.Post(api.base+"/api/files", mw.FormDataContentType(), pr)
				if err != nil {
					b.Fatal(err)
				}
				var f fileJSON
				err = json.NewDecoder(resp.Body).Decode(&f)
				resp.Body.Close()
				if err != nil || resp.StatusCode != http.StatusCreated || f.Size != size {
					b.Fatalf("upload: %d %+v %v", resp.StatusCode, f, err)
				}
				up += time.Since(start)
				start = time.Now()
				resp, err = http.Get(api.base + f.URL)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != size {
					b.Fatalf("download: %d bytes, %v", n, err)
				}
				down += time.Since(start)
			}
			b.StopTimer()
			mib := float64(size) / (1 << 20) * float64(b.N)
			b.ReportMetric(mib/up.Seconds(), "upload-MiB/s")
			b.ReportMetric(mib/down.Seconds(), "download-MiB/s")
			b.ReportMetric(float64(procStatusBytes(b, api.cmd.Process.Pid, "VmHWM")-peakBefore)/(1<<20), "peak-RSS-rise-MiB")
		})
	}
}

// BenchmarkScheduledStartLag measures how late scheduled tasks start: b.N
// tasks (run it with -benchtime 1000x) due 3 to 8 s after their submit,
// while a steady load of tasks due at once keeps the workers busy,
// against an errand process of its own on the real servers. It reports
// the lag from each task's due time to its start: median, 99th
// percentile and worst.
func BenchmarkScheduledStartLag(b *testing.B) {
	env := realStack(b)
	env["HEAVY_TASK_DELAY"] = "2ms"
	errand := startChild(b, env)
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	for range 4 {
		load.Add(1)
		go func() {
			defer load.Done()
			for {
				select {
				case <-stopLoad:
					return
				case <-time.After(20 * time.Millisecond):
					apiCall(b, "POST", errand.base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "load", "iterations": 5}}`, nil, nil)
				}
			}
		}()
	}
	ids := make([]string, b.N)
	b.ResetTimer()
	for i := range ids {
		countdown := 3 + float64(i%500)/100 // 3 to 8 s
		var acc taskAccepted
		body := fmt.Sprintf(`{"type": "process_heavy_task", "args": {"data": "due", "iterations": 1}, "countdown": %g}`, countdown)
		if code := apiCall(b, "POST", errand.base+"/api/tasks", body, nil, &acc).StatusCode; code != http.StatusAccepted {
			b.Fatalf("submit %d: %d", i, code)
		}
		ids[i] = acc.TaskID
	}
	lags := make([]time.Duration, 0, b.N)
	for _, id := range ids {
		var task taskJSON
		waitFor(b, 60*time.Second, "task "+id+" to end", func() bool {
			apiCall(b, "GET", errand.base+"/api/tasks/"+id, "", nil, &task)
			return task.Status == stateSuccess
		})
		if task.StartedAt == nil || task.ScheduledFor == nil {
			b.Fatalf("task %+v has no start or due time", task)
		}
		lags = append(lags, task.StartedAt.Sub(*task.ScheduledFor))
	}
	b.StopTimer()
	close(stopLoad)
	load.Wait()
	slices.Sort(lags)
	at := func(q float64) float64 { return lags[int(q*float64(len(lags)-1))].Seconds() * 1000 }
	b.ReportMetric(at(0.5), "p50-lag-ms")
	b.ReportMetric(at(0.99), "p99-lag-ms")
	b.ReportMetric(lags[len(lags)-1].Seconds()*1000, "max-lag-ms")
	b.ReportMetric(lags[0].Seconds()*1000, "min-lag-ms")
}

// BenchmarkCSVImport imports a CSV of 10,000 rows (the guide's example)
// through import_csv_data, one import at a time, and reports rows stored
// per second from submit to SUCCESS, on the real servers and embedded.
// Each iteration uploads the file with a row of its own, so every import
// stores all its rows rather than finding them there.
func BenchmarkCSVImport(b *testing.B) {
	for _, mode := range []string{"real", "embedded"} {
		b.Run(mode, func(b *testing.B) {
			api := startChild(b, backendModes[mode](b))
			var took time.Duration
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				id := uploadFile(b, api.base, "bench.csv", "text/csv", testCSV(9_999, fmt.Sprintf("run-%d,the iteration's own row,x,1", i)), nil)
				b.StartTimer()
				start := time.Now()
				task := runJob(b, api.base, `{"type": "import_csv_data", "args": {"file_id": "`+id+`"}}`, nil, 5*time.Minute)
				took += time.Since(start)
				if task.Status != stateSuccess || task.Result["added"] != 10_000.0 {
					b.Fatalf("import: %s %v %q", task.Status, task.Result, task.Error)
				}
			}
			b.ReportMetric(float64(10_000*b.N)/took.Seconds(), "rows/s")
		})
	}
}

// BenchmarkWorkflowStep measures what a step of a chain costs over a
// plain task, one at a time on one worker pool: "plain" submits a
// process_heavy_task (one iteration, no delay) and waits for its end,
// b.N times; "chain" runs chains of the same task (100 steps each) until
// b.N steps have ended, each step started by the end of the one before.
// ns/op is the time from one task's end to the next one's.
func BenchmarkWorkflowStep(b *testing.B) {
	for name, env := range backendModes {
		b.Run(name, func(b *testing.B) {
			e := env(b)
			bk, m := benchStackWithMetrics(b, e)
			log := slog.New(slog.DiscardHandler)
			flows := bk.workflowEngine(time.Hour, log, disabledTracing())
			registry := tasks.NewRegistry(tasks.Config{})
			pool := newWorkerPool(bk.queue, registry, bk.statuses, bk.results, bk.revoked, bk.keyStores(), flows,
				workerConfig{size: 4, resultTTL: time.Hour, drainTimeout: 5 * time.Second}, log, m, disabledTracing())
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- pool.run(ctx) }()
			b.Cleanup(func() {
				stop()
				if err := <-done; err != nil {
					b.Error(err)
				}
			})
			succeeded := m.tasksSucceeded.WithLabelValues(tasks.HeavyTaskName)
			waitUntil := func(n float64) {
				for counterValue(succeeded) < n {
					time.Sleep(50 * time.Microsecond)
				}
			}
			spec := specOf(b, tasks.HeavyTaskName, tasks.HeavyArgs{Data: "bench", Iterations: 1})
			sub := quietSubmitter(bk)
			b.Run("plain", func(b *testing.B) {
				base := counterValue(succeeded)
				for i := range b.N {
					if _, err := sub.submit(context.Background(), spec, ""); err != nil {
						b.Fatal(err)
					}
					waitUntil(base + float64(i+1))
				}
			})
			b.Run("chain", func(b *testing.B) {
				base := counterValue(succeeded)
				for started := 0; started < b.N; {
					n := min(100, b.N-started)
					steps := make([]workflowStep, n)
					root := &workflowNode{Kind: nodeChain}
					for i := range steps {
						steps[i] = workflowStep{TaskID: newUUID(), Type: spec.Type, Args: spec.Args, Priority: spec.Priority, Path: fmt.Sprintf("chain[%d]", i)}
						root.Children = append(root.Children, &workflowNode{Kind: nodeTask, Step: i})
					}
					if _, err := flows.submit(context.Background(), workflow{ID: newUUID(), CreatedAt: time.Now(), Root: root, Steps: steps}); err != nil {
						b.Fatal(err)
					}
					started += n
					waitUntil(base + float64(started))
				}
			})
		})
	}
}
