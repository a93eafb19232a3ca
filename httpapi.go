package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
)

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
		status := writeError(w, r, err)
		level := slog.LevelInfo
		if status >= 500 {
			level = slog.LevelError
		}
		log.Log(r.Context(), level, "request failed", "request_id", requestID(r.Context()), "method", r.Method,
			"route", r.Pattern, "status", status, "error", err.Error())
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

// pageQuery reads a listing's skip and limit query parameters.
func pageQuery(r *http.Request) (skip, limit int, err error) {
	skip, err = queryInt(r, "skip", 0, 0, math.MaxInt32)
	if err != nil {
		return 0, 0, err
	}
	limit, err = queryInt(r, "limit", defaultPageSize, 1, maxPageSize)
	return skip, limit, err
}

// queryInt reads an optional integer query parameter within [lo, hi].
func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < lo || n > hi {
		return 0, invalidField(name, "must be an integer from %d to %d", lo, hi)
	}
	return n, nil
}

// Page bounds of the listing routes (items, finished tasks).
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// isoMillis is the guide's timestamp format.
const isoMillis = "2006-01-02T15:04:05.000Z"
