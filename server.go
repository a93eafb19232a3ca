package main

import (
	"errand/tasks"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
)

// serverDeps is what the HTTP API needs from the rest of errand.
type serverDeps struct {
	log      *slog.Logger
	metrics  *metrics
	tracing  *tracing
	now      func() time.Time
	serveAPI bool // false in a worker-only process: /health and /metrics only
	maxBody  int64

	items     itemStore
	registry  *tasks.Registry
	specs     taskSpecs
	submitter taskSubmitter
	reader    taskStatusReader
	canceller taskCanceller
	watcher   statusWatcher
	// shutdown is closed when the server starts to shut down; long
	// requests (event streams) end then.
	shutdown  <-chan struct{}
	schedules scheduleRoutes
	workflows workflowRoutes
	files     fileRoutes
	queues    queueDepthReader // for the console's overview
	dead      deadLetterRoutes

	health        map[string]pinger
	backends      string // "embedded" or "external", shown by /health
	healthTimeout time.Duration

	apiKeys     *apiKeys     // nil or empty: /api is open
	rateLimiter *rateLimiter // nil: no rate limit
	webhooks    webhookConfig
}

// newServer builds errand's HTTP handler from the route table.
func newServer(d serverDeps) http.Handler {
	mux := http.NewServeMux()
	routes := routeTable(d)
	if d.serveAPI {
		c := newConsole(newConsoleAPI(routes), consoleSessions{keys: d.apiKeys, now: d.now}, d.queues, d.rateLimiter, d.log, d.now)
		// Browsers say where a request comes from (Sec-Fetch-Site,
		// Origin): a console POST from another site is refused before
		// its CSRF token is even read.
		crossOrigin := http.NewCrossOriginProtection()
		for pattern, h := range c.routes() {
			mux.Handle(pattern, crossOrigin.Handler(h))
		}
	}
	for _, rt := range routes {
		if rt.apiOnly && !d.serveAPI {
			continue
		}
		h := rt.handler
		if !rt.open {
			// API routes check the key first, so a client without one
			// cannot spend anyone's rate budget, then the rate.
			h = requireAPIKey(d.apiKeys, limitRate(d.rateLimiter, h))
		}
		mux.Handle(rt.pattern, h)
	}
	inner := withRequestLog(d.log, d.metrics.instrumentHTTP(jsonMuxErrors(mux)))
	if !d.tracing.recording {
		// Nothing to record, but a trace started upstream (a traced
		// client, nginx) still passes through to the task message.
		return withTraceContext(d.tracing.propagator, inner)
	}
	// The server span is outermost, so the access log and every handler
	// log line carry its trace id.
	return otelhttp.NewHandler(inner, "http.server",
		otelhttp.WithTracerProvider(d.tracing.provider), otelhttp.WithPropagators(d.tracing.propagator))
}

// withTraceContext puts the request's incoming trace context, if any, in
// its context: what otelhttp does when there are no spans to make.
func withTraceContext(propagator propagation.TextMapPropagator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("traceparent") != "" {
			r = r.WithContext(propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header)))
		}
		next.ServeHTTP(w, r)
	})
}

// jsonMuxErrors turns the mux's own plain-text 404 (no such route) and 405
// (wrong method, with its Allow header) into errand's JSON error shape.
func jsonMuxErrors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&muxErrorWriter{ResponseWriter: w, r: r}, r)
	})
}

type muxErrorWriter struct {
	http.ResponseWriter
	r          *http.Request
	suppressed bool
}

// WriteHeader recognises the mux's errors by their plain-text content
// type: errand's own handlers always answer JSON.
func (m *muxErrorWriter) WriteHeader(code int) {
	plain := m.Header().Get("Content-Type") == "text/plain; charset=utf-8"
	var err error
	switch {
	case plain && code == http.StatusNotFound:
		err = &apiError{status: code, code: "not_found", message: fmt.Sprintf("no route %s %s", m.r.Method, m.r.URL.Path)}
	case plain && code == http.StatusMethodNotAllowed:
		err = &apiError{status: code, code: "method_not_allowed",
			message: fmt.Sprintf("%s is not allowed here; allowed: %s", m.r.Method, m.Header().Get("Allow"))}
	default:
		m.ResponseWriter.WriteHeader(code)
		return
	}
	m.suppressed = true
	m.Header().Del("X-Content-Type-Options")
	writeError(m.ResponseWriter, m.r, err)
}

func (m *muxErrorWriter) Write(b []byte) (int, error) {
	if m.suppressed {
		return len(b), nil
	}
	return m.ResponseWriter.Write(b)
}

func (m *muxErrorWriter) Unwrap() http.ResponseWriter { return m.ResponseWriter }
