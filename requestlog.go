package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// withRequestLog gives each request an id (X-Request-ID, kept from the
// client when sane), recovers a panicking handler into a JSON 500, and
// writes one access-log line per request.
func withRequestLog(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-ID")
		if !validRequestID(id) {
			id = newRandomID(8)
		}
		w.Header().Set("X-Request-ID", id)
		info := &requestInfo{id: id}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		rec := &statusRecorder{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.ErrorContext(r.Context(), "handler panicked", "request_id", id, "panic", fmt.Sprint(p))
				if rec.status == 0 {
					writeError(rec, r, fmt.Errorf("handler panicked: %v", p))
				}
			}
			if !log.Enabled(r.Context(), slog.LevelInfo) {
				return
			}
			// Attributes, not key-value pairs: each value boxed in an any
			// would cost an allocation on every request.
			attrs := make([]slog.Attr, 0, 7+len(info.logAttrs))
			attrs = append(attrs, slog.String("request_id", id), slog.String("method", r.Method), slog.String("route", r.Pattern),
				slog.String("path", r.URL.Path), slog.Int("status", rec.status),
				slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000), slog.String("remote", r.RemoteAddr))
			log.LogAttrs(r.Context(), slog.LevelInfo, "request", append(attrs, info.logAttrs...)...)
		}()
		next.ServeHTTP(rec, r)
	})
}

// requestInfo is what errand keeps about a request in its context: its id,
// and what a handler adds to its access-log line (a submit's task_id, say),
// so one line tells the request and its outcome. Only the request's own
// goroutine touches it.
type requestInfo struct {
	id       string
	logAttrs []slog.Attr
}

type requestInfoKey struct{}

// requestID is the id of the request ctx belongs to, or "".
func requestID(ctx context.Context) string {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return info.id
	}
	return ""
}

// addAccessLogAttrs puts attributes on the access-log line of the
// request ctx belongs to; outside a request it does nothing. Only the
// request's own goroutine may call it.
func addAccessLogAttrs(ctx context.Context, attrs ...slog.Attr) {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		info.logAttrs = append(info.logAttrs, attrs...)
	}
}

// addAccessLogTask names on the access-log line the task a request
// submitted, retried or cancelled.
func addAccessLogTask(ctx context.Context, taskID, taskType string) {
	addAccessLogAttrs(ctx, slog.String("task_id", taskID), slog.String("task_type", taskType))
}

// validRequestID accepts an incoming X-Request-ID only if it is short and
// printable, so a client cannot inject into logs.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range id {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

func newRandomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b)
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
