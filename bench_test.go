package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"runtime"
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
			pool := newWorkerPool(bk.queue, tasks.NewRegistry(tasks.Config{}), bk.statuses, bk.results, bk.revoked,
				workerConfig{size: cfg.Workers, resultTTL: time.Hour, drainTimeout: 5 * time.Second},
				slog.New(slog.DiscardHandler), m, disabledTracing())
			pool.jitter = func() float64 { return 0 }
			succeeded := m.tasksSucceeded.WithLabelValues(tasks.HeavyTaskName)
			ctx, stop := context.WithCancel(context.Background())
			done := make(chan error, 1)
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
	log, m := slog.New(slog.DiscardHandler), testMetrics()
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
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := newTaskID()
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
	id := newTaskID()
	if err := bk.statuses.put(context.Background(), taskStatus{TaskID: id, Status: stateSuccess}, time.Hour); err != nil {
		b.Fatal(err)
	}
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
	b.SetParallelism(32)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, err := bk.results.saveResult(context.Background(), taskRecord{TaskID: newTaskID(), TaskType: "bench", Status: stateSuccess,
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
