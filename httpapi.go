package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"time"
)

// apiError is an error with the HTTP answer it deserves. Handlers return
// it for problems with the request; every other error is mapped in
// errorStatus.
type apiError struct {
	status  int
	code    string
	message string
	field   string
}

func (e *apiError) Error() string { return e.message }

// invalidField reports a request value that breaks a rule (422).
func invalidField(field, format string, args ...any) error {
	return &apiError{status: http.StatusUnprocessableEntity, code: "validation_error", field: field,
		message: field + ": " + fmt.Sprintf(format, args...)}
}

// badRequest reports a request that cannot be read at all (400).
func badRequest(code, format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

// errorBody is the JSON of every error answer. "detail" is where FastAPI,
// and so the guide's clients, look for the message.
type errorBody struct {
	Error     string `json:"error"`
	Detail    string `json:"detail"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"request_id"`
}

// errorStatus maps an error to its answer. It is the only place that does:
// internal errors become a generic 500 whose details go to the log only.
func errorStatus(err error) (int, errorBody) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return ae.status, errorBody{Error: ae.code, Detail: ae.message, Field: ae.field}
	case errors.Is(err, errInvalidID):
		return http.StatusBadRequest, errorBody{Error: "invalid_id", Detail: "invalid id: want a 24-character hexadecimal ObjectId"}
	case errors.Is(err, errNotFound), errors.Is(err, errStatusNotFound):
		return http.StatusNotFound, errorBody{Error: "not_found", Detail: "not found"}
	case errors.Is(err, errBrokerUnavailable):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Detail: "the task queue is unavailable; nothing was queued, try again"}
	case errors.Is(err, errStatusUnavailable):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Detail: "the task status store is unavailable; nothing was queued, try again"}
	case errors.Is(err, errStoreUnavailable):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Detail: "a data store is unavailable; try again"}
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Detail: "a dependency did not answer in time; try again"}
	default:
		return http.StatusInternalServerError, errorBody{Error: "internal", Detail: "internal server error"}
	}
}

// errStoreUnavailable means a store failed to answer a read.
var errStoreUnavailable = errors.New("store unavailable")

// errStatusUnavailable means the status store could not record a new task,
// so the task was not queued.
var errStatusUnavailable = errors.New("status store unavailable")

// handlerFunc is the one form of every handler: it writes a success
// answer itself or returns an error for handle to answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// handle adapts a handlerFunc, answering its error as JSON and logging it
// with the request id.
func handle(log *slog.Logger, h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		status, body := errorStatus(err)
		body.RequestID = requestID(r.Context())
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		log.Log(r.Context(), level, "request failed", "request_id", body.RequestID, "method", r.Method,
			"route", r.Pattern, "status", status, "error", err.Error())
		writeJSON(w, status, body)
	})
}

// writeJSON writes v as the JSON answer with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// An encoding error here means the client went away; there is no one
	// left to tell.
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads the request body into dst: one JSON value of at most
// maxBytes, unknown fields rejected, numbers kept exact. Its errors name
// the problem and the field.
func decodeJSON(w http.ResponseWriter, r *http.Request, maxBytes int64, dst any) error {
	if err := checkJSONContentType(r); err != nil {
		return err
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBytes))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	if err := dec.Decode(dst); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return decodeError(err)
		}
		return badRequest("malformed_json", "request body must hold a single JSON value")
	}
	return nil
}

// checkJSONContentType accepts JSON, and also no type or curl's default
// form type: the guide's own examples post JSON with `curl -d` and no
// header.
func checkJSONContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "application/x-www-form-urlencoded") {
		return nil
	}
	return &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
		message: fmt.Sprintf("content type %q not supported: send application/json", ct)}
}

func decodeError(err error) error {
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		maxErr    *http.MaxBytesError
	)
	switch {
	case errors.Is(err, io.EOF):
		return badRequest("empty_body", "request body is empty: send a JSON object")
	case errors.As(err, &maxErr):
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "body_too_large",
			message: fmt.Sprintf("request body is larger than %d bytes", maxErr.Limit)}
	case errors.As(err, &syntaxErr):
		return badRequest("malformed_json", "malformed JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed_json", "malformed JSON: the body ends early")
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return invalidField("body", "must be a JSON object, not %s", typeErr.Value)
		}
		return invalidField(field, "must be %s, not %s", jsonTypeName(typeErr.Type.String()), typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return invalidField(field, "unknown field")
	default:
		return badRequest("malformed_json", "malformed JSON: %v", err)
	}
}

// jsonTypeName names a Go type as the JSON a client should send.
func jsonTypeName(goType string) string {
	switch {
	case strings.HasPrefix(goType, "*"):
		return jsonTypeName(goType[1:])
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"), goType == "json.Number":
		return "a number"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "map["):
		return "an object"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	default:
		return goType
	}
}

// requestInfo is what errand keeps about a request in its context: its id,
// and what a handler adds to its access-log line (a submit's task_id, say),
// so one line tells the request and its outcome. Only the request's own
// goroutine touches it.
type requestInfo struct {
	id       string
	logAttrs []any
}

type requestInfoKey struct{}

// addAccessLogAttrs puts key-value pairs on the access-log line of the
// request ctx belongs to; outside a request it does nothing.
func addAccessLogAttrs(ctx context.Context, args ...any) {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		info.logAttrs = append(info.logAttrs, args...)
	}
}

// requestID is the id of the request ctx belongs to, or "".
func requestID(ctx context.Context) string {
	if info, ok := ctx.Value(requestInfoKey{}).(*requestInfo); ok {
		return info.id
	}
	return ""
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
					writeJSON(rec, http.StatusInternalServerError, errorBody{Error: "internal", Detail: "internal server error", RequestID: id})
				}
			}
			log.InfoContext(r.Context(), "request", append([]any{"request_id", id, "method", r.Method, "route", r.Pattern, "path", r.URL.Path,
				"status", rec.status, "duration_ms", float64(time.Since(start).Microseconds()) / 1000, "remote", r.RemoteAddr}, info.logAttrs...)...)
		}()
		next.ServeHTTP(rec, r)
	})
}
