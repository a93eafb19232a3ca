package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"errand/tasks"
)

// run is errand's whole life: it reads the configuration, connects the
// backends, serves HTTP and runs the worker pool until ctx ends, then
// shuts down in order.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) > 1 && args[1] == "healthcheck" {
		return runHealthcheck(ctx, args[2:], getenv, stdout)
	}
	cfg, err := parseConfig(args, getenv, stderr)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	// Log lines share system calls (see coalescingWriter): those of the
	// same logLinger go out in one. The last of them are written before
	// run returns.
	logOut := newCoalescingWriter(stdout, nil, logLinger)
	defer logOut.close(5 * time.Second)
	log, err := newLogger(getenv("LOG_LEVEL"), logOut)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	log.Info("errand starting", cfg.logAttrs()...)
	if getenv("GOGC") == "" {
		// errand's live heap is small (tens of MB) and its garbage is
		// short-lived request and task data, so letting the heap grow to
		// four times the live data rather than twice before collecting
		// makes the collector run about a third as often, for a few tens
		// of MB. GOGC, when set, decides instead.
		debug.SetGCPercent(300)
	}

	// stopRun ends the process's work on a fatal error as a signal would.
	ctx, stopRun := context.WithCancel(ctx)
	defer stopRun()

	tr, err := newTracing(ctx, getenv, cfg.Role, buildVersion())
	if err != nil {
		return fmt.Errorf("tracing: %w", err)
	}
	defer func() {
		// Last: flush the spans of everything that ran, shutdown included.
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tr.shutdown(flushCtx); err != nil {
			log.Warn("trace export incomplete at shutdown", "error", err)
		}
	}()
	m := newMetrics(buildVersion(), maxEnvelopeTasks, envelopeHoldLimit)
	b, err := openBackends(ctx, cfg, log, m, tr.tracer)
	if err != nil {
		return err
	}
	defer b.close()
	registry := tasks.NewRegistry(tasks.Config{
		HeavyTaskDelay: cfg.HeavyTaskDelay, EmailStepDelay: cfg.EmailStepDelay, Logger: log,
		Mailer:         newMailer(cfg, log),
		Files:          taskFiles{store: b.files, now: time.Now},
		Items:          taskItems{store: b.items, now: time.Now},
		Reports:        taskReports{source: b.reports},
		Fetcher:        tasks.NewFetcher(tasks.FetchConfig{AllowHosts: splitList(cfg.FetchAllowHosts), Timeout: cfg.FetchTimeout, MaxBytes: cfg.FileMaxBytes}),
		ImageMaxPixels: cfg.ImageMaxPixels,
	})
	if err := errors.Join(applyTaskRates(registry, cfg.TaskRateLimits), applyKeyLimits(registry, cfg.MaxRunningPerKey)); err != nil {
		return err
	}
	m.initSeries(registry.Names())
	m.registry.MustRegister(newDependencyCollector(b.health, cfg.HealthTimeout), newQueueCollector(b.queues, cfg.HealthTimeout))

	listener, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	api := newTaskAPI(cfg, b, registry, log, m, tr)
	flows := b.workflowEngine(cfg.ResultTTL, log.With("component", "workflows"), tr)
	shuttingDown := make(chan struct{})
	srv := &http.Server{
		Handler: newServer(serverDeps{
			log: log, metrics: m, tracing: tr, now: time.Now, serveAPI: cfg.runsAPI(), maxBody: cfg.MaxBodyBytes,
			items: b.items, registry: registry, specs: api.specs, submitter: api.submitter, reader: api.reader, canceller: api.canceller, watcher: b.watcher, shutdown: shuttingDown,
			schedules: scheduleRoutes{store: b.schedules, specs: api.specs, maxBody: cfg.MaxBodyBytes, now: time.Now},
			workflows: workflowRoutes{engine: flows, specs: api.specs, submitter: api.submitter, maxBody: cfg.MaxBodyBytes, now: time.Now},
			files:     fileRoutes{store: b.files, maxBytes: cfg.FileMaxBytes, now: time.Now}, queues: b.queues,
			dead:   deadLetterRoutes{queue: b.dead, specs: api.specs, submitter: api.submitter},
			health: b.health, backends: b.mode, healthTimeout: cfg.HealthTimeout,
			apiKeys: newAPIKeys(cfg.APIKeys), rateLimiter: newConfiguredRateLimiter(cfg), webhooks: cfg.webhooks(),
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	srv.RegisterOnShutdown(func() { close(shuttingDown) })

	if cfg.PprofAddr != "" {
		stopPprof, err := servePprof(cfg.PprofAddr, log)
		if err != nil {
			return err
		}
		defer stopPprof()
	}

	var wg sync.WaitGroup
	errs := make(chan error, 2)
	wg.Add(1)
	go func() {
		defer wg.Done()
		log.Info("listening", "addr", listener.Addr().String(), "role", cfg.Role)
		if err := srv.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("serve http: %w", err)
		}
	}()
	if cfg.runsAPI() {
		// Every API process fires the periodic schedules; the store lets
		// one claim each tick.
		sched := newScheduler(b.schedules, api.submitter, m, log.With("component", "scheduler"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sched.run(ctx)
		}()
	}
	if cfg.runsWorker() {
		pool := newWorkerPool(b.queue, registry, b.statuses, b.results, b.revoked, b.keyStores(), flows,
			workerConfig{size: cfg.Workers, resultTTL: cfg.ResultTTL, drainTimeout: cfg.DrainTimeout, webhooks: cfg.webhooks(),
				keySlotLease: cfg.KeySlotLease},
			log.With("component", "worker"), m, tr)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pool.run(ctx); err != nil {
				errs <- fmt.Errorf("worker pool: %w", err)
			}
		}()
	}

	select {
	case <-ctx.Done():
	case err := <-errs:
		log.Error("stopping after a fatal error", "error", err)
		errs <- err
		stopRun()
	}

	// Shutdown order: stop taking HTTP requests and stop consuming at the
	// same time (the pool watches ctx itself), let open requests and
	// in-flight tasks finish, and only then close the connections they
	// use (deferred above), so every ack and result write still has its
	// connection.
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("http shutdown incomplete", "error", err)
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	log.Info("errand stopped")
	return errors.Join(all...)
}

// taskAPI is the task side of the HTTP API.
type taskAPI struct {
	specs     taskSpecs
	submitter taskSubmitter
	reader    taskStatusReader
	canceller taskCanceller
}

// newTaskAPI builds the task side of the HTTP API on b and registry.
func newTaskAPI(cfg config, b *backends, registry *tasks.Registry, log *slog.Logger, m *metrics, tr *tracing) taskAPI {
	reader := taskStatusReader{statuses: b.statuses, results: b.results, resultTTL: cfg.ResultTTL, log: log, now: time.Now}
	return taskAPI{
		specs: taskSpecs{registry: registry, horizon: cfg.ScheduleHorizon, now: time.Now, webhooks: cfg.webhooks()},
		submitter: newTaskSubmitter(b.statuses, b.keys, b.publisher,
			submitterConfig{resultTTL: cfg.ResultTTL, publishTimeout: cfg.PublishTimeout}, log, m, tr, time.Now),
		reader: reader,
		canceller: taskCanceller{reader: reader, revocations: b.revoked, results: b.results, statuses: b.statuses,
			resultTTL: cfg.ResultTTL, metrics: m, log: log, now: time.Now},
	}
}

// newConfiguredRateLimiter is the limiter RATE_LIMIT asks for, or nil.
func newConfiguredRateLimiter(cfg config) *rateLimiter {
	if cfg.RateLimit == 0 {
		return nil
	}
	burst := cfg.RateBurst
	if burst == 0 {
		burst = max(1, int(2*cfg.RateLimit))
	}
	return newRateLimiter(cfg.RateLimit, burst)
}

// newMailer is the SMTP mailer when SMTP_ADDR is set, else one that logs.
func newMailer(cfg config, log *slog.Logger) tasks.Mailer {
	if cfg.SMTPAddr == "" {
		if cfg.runsWorker() {
			log.Info("no SMTP_ADDR: send_welcome_email logs its messages instead of sending them")
		}
		return tasks.LogMailer{Logger: log}
	}
	return tasks.SMTPMailer{Addr: cfg.SMTPAddr, From: cfg.SMTPFrom, Username: cfg.SMTPUsername, Password: cfg.SMTPPassword}
}

// logLinger is how late a log line may reach stdout: at thousands of
// tasks a second each line's own write would be a system call per line
// (two per task in the worker, one per request in the API), and a line
// that waits this long shares its write with the others of its moment.
// A process killed outright loses at most this much of its log.
const logLinger = 10 * time.Millisecond

func newLogger(level string, w io.Writer) (*slog.Logger, error) {
	var l slog.Level
	if level != "" {
		if err := l.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
			return nil, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", level)
		}
	}
	return slog.New(traceLogHandler{slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l})}), nil
}

// servePprof serves Go's profiling endpoints on their own listener, never
// on ADDR: profiles reveal internals and cost CPU, so they are opt-in and
// belong on an address only operators reach.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for pprof on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		log.Info("serving pprof", "addr", listener.Addr().String())
		if err := srv.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("pprof server stopped", "error", err)
		}
	}()
	return func() { srv.Close() }, nil
}
