package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// tracing is errand's tracer and the propagator that carries trace
// context across HTTP and the broker.
type tracing struct {
	// recording is false when tracing is off: spans are no-ops then.
	recording  bool
	provider   trace.TracerProvider
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	shutdown   func(context.Context) error
}

// otelConfigured reports whether any OTEL_* variable asks for tracing.
// With none set, tracing stays off and quiet: the standard default (OTLP
// to localhost) would log export errors on every machine without a
// collector.
func otelConfigured(getenv func(string) string) bool {
	for _, name := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_SERVICE_NAME"} {
		if getenv(name) != "" {
			return true
		}
	}
	return false
}

// newTracing sets up tracing from the standard OTEL_* variables
// (OTEL_TRACES_EXPORTER=otlp|console|none, OTEL_EXPORTER_OTLP_ENDPOINT,
// OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES). The exporter itself reads
// them from the process environment, as every OpenTelemetry SDK does.
func newTracing(ctx context.Context, getenv func(string) string, role, version string) (*tracing, error) {
	off := disabledTracing()
	if !otelConfigured(getenv) {
		return off, nil
	}
	exporter, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("create span exporter: %w", err)
	}
	if autoexport.IsNoneSpanExporter(exporter) {
		return off, nil
	}
	host, _ := os.Hostname()
	serviceName := getenv("OTEL_SERVICE_NAME")
	if serviceName == "" {
		serviceName = "errand-" + role
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(serviceName),
		semconv.ServiceVersion(version),
		semconv.ServiceInstanceID(fmt.Sprintf("%s-%d", host, os.Getpid())),
		attribute.String("errand.role", role),
	))
	if err != nil {
		return nil, fmt.Errorf("build trace resource: %w", err)
	}
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the defaults.
	if fromEnv, err := resource.New(ctx, resource.WithFromEnv()); err == nil {
		if merged, err := resource.Merge(res, fromEnv); err == nil {
			res = merged
		}
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exporter), sdktrace.WithResource(res))
	return &tracing{recording: true, provider: tp, tracer: tp.Tracer("errand"), propagator: off.propagator, shutdown: tp.Shutdown}, nil
}

// disabledTracing records nothing but still propagates trace context, so
// a trace started upstream (a traced client, nginx) passes through.
func disabledTracing() *tracing {
	provider := noop.NewTracerProvider()
	return &tracing{
		provider:   provider,
		tracer:     provider.Tracer("errand"),
		propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		shutdown:   func(context.Context) error { return nil },
	}
}

// traceLogHandler adds trace_id and span_id to every log record made with
// a context that carries a span, so logs and traces join up.
type traceLogHandler struct{ slog.Handler }

func (h traceLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceLogHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return traceLogHandler{h.Handler.WithAttrs(attrs)}
}

func (h traceLogHandler) WithGroup(name string) slog.Handler {
	return traceLogHandler{h.Handler.WithGroup(name)}
}

// traceID is the trace id of ctx's span, or "" when it has none.
func traceID(ctx context.Context) string {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return sc.TraceID().String()
	}
	return ""
}
