package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"errand/tasks"
)

// handlerEpoch is the time the handler tests' clock starts at. It has
// sub-millisecond digits so the tests see the API truncate them.
var handlerEpoch = time.Date(2026, 1, 2, 3, 4, 5, 678_901_000, time.UTC)

// handlerMaxBody is the handler tests' MaxBodyBytes.
const handlerMaxBody = 64 << 10

var (
	taskIDFormat    = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	objectIDFormat  = regexp.MustCompile(`^[0-9a-f]{24}$`)
	requestIDFormat = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

// handlerClock is a settable clock for serverDeps.now.
type handlerClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *handlerClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *handlerClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// handlerFixture is errand's HTTP API on the embedded backends, with the
// backends at hand so a test can look behind the API.
type handlerFixture struct {
	server   http.Handler
	items    *memoryStore
	statuses *memoryStatusStore
	broker   *memoryBroker
	clock    *handlerClock
}

// newHandlerFixture builds the API as run builds it for the embedded mode;
// each adjust may change its dependencies first.
func newHandlerFixture(t testing.TB, adjust ...func(*serverDeps)) *handlerFixture {
	t.Helper()
	f := &handlerFixture{
		items: newMemoryStore(), statuses: newMemoryStatusStore(), broker: newMemoryBroker(),
		clock: &handlerClock{t: handlerEpoch},
	}
	d := serverDeps{
		log: slog.New(slog.DiscardHandler), items: f.items, statuses: f.statuses, results: f.items,
		publisher: f.broker, health: map[string]pinger{"rabbitmq": f.broker, "redis": f.statuses, "mongodb": f.items},
		backends: "embedded", maxBody: handlerMaxBody, healthTimeout: time.Second, now: f.clock.now, serveAPI: true,
		metrics: newMetrics("test"), tracing: disabledTracing(),
	}
	for _, a := range adjust {
		a(&d)
	}
	f.server = newServer(d)
	t.Cleanup(f.broker.close)
	return f
}

// newAPIRequest returns a request with body; a non-empty body is sent as
// application/json. Each entry of header is set on the request, and an
// empty value removes the header.
func newAPIRequest(method, target, body string, header map[string]string) *http.Request {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	return r
}

// serve sends one request through the API and returns its answer.
func (f *handlerFixture) serve(t testing.TB, method, target, body string, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	f.server.ServeHTTP(rec, newAPIRequest(method, target, body, header))
	return rec
}

// decodeAnswer checks an answer's status and content type and decodes its
// JSON into out, numbers as json.Number, failing on fields out lacks.
func decodeAnswer(t testing.TB, rec *httptest.ResponseRecorder, wantStatus int, out any) {
	t.Helper()
	if rec.Code != wantStatus {
		t.Fatalf("status: got %d, want %d (body %s)", rec.Code, wantStatus, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	dec := json.NewDecoder(strings.NewReader(rec.Body.String()))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("decode answer %s: %v", rec.Body, err)
	}
}

// checkErrorAnswer checks an error answer: its status, the JSON every
// error answer shares (error, detail, request_id matching the
// X-Request-ID header, and field exactly when wantField is set) and its
// error code.
func checkErrorAnswer(t testing.TB, rec *httptest.ResponseRecorder, wantStatus int, wantCode, wantField string) {
	t.Helper()
	var body map[string]any
	decodeAnswer(t, rec, wantStatus, &body)
	if got := body["error"]; got != wantCode {
		t.Errorf("error: got %v, want %q (body %v)", got, wantCode, body)
	}
	if detail, _ := body["detail"].(string); detail == "" {
		t.Errorf("detail: got %v, want a message (body %v)", body["detail"], body)
	}
	if id, _ := body["request_id"].(string); id == "" || id != rec.Header().Get("X-Request-ID") {
		t.Errorf("request_id: got %v, want the X-Request-ID header %q", body["request_id"], rec.Header().Get("X-Request-ID"))
	}
	field, hasField := body["field"]
	switch {
	case wantField == "" && hasField:
		t.Errorf("field: got %v, want none", field)
	case wantField != "" && field != wantField:
		t.Errorf("field: got %v, want %q (detail %v)", field, wantField, body["detail"])
	}
	for k := range body {
		switch k {
		case "error", "detail", "field", "request_id":
		default:
			t.Errorf("error answer has field %q, want only error, detail, field and request_id", k)
		}
	}
}

// createItem creates an item through the API and returns the answer.
func (f *handlerFixture) createItem(t testing.TB, body string) itemResponse {
	t.Helper()
	var it itemResponse
	decodeAnswer(t, f.serve(t, "POST", "/api/items", body, nil), http.StatusCreated, &it)
	return it
}

// getItem reads an item through the API.
func (f *handlerFixture) getItem(t testing.TB, id string) itemResponse {
	t.Helper()
	var it itemResponse
	decodeAnswer(t, f.serve(t, "GET", "/api/items/"+id, "", nil), http.StatusOK, &it)
	return it
}

// itemCount is the number of items in the memory store.
func (f *handlerFixture) itemCount() int {
	f.items.mu.RLock()
	defer f.items.mu.RUnlock()
	return len(f.items.items)
}

// statusCount is the number of entries in the memory status store.
func (f *handlerFixture) statusCount() int {
	f.statuses.mu.Lock()
	defer f.statuses.mu.Unlock()
	return len(f.statuses.entries)
}

// nextTaskMessage takes the next message off the memory broker, as a
// worker would, and acknowledges it.
func (f *handlerFixture) nextTaskMessage(t testing.TB) taskMessage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	// Unbuffered, so a message consume has taken but nobody received is
	// rejected back onto the queue when ctx ends.
	out := make(chan delivery)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.broker.consume(ctx, 1, out)
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case d := <-out:
		if err := d.ack(); err != nil {
			t.Fatalf("ack: %v", err)
		}
		m, err := decodeTaskMessage(d.body)
		if err != nil {
			t.Fatalf("%v (body %s)", err, d.body)
		}
		return m
	case <-ctx.Done():
		t.Fatal("no message on the broker within 10s")
		return taskMessage{}
	}
}

// nestedObject returns levels JSON objects, each the only value of the
// one around it, with leaf innermost: nestedObject(2, "1") is {"a":{"a":1}}.
func nestedObject(levels int, leaf string) string {
	return strings.Repeat(`{"a":`, levels) + leaf + strings.Repeat("}", levels)
}

// jsonObject decodes a JSON object the way decodeAnswer does.
func jsonObject(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
	return obj
}

func TestHandlersCreateItem(t *testing.T) {
	created := handlerEpoch.Format(isoMillis)
	text := func(s string) *string { return &s }
	tests := []struct {
		name string
		body string
		want itemResponse // without its id
	}{
		{
			name: "the guide's item",
			body: `{"name": "Test Item", "description": "My first item", "metadata": {"category": "test"}}`,
			want: itemResponse{Name: "Test Item", Description: text("My first item"), Metadata: map[string]any{"category": "test"}, CreatedAt: created, UpdatedAt: created},
		},
		{
			name: "name only: no description, empty metadata",
			body: `{"name": "x"}`,
			want: itemResponse{Name: "x", Metadata: map[string]any{}, CreatedAt: created, UpdatedAt: created},
		},
		{
			name: "null description and metadata",
			body: `{"name": "x", "description": null, "metadata": null}`,
			want: itemResponse{Name: "x", Metadata: map[string]any{}, CreatedAt: created, UpdatedAt: created},
		},
		{
			name: "200-character name counted in characters and a 2000-character description",
			body: `{"name": "` + strings.Repeat("é", 200) + `", "description": "` + strings.Repeat("d", 2000) + `"}`,
			want: itemResponse{Name: strings.Repeat("é", 200), Description: text(strings.Repeat("d", 2000)), Metadata: map[string]any{}, CreatedAt: created, UpdatedAt: created},
		},
		{
			name: "numbers kept exactly",
			body: `{"name": "n", "metadata": {"big": 12345678901234567, "neg": -9007199254740993, "max": 9223372036854775807, "ratio": 0.25, "list": [1, "a", {"deep": true}]}}`,
			want: itemResponse{Name: "n", Metadata: map[string]any{
				"big": json.Number("12345678901234567"), "neg": json.Number("-9007199254740993"),
				"max": json.Number("9223372036854775807"), "ratio": json.Number("0.25"),
				"list": []any{json.Number("1"), "a", map[string]any{"deep": true}},
			}, CreatedAt: created, UpdatedAt: created},
		},
		{
			name: "metadata ten levels deep, innermost empty",
			body: `{"name": "deep", "metadata": ` + nestedObject(9, `{}`) + `}`,
			want: itemResponse{Name: "deep", Metadata: jsonObject(t, nestedObject(9, `{}`)), CreatedAt: created, UpdatedAt: created},
		},
		{
			name: "metadata ten levels deep, innermost with a value",
			body: `{"name": "deep", "metadata": ` + nestedObject(10, `"leaf"`) + `}`,
			want: itemResponse{Name: "deep", Metadata: jsonObject(t, nestedObject(10, `"leaf"`)), CreatedAt: created, UpdatedAt: created},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/items", tc.body, nil)
			var got itemResponse
			decodeAnswer(t, rec, http.StatusCreated, &got)
			if !objectIDFormat.MatchString(got.ID) {
				t.Errorf("id: got %q, want a 24-digit hexadecimal ObjectId", got.ID)
			}
			if loc, want := rec.Header().Get("Location"), "/api/items/"+got.ID; loc != want {
				t.Errorf("Location: got %q, want %q", loc, want)
			}
			want := tc.want
			want.ID = got.ID
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("created item (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, f.getItem(t, got.ID)); diff != "" {
				t.Errorf("item read back (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlersCreateItemErrors(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   string
		wantField  string
	}{
		{name: "missing name", body: `{"description": "d"}`, wantStatus: 422, wantCode: "validation_error", wantField: "name"},
		{name: "null name", body: `{"name": null}`, wantStatus: 422, wantCode: "validation_error", wantField: "name"},
		{name: "empty name", body: `{"name": ""}`, wantStatus: 422, wantCode: "validation_error", wantField: "name"},
		{name: "201-character name", body: `{"name": "` + strings.Repeat("n", 201) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "name"},
		{name: "2001-character description", body: `{"name": "x", "description": "` + strings.Repeat("d", 2001) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "description"},
		{name: "metadata an array", body: `{"name": "x", "metadata": [1, 2]}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata"},
		{name: "metadata a string", body: `{"name": "x", "metadata": "category=test"}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata"},
		{name: "metadata a number", body: `{"name": "x", "metadata": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata"},
		{name: "metadata key starting with $", body: `{"name": "x", "metadata": {"$where": "1"}}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata"},
		{name: "metadata key with a dot", body: `{"name": "x", "metadata": {"a.b": 1}}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata"},
		{name: "metadata empty key", body: `{"name": "x", "metadata": {"": 1}}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata"},
		{name: "nested metadata key starting with $", body: `{"name": "x", "metadata": {"a": {"$set": 1}}}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata.a"},
		{name: "metadata key with a dot inside an array", body: `{"name": "x", "metadata": {"l": [{"a.b": 1}]}}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata.l[0]"},
		{name: "metadata eleven levels deep, innermost empty", body: `{"name": "x", "metadata": ` + nestedObject(10, `{}`) + `}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata" + strings.Repeat(".a", 10)},
		{name: "metadata eleven levels deep", body: `{"name": "x", "metadata": ` + nestedObject(11, `"leaf"`) + `}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata" + strings.Repeat(".a", 10)},
		{name: "metadata number out of range", body: `{"name": "x", "metadata": {"n": 1e400}}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata.n"},
		{name: "name a number", body: `{"name": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "name"},
		{name: "description a boolean", body: `{"name": "x", "description": true}`, wantStatus: 422, wantCode: "validation_error", wantField: "description"},
		{name: "unknown field", body: `{"name": "x", "colour": "red"}`, wantStatus: 422, wantCode: "validation_error", wantField: "colour"},
		{name: "body an array", body: `[{"name": "x"}]`, wantStatus: 422, wantCode: "validation_error", wantField: "body"},
		{name: "body a string", body: `"x"`, wantStatus: 422, wantCode: "validation_error", wantField: "body"},
		{name: "malformed JSON", body: `{"name": "x",}`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "truncated JSON", body: `{"name": "x"`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "empty body", body: "", wantStatus: 400, wantCode: "empty_body"},
		{name: "whitespace body", body: " \n ", wantStatus: 400, wantCode: "empty_body"},
		{name: "trailing garbage", body: `{"name": "x"} garbage`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "two objects", body: `{"name": "x"}{"name": "y"}`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "body over MaxBodyBytes", body: `{"name": "x", "description": "` + strings.Repeat("d", handlerMaxBody) + `"}`, wantStatus: 413, wantCode: "body_too_large"},
		{name: "whitespace after the object over MaxBodyBytes", body: `{"name": "x"}` + strings.Repeat(" ", handlerMaxBody), wantStatus: 413, wantCode: "body_too_large"},
		{name: "Content-Type text/xml", body: `{"name": "x"}`, header: map[string]string{"Content-Type": "text/xml"}, wantStatus: 415, wantCode: "unsupported_media_type"},
		{name: "Content-Type text/plain", body: `{"name": "x"}`, header: map[string]string{"Content-Type": "text/plain"}, wantStatus: 415, wantCode: "unsupported_media_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/items", tc.body, tc.header)
			checkErrorAnswer(t, rec, tc.wantStatus, tc.wantCode, tc.wantField)
			if n := f.itemCount(); n != 0 {
				t.Errorf("items stored: got %d, want 0", n)
			}
		})
	}
}

func TestHandlersCreateItemContentTypes(t *testing.T) {
	tests := []struct {
		name        string
		contentType string // "" sends none
	}{
		{name: "JSON", contentType: "application/json"},
		{name: "JSON with a charset", contentType: "application/json; charset=utf-8"},
		{name: "a +json type", contentType: "application/merge-patch+json"},
		{name: "curl -d's default form type", contentType: "application/x-www-form-urlencoded"},
		{name: "no Content-Type", contentType: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/items", `{"name": "x"}`, map[string]string{"Content-Type": tc.contentType})
			var got itemResponse
			decodeAnswer(t, rec, http.StatusCreated, &got)
			if got.Name != "x" {
				t.Errorf("name: got %q, want %q", got.Name, "x")
			}
		})
	}
}

// TestHandlersMetadataIntegerBeyondInt64 checks that an integer no int64
// holds is either kept exactly or refused, never silently rounded.
func TestHandlersMetadataIntegerBeyondInt64(t *testing.T) {
	for _, n := range []string{"99999999999999999999", "-9223372036854775809", "18446744073709551617"} {
		t.Run(n, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/items", `{"name": "x", "metadata": {"n": `+n+`}}`, nil)
			if rec.Code == http.StatusUnprocessableEntity {
				checkErrorAnswer(t, rec, http.StatusUnprocessableEntity, "validation_error", "metadata.n")
				return
			}
			var got itemResponse
			decodeAnswer(t, rec, http.StatusCreated, &got)
			if got.Metadata["n"] != json.Number(n) {
				t.Errorf("metadata.n: got %v, want %s exactly (or a 422)", got.Metadata["n"], n)
			}
		})
	}
}

func TestHandlersListItems(t *testing.T) {
	f := newHandlerFixture(t)
	if got := f.serve(t, "GET", "/api/items", "", nil).Body.String(); got != "[]\n" {
		t.Errorf("empty list: got %q, want []", got)
	}
	for i := range 5 {
		f.clock.set(handlerEpoch.Add(time.Duration(i) * time.Second))
		f.createItem(t, fmt.Sprintf(`{"name": "item-%d"}`, i))
	}
	tests := []struct {
		query string
		want  []string
	}{
		{query: "", want: []string{"item-4", "item-3", "item-2", "item-1", "item-0"}},
		{query: "?limit=2", want: []string{"item-4", "item-3"}},
		{query: "?skip=1&limit=2", want: []string{"item-3", "item-2"}},
		{query: "?skip=4", want: []string{"item-0"}},
		{query: "?skip=5", want: []string{}},
		{query: "?skip=1000", want: []string{}},
		{query: "?limit=1", want: []string{"item-4"}},
		{query: "?skip=0&limit=1000", want: []string{"item-4", "item-3", "item-2", "item-1", "item-0"}},
	}
	for _, tc := range tests {
		t.Run("GET /api/items"+tc.query, func(t *testing.T) {
			var list []itemResponse
			decodeAnswer(t, f.serve(t, "GET", "/api/items"+tc.query, "", nil), http.StatusOK, &list)
			got := []string{}
			for _, it := range list {
				got = append(got, it.Name)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("names (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlersListItemsErrors(t *testing.T) {
	tests := []struct {
		query     string
		wantField string
	}{
		{query: "?limit=0", wantField: "limit"},
		{query: "?limit=1001", wantField: "limit"},
		{query: "?limit=-5", wantField: "limit"},
		{query: "?limit=abc", wantField: "limit"},
		{query: "?limit=1.5", wantField: "limit"},
		{query: "?skip=-1", wantField: "skip"},
		{query: "?skip=abc", wantField: "skip"},
		{query: "?skip=99999999999999999999", wantField: "skip"},
	}
	for _, tc := range tests {
		t.Run("GET /api/items"+tc.query, func(t *testing.T) {
			f := newHandlerFixture(t)
			checkErrorAnswer(t, f.serve(t, "GET", "/api/items"+tc.query, "", nil), http.StatusUnprocessableEntity, "validation_error", tc.wantField)
		})
	}
}

func TestHandlersItemByIDErrors(t *testing.T) {
	const unknownID = "507f1f77bcf86cd799439011"
	tests := []struct {
		method, path, body string
		wantStatus         int
		wantCode           string
	}{
		{method: "GET", path: "/api/items/" + unknownID, wantStatus: 404, wantCode: "not_found"},
		{method: "PUT", path: "/api/items/" + unknownID, body: `{"name": "y"}`, wantStatus: 404, wantCode: "not_found"},
		{method: "DELETE", path: "/api/items/" + unknownID, wantStatus: 404, wantCode: "not_found"},
		{method: "GET", path: "/api/items/not-an-id", wantStatus: 400, wantCode: "invalid_id"},
		{method: "GET", path: "/api/items/" + unknownID + "0", wantStatus: 400, wantCode: "invalid_id"},
		{method: "GET", path: "/api/items/507F1F77BCF86CD79943901Z", wantStatus: 400, wantCode: "invalid_id"},
		{method: "PUT", path: "/api/items/not-an-id", body: `{"name": "y"}`, wantStatus: 400, wantCode: "invalid_id"},
		{method: "PUT", path: "/api/items/not-an-id", body: `{"name": `, wantStatus: 400, wantCode: "invalid_id"},
		{method: "DELETE", path: "/api/items/not-an-id", wantStatus: 400, wantCode: "invalid_id"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			f := newHandlerFixture(t)
			existing := f.createItem(t, `{"name": "x"}`)
			checkErrorAnswer(t, f.serve(t, tc.method, tc.path, tc.body, nil), tc.wantStatus, tc.wantCode, "")
			if diff := cmp.Diff(existing, f.getItem(t, existing.ID)); diff != "" {
				t.Errorf("other item (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlersDeleteItem(t *testing.T) {
	f := newHandlerFixture(t)
	doomed := f.createItem(t, `{"name": "doomed"}`)
	kept := f.createItem(t, `{"name": "kept"}`)

	var msg map[string]any
	decodeAnswer(t, f.serve(t, "DELETE", "/api/items/"+doomed.ID, "", nil), http.StatusOK, &msg)
	if diff := cmp.Diff(map[string]any{"message": "Item deleted successfully", "id": doomed.ID}, msg); diff != "" {
		t.Errorf("delete answer (-want +got):\n%s", diff)
	}
	checkErrorAnswer(t, f.serve(t, "GET", "/api/items/"+doomed.ID, "", nil), http.StatusNotFound, "not_found", "")
	checkErrorAnswer(t, f.serve(t, "DELETE", "/api/items/"+doomed.ID, "", nil), http.StatusNotFound, "not_found", "")
	if diff := cmp.Diff(kept, f.getItem(t, kept.ID)); diff != "" {
		t.Errorf("other item (-want +got):\n%s", diff)
	}
}

func TestHandlersUpdateItem(t *testing.T) {
	const original = `{"name": "Test Item", "description": "My first item", "metadata": {"category": "test", "n": 1}}`
	created, updated := handlerEpoch.Format(isoMillis), handlerEpoch.Add(time.Hour).Format(isoMillis)
	text := func(s string) *string { return &s }
	tests := []struct {
		name string
		body string
		want itemResponse // without its id
	}{
		{
			name: "name only",
			body: `{"name": "Renamed"}`,
			want: itemResponse{Name: "Renamed", Description: text("My first item"), Metadata: map[string]any{"category": "test", "n": json.Number("1")}},
		},
		{
			name: "description only",
			body: `{"description": "Changed"}`,
			want: itemResponse{Name: "Test Item", Description: text("Changed"), Metadata: map[string]any{"category": "test", "n": json.Number("1")}},
		},
		{
			name: "metadata replaced as a whole",
			body: `{"metadata": {"colour": "red", "big": 12345678901234567}}`,
			want: itemResponse{Name: "Test Item", Description: text("My first item"), Metadata: map[string]any{"colour": "red", "big": json.Number("12345678901234567")}},
		},
		{
			name: "every field",
			body: `{"name": "New", "description": "", "metadata": {}}`,
			want: itemResponse{Name: "New", Description: text(""), Metadata: map[string]any{}},
		},
		{
			name: "nulls keep the fields",
			body: `{"name": null, "description": null, "metadata": null}`,
			want: itemResponse{Name: "Test Item", Description: text("My first item"), Metadata: map[string]any{"category": "test", "n": json.Number("1")}},
		},
		{
			name: "empty object",
			body: `{}`,
			want: itemResponse{Name: "Test Item", Description: text("My first item"), Metadata: map[string]any{"category": "test", "n": json.Number("1")}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			it := f.createItem(t, original)
			f.clock.set(handlerEpoch.Add(time.Hour))

			var got itemResponse
			decodeAnswer(t, f.serve(t, "PUT", "/api/items/"+it.ID, tc.body, nil), http.StatusOK, &got)
			want := tc.want
			want.ID, want.CreatedAt, want.UpdatedAt = it.ID, created, updated
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("updated item (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(want, f.getItem(t, it.ID)); diff != "" {
				t.Errorf("item read back (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlersUpdateItemErrors(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   string
		wantField  string
	}{
		{name: "empty name", body: `{"name": ""}`, wantStatus: 422, wantCode: "validation_error", wantField: "name"},
		{name: "201-character name", body: `{"name": "` + strings.Repeat("n", 201) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "name"},
		{name: "valid name but 2001-character description", body: `{"name": "ok", "description": "` + strings.Repeat("d", 2001) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "description"},
		{name: "valid name but metadata an array", body: `{"name": "ok", "metadata": [1]}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata"},
		{name: "metadata key starting with $", body: `{"metadata": {"$inc": 1}}`, wantStatus: 422, wantCode: "validation_error", wantField: "metadata"},
		{name: "name a number", body: `{"name": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "name"},
		{name: "unknown field", body: `{"name": "ok", "id": "507f1f77bcf86cd799439011"}`, wantStatus: 422, wantCode: "validation_error", wantField: "id"},
		{name: "malformed JSON", body: `{"name": `, wantStatus: 400, wantCode: "malformed_json"},
		{name: "empty body", body: "", wantStatus: 400, wantCode: "empty_body"},
		{name: "body over MaxBodyBytes", body: `{"name": "` + strings.Repeat("n", handlerMaxBody) + `"}`, wantStatus: 413, wantCode: "body_too_large"},
		{name: "Content-Type text/xml", body: `{"name": "ok"}`, header: map[string]string{"Content-Type": "text/xml"}, wantStatus: 415, wantCode: "unsupported_media_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			it := f.createItem(t, `{"name": "Test Item", "description": "My first item", "metadata": {"category": "test"}}`)
			f.clock.set(handlerEpoch.Add(time.Hour))
			checkErrorAnswer(t, f.serve(t, "PUT", "/api/items/"+it.ID, tc.body, tc.header), tc.wantStatus, tc.wantCode, tc.wantField)
			if diff := cmp.Diff(it, f.getItem(t, it.ID)); diff != "" {
				t.Errorf("item after a failed PUT (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlersSubmitProcess(t *testing.T) {
	const message = "Task submitted successfully. Use /api/async/status/{task_id} to check progress."
	tests := []struct {
		name         string
		body         string
		header       map[string]string
		wantArgs     tasks.HeavyArgs
		wantPriority string
	}{
		{name: "defaults", body: `{"data": "heavy processing task"}`, wantArgs: tasks.HeavyArgs{Data: "heavy processing task", Iterations: 10}, wantPriority: "normal"},
		{name: "null iterations and priority take the defaults", body: `{"data": "d", "iterations": null, "priority": null}`, wantArgs: tasks.HeavyArgs{Data: "d", Iterations: 10}, wantPriority: "normal"},
		{name: "the guide's request", body: `{"data": "heavy processing task", "iterations": 100, "priority": "high"}`, wantArgs: tasks.HeavyArgs{Data: "heavy processing task", Iterations: 100}, wantPriority: "high"},
		{name: "one iteration, low priority", body: `{"data": "d", "iterations": 1, "priority": "low"}`, wantArgs: tasks.HeavyArgs{Data: "d", Iterations: 1}, wantPriority: "low"},
		{name: "1000 iterations", body: `{"data": "d", "iterations": 1000, "priority": "normal"}`, wantArgs: tasks.HeavyArgs{Data: "d", Iterations: 1000}, wantPriority: "normal"},
		{name: "10000 characters of data", body: `{"data": "` + strings.Repeat("é", 10000) + `"}`, wantArgs: tasks.HeavyArgs{Data: strings.Repeat("é", 10000), Iterations: 10}, wantPriority: "normal"},
		{name: "curl -d's form type", body: `{"data": "d"}`, header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, wantArgs: tasks.HeavyArgs{Data: "d", Iterations: 10}, wantPriority: "normal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", "/api/async/process", tc.body, tc.header)
			var acc taskAccepted
			decodeAnswer(t, rec, http.StatusAccepted, &acc)
			if !taskIDFormat.MatchString(acc.TaskID) {
				t.Errorf("task_id: got %q, want a version 4 UUID", acc.TaskID)
			}
			if want := (taskAccepted{TaskID: acc.TaskID, Status: "PENDING", Message: message}); acc != want {
				t.Errorf("answer: got %+v, want %+v", acc, want)
			}
			if loc, want := rec.Header().Get("Location"), "/api/async/status/"+acc.TaskID; loc != want {
				t.Errorf("Location: got %q, want %q", loc, want)
			}

			var st map[string]any
			decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+acc.TaskID, "", nil), http.StatusOK, &st)
			wantStatus := map[string]any{"task_id": acc.TaskID, "status": "PENDING", "task_type": tasks.HeavyTaskName, "updated_at": handlerEpoch.Format(time.RFC3339Nano)}
			if diff := cmp.Diff(wantStatus, st); diff != "" {
				t.Errorf("status right after submit (-want +got):\n%s", diff)
			}

			if ready, _ := f.broker.depth(); ready != 1 {
				t.Fatalf("messages queued: got %d, want 1", ready)
			}
			m := f.nextTaskMessage(t)
			var args tasks.HeavyArgs
			if err := json.Unmarshal(m.Args, &args); err != nil {
				t.Fatalf("decode args %s: %v", m.Args, err)
			}
			if m.ID != acc.TaskID || m.Type != tasks.HeavyTaskName || m.Priority != tc.wantPriority || !m.EnqueuedAt.Equal(handlerEpoch) {
				t.Errorf("message: got id %s type %s priority %s enqueued %v, want id %s type %s priority %s enqueued %v",
					m.ID, m.Type, m.Priority, m.EnqueuedAt, acc.TaskID, tasks.HeavyTaskName, tc.wantPriority, handlerEpoch)
			}
			if args != tc.wantArgs {
				t.Errorf("args: got %+v, want %+v", args, tc.wantArgs)
			}
		})
	}
}

func TestHandlersSubmitProcessErrors(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   string
		wantField  string
	}{
		{name: "data missing", body: `{"iterations": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "data null", body: `{"data": null}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "empty object", body: `{}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "data a number", body: `{"data": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "10001 characters of data", body: `{"data": "` + strings.Repeat("d", 10001) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "data"},
		{name: "iterations 0", body: `{"data": "d", "iterations": 0}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: "iterations 1001", body: `{"data": "d", "iterations": 1001}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: "iterations -1", body: `{"data": "d", "iterations": -1}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: "iterations 2.5", body: `{"data": "d", "iterations": 2.5}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: `iterations "5"`, body: `{"data": "d", "iterations": "5"}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: "iterations beyond int64", body: `{"data": "d", "iterations": 99999999999999999999}`, wantStatus: 422, wantCode: "validation_error", wantField: "iterations"},
		{name: `priority "urgent"`, body: `{"data": "d", "priority": "urgent"}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: `priority "HIGH"`, body: `{"data": "d", "priority": "HIGH"}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: "priority empty", body: `{"data": "d", "priority": ""}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: "priority a number", body: `{"data": "d", "priority": 9}`, wantStatus: 422, wantCode: "validation_error", wantField: "priority"},
		{name: "unknown field", body: `{"data": "d", "countdown": 5}`, wantStatus: 422, wantCode: "validation_error", wantField: "countdown"},
		{name: "malformed JSON", body: `{"data": "d"`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "trailing garbage", body: `{"data": "d"}]`, wantStatus: 400, wantCode: "malformed_json"},
		{name: "empty body", body: "", wantStatus: 400, wantCode: "empty_body"},
		{name: "body over MaxBodyBytes", body: `{"data": "` + strings.Repeat("d", handlerMaxBody) + `"}`, wantStatus: 413, wantCode: "body_too_large"},
		{name: "Content-Type text/xml", body: `{"data": "d"}`, header: map[string]string{"Content-Type": "text/xml"}, wantStatus: 415, wantCode: "unsupported_media_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			checkErrorAnswer(t, f.serve(t, "POST", "/api/async/process", tc.body, tc.header), tc.wantStatus, tc.wantCode, tc.wantField)
			if ready, _ := f.broker.depth(); ready != 0 {
				t.Errorf("messages queued: got %d, want 0", ready)
			}
			if n := f.statusCount(); n != 0 {
				t.Errorf("statuses recorded: got %d, want 0", n)
			}
		})
	}
}

// rejectingPublisher is a broker that refuses every message with err.
type rejectingPublisher struct{ err error }

func (p rejectingPublisher) publish(context.Context, taskMessage) error { return p.err }

// failingStatusStore is a memoryStatusStore whose writes or reads fail
// with err.
type failingStatusStore struct {
	*memoryStatusStore
	putErr, getErr error
}

func (s failingStatusStore) put(ctx context.Context, st taskStatus, ttl time.Duration) error {
	if s.putErr != nil {
		return s.putErr
	}
	return s.memoryStatusStore.put(ctx, st, ttl)
}

func (s failingStatusStore) get(ctx context.Context, taskID string) (taskStatus, error) {
	if s.getErr != nil {
		return taskStatus{}, s.getErr
	}
	return s.memoryStatusStore.get(ctx, taskID)
}

// failingResultStore is a memoryStore whose result reads fail with err.
type failingResultStore struct {
	*memoryStore
	err error
}

func (s failingResultStore) getResult(context.Context, string) (taskRecord, error) {
	return taskRecord{}, s.err
}

func TestHandlersPublishFailure(t *testing.T) {
	submits := []struct{ name, target, body string }{
		{name: "process", target: "/api/async/process", body: `{"data": "d"}`},
		{name: "welcome email", target: "/api/send-welcome-email?user_email=john@example.com&user_name=John"},
	}
	failures := []struct {
		name       string
		err        error
		wantStatus int
		wantCode   string
	}{
		{name: "broker unavailable", err: errBrokerUnavailable, wantStatus: 503, wantCode: "unavailable"},
		{name: "broker unavailable, wrapped", err: fmt.Errorf("publish: %w", errBrokerUnavailable), wantStatus: 503, wantCode: "unavailable"},
		{name: "no confirm in time", err: fmt.Errorf("publish: %w", context.DeadlineExceeded), wantStatus: 503, wantCode: "unavailable"},
		{name: "unexpected error", err: errors.New("channel exploded"), wantStatus: 500, wantCode: "internal"},
	}
	for _, s := range submits {
		for _, fail := range failures {
			t.Run(s.name+"/"+fail.name, func(t *testing.T) {
				f := newHandlerFixture(t, func(d *serverDeps) { d.publisher = rejectingPublisher{err: fail.err} })
				rec := f.serve(t, "POST", s.target, s.body, nil)
				checkErrorAnswer(t, rec, fail.wantStatus, fail.wantCode, "")
				if strings.Contains(rec.Body.String(), "exploded") {
					t.Errorf("answer %s shows the internal error, want a generic message", rec.Body)
				}
				if n := f.statusCount(); n != 0 {
					t.Errorf("statuses left behind: got %d, want 0", n)
				}
			})
		}
	}
}

func TestHandlersStatusStoreFailure(t *testing.T) {
	f := newHandlerFixture(t, func(d *serverDeps) {
		d.statuses = failingStatusStore{memoryStatusStore: newMemoryStatusStore(), putErr: errors.New("redis down")}
	})
	checkErrorAnswer(t, f.serve(t, "POST", "/api/async/process", `{"data": "d"}`, nil), http.StatusServiceUnavailable, "unavailable", "")
	if ready, _ := f.broker.depth(); ready != 0 {
		t.Errorf("messages queued without a status: got %d, want 0", ready)
	}
}

func TestHandlersWelcomeEmail(t *testing.T) {
	tests := []struct {
		name     string
		target   string
		body     string
		header   map[string]string
		wantArgs tasks.EmailArgs
	}{
		{
			name:     "the guide's query string with a JSON type and no body",
			target:   "/api/send-welcome-email?user_email=john@example.com&user_name=John",
			header:   map[string]string{"Content-Type": "application/json"},
			wantArgs: tasks.EmailArgs{UserEmail: "john@example.com", UserName: "John"},
		},
		{
			name:     "query string without a Content-Type",
			target:   "/api/send-welcome-email?user_email=john@example.com&user_name=John%20Smith",
			wantArgs: tasks.EmailArgs{UserEmail: "john@example.com", UserName: "John Smith"},
		},
		{
			name:     "JSON body",
			target:   "/api/send-welcome-email",
			body:     `{"user_email": "jane@example.org", "user_name": "Jane"}`,
			wantArgs: tasks.EmailArgs{UserEmail: "jane@example.org", UserName: "Jane"},
		},
		{
			name:     "query values win over the body",
			target:   "/api/send-welcome-email?user_email=john@example.com",
			body:     `{"user_email": "jane@example.org", "user_name": "Jane"}`,
			wantArgs: tasks.EmailArgs{UserEmail: "john@example.com", UserName: "Jane"},
		},
		{
			name:     "200-character name",
			target:   "/api/send-welcome-email",
			body:     `{"user_email": "jane@example.org", "user_name": "` + strings.Repeat("é", 200) + `"}`,
			wantArgs: tasks.EmailArgs{UserEmail: "jane@example.org", UserName: strings.Repeat("é", 200)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, "POST", tc.target, tc.body, tc.header)
			var acc taskAccepted
			decodeAnswer(t, rec, http.StatusAccepted, &acc)
			want := taskAccepted{TaskID: acc.TaskID, Status: "PENDING",
				Message: fmt.Sprintf("Email queued for %s. Check /api/async/status/%s", tc.wantArgs.UserEmail, acc.TaskID)}
			if !taskIDFormat.MatchString(acc.TaskID) || acc != want {
				t.Errorf("answer: got %+v, want %+v with a version 4 UUID", acc, want)
			}
			if loc, want := rec.Header().Get("Location"), "/api/async/status/"+acc.TaskID; loc != want {
				t.Errorf("Location: got %q, want %q", loc, want)
			}
			var st taskStatus
			decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+acc.TaskID, "", nil), http.StatusOK, &st)
			if st.Status != statePending || st.TaskType != tasks.WelcomeEmailName {
				t.Errorf("status right after submit: got %s %s, want PENDING %s", st.Status, st.TaskType, tasks.WelcomeEmailName)
			}
			m := f.nextTaskMessage(t)
			var args tasks.EmailArgs
			if err := json.Unmarshal(m.Args, &args); err != nil {
				t.Fatalf("decode args %s: %v", m.Args, err)
			}
			if m.ID != acc.TaskID || m.Type != tasks.WelcomeEmailName || m.Priority != "normal" {
				t.Errorf("message: got id %s type %s priority %s, want id %s type %s priority normal", m.ID, m.Type, m.Priority, acc.TaskID, tasks.WelcomeEmailName)
			}
			if args != tc.wantArgs {
				t.Errorf("args: got %+v, want %+v", args, tc.wantArgs)
			}
		})
	}
}

func TestHandlersWelcomeEmailErrors(t *testing.T) {
	const path = "/api/send-welcome-email"
	tests := []struct {
		name       string
		target     string
		body       string
		header     map[string]string
		wantStatus int
		wantCode   string
		wantField  string
	}{
		{name: "no email", target: path + "?user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "nothing at all", target: path, wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "empty JSON object", target: path, body: `{}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email without a domain", target: path + "?user_email=john&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email with a display name", target: path + "?user_email=John%20%3Cjohn@example.com%3E&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email with a dotless domain", target: path + "?user_email=a@b&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email with a header injected", target: path + "?user_email=john@example.com%0ABcc:x@example.com&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email over 254 characters", target: path + "?user_email=" + strings.Repeat("j", 250) + "@example.com&user_name=John", wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "email in JSON invalid", target: path, body: `{"user_email": "john", "user_name": "John"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "no name", target: path + "?user_email=john@example.com", wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "empty name", target: path + "?user_email=john@example.com&user_name=", wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "name with a newline in the query", target: path + "?user_email=john@example.com&user_name=Jo%0Ahn", wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "name not UTF-8 in the query", target: path + "?user_email=john@example.com&user_name=Jo%FFhn", wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "name with a newline in JSON", target: path, body: `{"user_email": "john@example.com", "user_name": "Jo\nhn"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "name with a carriage return", target: path, body: `{"user_email": "john@example.com", "user_name": "Jo\rhn"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "201-character name", target: path, body: `{"user_email": "john@example.com", "user_name": "` + strings.Repeat("n", 201) + `"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_name"},
		{name: "email a number", target: path, body: `{"user_email": 5, "user_name": "John"}`, wantStatus: 422, wantCode: "validation_error", wantField: "user_email"},
		{name: "unknown field", target: path, body: `{"user_email": "john@example.com", "user_name": "John", "cc": "x@example.com"}`, wantStatus: 422, wantCode: "validation_error", wantField: "cc"},
		{name: "malformed JSON", target: path + "?user_email=john@example.com&user_name=John", body: `{"user_email": `, wantStatus: 400, wantCode: "malformed_json"},
		{name: "Content-Type text/xml", target: path, body: `<user/>`, header: map[string]string{"Content-Type": "text/xml"}, wantStatus: 415, wantCode: "unsupported_media_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			checkErrorAnswer(t, f.serve(t, "POST", tc.target, tc.body, tc.header), tc.wantStatus, tc.wantCode, tc.wantField)
			if ready, _ := f.broker.depth(); ready != 0 {
				t.Errorf("messages queued: got %d, want 0", ready)
			}
			if n := f.statusCount(); n != 0 {
				t.Errorf("statuses recorded: got %d, want 0", n)
			}
		})
	}
}

func TestHandlersTaskStatus(t *testing.T) {
	const id = "6d1f1c2e-0000-4000-8000-000000000001"
	updated := handlerEpoch.Format(time.RFC3339Nano)
	completed := handlerEpoch.Truncate(time.Millisecond).Format(time.RFC3339Nano)
	tests := []struct {
		name    string
		live    *taskStatus // put in the status store
		durable *taskRecord // saved in the result store
		want    map[string]any
	}{
		{
			name: "PROGRESS of process_heavy_task",
			live: &taskStatus{TaskID: id, Status: stateProgress, TaskType: tasks.HeavyTaskName, UpdatedAt: handlerEpoch,
				Progress: &tasks.Progress{Current: 2, Total: 5, Percent: 40, Status: "Processing iteration 2/5"}},
			want: map[string]any{"task_id": id, "status": "PROGRESS", "task_type": tasks.HeavyTaskName, "updated_at": updated,
				"progress": map[string]any{"current": json.Number("2"), "total": json.Number("5"), "progress": json.Number("40"), "status": "Processing iteration 2/5"}},
		},
		{
			name: "PROGRESS of send_welcome_email",
			live: &taskStatus{TaskID: id, Status: stateProgress, TaskType: tasks.WelcomeEmailName, UpdatedAt: handlerEpoch,
				Progress: &tasks.Progress{Percent: 50, Status: "Connecting to email server..."}},
			want: map[string]any{"task_id": id, "status": "PROGRESS", "task_type": tasks.WelcomeEmailName, "updated_at": updated,
				"progress": map[string]any{"progress": json.Number("50"), "status": "Connecting to email server..."}},
		},
		{
			name: "SUCCESS",
			live: &taskStatus{TaskID: id, Status: stateSuccess, TaskType: tasks.WelcomeEmailName, UpdatedAt: handlerEpoch,
				Result: map[string]any{"task_id": id, "user_email": "john@example.com", "user_name": "John", "status": "sent"}},
			want: map[string]any{"task_id": id, "status": "SUCCESS", "task_type": tasks.WelcomeEmailName, "updated_at": updated,
				"result": map[string]any{"task_id": id, "user_email": "john@example.com", "user_name": "John", "status": "sent"}},
		},
		{
			name: "FAILURE",
			live: &taskStatus{TaskID: id, Status: stateFailure, TaskType: tasks.HeavyTaskName, UpdatedAt: handlerEpoch, Error: "invalid task arguments"},
			want: map[string]any{"task_id": id, "status": "FAILURE", "task_type": tasks.HeavyTaskName, "updated_at": updated, "error": "invalid task arguments"},
		},
		{
			name: "SUCCESS from the result store once the live status is gone",
			durable: &taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateSuccess, CompletedAt: handlerEpoch,
				Result: map[string]any{"task_id": id, "status": "completed", "total_processed": 5}},
			want: map[string]any{"task_id": id, "status": "SUCCESS", "task_type": tasks.HeavyTaskName, "updated_at": completed,
				"result": map[string]any{"task_id": id, "status": "completed", "total_processed": json.Number("5")}},
		},
		{
			name:    "FAILURE from the result store",
			durable: &taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateFailure, CompletedAt: handlerEpoch, Error: "boom"},
			want:    map[string]any{"task_id": id, "status": "FAILURE", "task_type": tasks.HeavyTaskName, "updated_at": completed, "error": "boom"},
		},
		{
			name: "the live status wins over the result store",
			live: &taskStatus{TaskID: id, Status: stateProgress, TaskType: tasks.HeavyTaskName, UpdatedAt: handlerEpoch,
				Progress: &tasks.Progress{Current: 1, Total: 2, Percent: 50, Status: "Processing iteration 1/2"}},
			durable: &taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateSuccess, CompletedAt: handlerEpoch, Result: map[string]any{"x": 1}},
			want: map[string]any{"task_id": id, "status": "PROGRESS", "task_type": tasks.HeavyTaskName, "updated_at": updated,
				"progress": map[string]any{"current": json.Number("1"), "total": json.Number("2"), "progress": json.Number("50"), "status": "Processing iteration 1/2"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			ctx := context.Background()
			if tc.live != nil {
				if err := f.statuses.put(ctx, *tc.live, 0); err != nil {
					t.Fatal(err)
				}
			}
			if tc.durable != nil {
				if _, err := f.items.saveResult(ctx, *tc.durable); err != nil {
					t.Fatal(err)
				}
			}
			var got map[string]any
			decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+id, "", nil), http.StatusOK, &got)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("status (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlersTaskStatusErrors(t *testing.T) {
	tests := []struct {
		name       string
		id         string
		adjust     func(*serverDeps)
		wantStatus int
		wantCode   string
	}{
		{name: "unknown id", id: "6d1f1c2e-0000-4000-8000-000000000000", wantStatus: 404, wantCode: "not_found"},
		{name: "200-character id", id: strings.Repeat("a", 200), wantStatus: 400, wantCode: "invalid_id"},
		{name: "id starting with a dash", id: "-abc", wantStatus: 400, wantCode: "invalid_id"},
		{name: "id with a space", id: "a%20b", wantStatus: 400, wantCode: "invalid_id"},
		{
			name: "status store down, result store has nothing",
			id:   "6d1f1c2e-0000-4000-8000-000000000000",
			adjust: func(d *serverDeps) {
				d.statuses = failingStatusStore{memoryStatusStore: newMemoryStatusStore(), getErr: fmt.Errorf("redis get: %w", context.DeadlineExceeded)}
			},
			wantStatus: 503, wantCode: "unavailable",
		},
		{
			name: "status store has nothing, result store down",
			id:   "6d1f1c2e-0000-4000-8000-000000000000",
			adjust: func(d *serverDeps) {
				d.results = failingResultStore{memoryStore: newMemoryStore(), err: fmt.Errorf("mongo find: %w", context.DeadlineExceeded)}
			},
			wantStatus: 503, wantCode: "unavailable",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t, func(d *serverDeps) {
				if tc.adjust != nil {
					tc.adjust(d)
				}
			})
			checkErrorAnswer(t, f.serve(t, "GET", "/api/async/status/"+tc.id, "", nil), tc.wantStatus, tc.wantCode, "")
		})
	}
}

func TestHandlersTaskStatusFallbackWhenStatusStoreDown(t *testing.T) {
	const id = "6d1f1c2e-0000-4000-8000-000000000002"
	f := newHandlerFixture(t, func(d *serverDeps) {
		d.statuses = failingStatusStore{memoryStatusStore: newMemoryStatusStore(), getErr: errors.New("redis down")}
	})
	if _, err := f.items.saveResult(context.Background(), taskRecord{TaskID: id, TaskType: tasks.HeavyTaskName, Status: stateSuccess, CompletedAt: handlerEpoch, Result: map[string]any{"status": "completed"}}); err != nil {
		t.Fatal(err)
	}
	var st taskStatus
	decodeAnswer(t, f.serve(t, "GET", "/api/async/status/"+id, "", nil), http.StatusOK, &st)
	if st.Status != stateSuccess || st.Result["status"] != "completed" {
		t.Errorf("status: got %+v, want SUCCESS with the stored result", st)
	}
}

// downPinger is a dependency that does not answer: with err at once, or,
// when err is nil, not before the health check's deadline.
type downPinger struct{ err error }

func (p downPinger) ping(ctx context.Context) error {
	if p.err != nil {
		return p.err
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestHandlersHealth(t *testing.T) {
	tests := []struct {
		name       string
		down       map[string]pinger
		wantStatus int
		want       healthResponse
	}{
		{
			name:       "all connected",
			wantStatus: 200,
			want:       healthResponse{Status: "healthy", Services: map[string]string{"rabbitmq": "connected", "redis": "connected", "mongodb": "connected"}},
		},
		{
			name:       "redis refuses",
			down:       map[string]pinger{"redis": downPinger{err: errors.New("connection refused")}},
			wantStatus: 503,
			want:       healthResponse{Status: "unhealthy", Services: map[string]string{"rabbitmq": "connected", "redis": "disconnected", "mongodb": "connected"}},
		},
		{
			name:       "mongodb does not answer in time",
			down:       map[string]pinger{"mongodb": downPinger{}},
			wantStatus: 503,
			want:       healthResponse{Status: "unhealthy", Services: map[string]string{"rabbitmq": "connected", "redis": "connected", "mongodb": "disconnected"}},
		},
		{
			name: "everything down",
			down: map[string]pinger{
				"rabbitmq": downPinger{err: errBrokerUnavailable}, "redis": downPinger{}, "mongodb": downPinger{err: errors.New("no server")},
			},
			wantStatus: 503,
			want:       healthResponse{Status: "unhealthy", Services: map[string]string{"rabbitmq": "disconnected", "redis": "disconnected", "mongodb": "disconnected"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t, func(d *serverDeps) {
				d.healthTimeout = 50 * time.Millisecond
				for name, p := range tc.down {
					d.health[name] = p
				}
			})
			var got healthResponse
			decodeAnswer(t, f.serve(t, "GET", "/health", "", nil), tc.wantStatus, &got)
			want := tc.want
			want.Timestamp, want.Backends = handlerEpoch.Format(isoMillis), "embedded"
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("health (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandlersMuxErrors(t *testing.T) {
	tests := []struct {
		method, path string
		wantStatus   int
		wantCode     string
		wantAllow    string
	}{
		{method: "GET", path: "/nope", wantStatus: 404, wantCode: "not_found"},
		{method: "GET", path: "/api/item", wantStatus: 404, wantCode: "not_found"},
		{method: "GET", path: "/api/async/status/", wantStatus: 404, wantCode: "not_found"},
		{method: "PATCH", path: "/api/items", wantStatus: 405, wantCode: "method_not_allowed", wantAllow: "GET, HEAD, POST"},
		{method: "PATCH", path: "/api/items/507f1f77bcf86cd799439011", wantStatus: 405, wantCode: "method_not_allowed", wantAllow: "DELETE, GET, HEAD, PUT"},
		{method: "GET", path: "/api/async/process", wantStatus: 405, wantCode: "method_not_allowed", wantAllow: "POST"},
		{method: "POST", path: "/health", wantStatus: 405, wantCode: "method_not_allowed", wantAllow: "GET, HEAD"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, tc.method, tc.path, "", nil)
			checkErrorAnswer(t, rec, tc.wantStatus, tc.wantCode, "")
			if got := rec.Header().Get("Allow"); got != tc.wantAllow {
				t.Errorf("Allow: got %q, want %q", got, tc.wantAllow)
			}
		})
	}
}

func TestHandlersRequestID(t *testing.T) {
	tests := []struct {
		name string
		sent string
		kept bool
	}{
		{name: "sane id kept", sent: "req-123_ABC.x:y", kept: true},
		{name: "128 characters kept", sent: strings.Repeat("r", 128), kept: true},
		{name: "129 characters replaced", sent: strings.Repeat("r", 129)},
		{name: "spaces replaced", sent: "req 123"},
		{name: "tab replaced", sent: "req\t123"},
		{name: "non-ASCII replaced", sent: "réq"},
		{name: "none sent", sent: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			// An error answer, so the body's request_id is checked too.
			rec := f.serve(t, "GET", "/api/items/not-an-id", "", map[string]string{"X-Request-ID": tc.sent})
			checkErrorAnswer(t, rec, http.StatusBadRequest, "invalid_id", "")
			got := rec.Header().Get("X-Request-ID")
			switch {
			case tc.kept && got != tc.sent:
				t.Errorf("X-Request-ID: got %q, want %q echoed", got, tc.sent)
			case !tc.kept && !requestIDFormat.MatchString(got):
				t.Errorf("X-Request-ID: got %q, want a fresh 16-digit hexadecimal id", got)
			}
		})
	}
	t.Run("fresh ids differ", func(t *testing.T) {
		f := newHandlerFixture(t)
		a := f.serve(t, "GET", "/health", "", nil).Header().Get("X-Request-ID")
		b := f.serve(t, "GET", "/health", "", nil).Header().Get("X-Request-ID")
		if a == b {
			t.Errorf("two requests got the same id %q, want different ones", a)
		}
	})
}

func TestHandlersWorkerOnly(t *testing.T) {
	f := newHandlerFixture(t, func(d *serverDeps) { d.serveAPI = false })
	var h healthResponse
	decodeAnswer(t, f.serve(t, "GET", "/health", "", nil), http.StatusOK, &h)
	if h.Status != "healthy" {
		t.Errorf("health status: got %q, want healthy", h.Status)
	}
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api/items", ""},
		{"POST", "/api/items", `{"name": "x"}`},
		{"POST", "/api/async/process", `{"data": "d"}`},
		{"GET", "/api/async/status/6d1f1c2e-0000-4000-8000-000000000000", ""},
		{"POST", "/api/send-welcome-email?user_email=john@example.com&user_name=John", ""},
	} {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			checkErrorAnswer(t, f.serve(t, r.method, r.path, r.body, nil), http.StatusNotFound, "not_found", "")
		})
	}
	if ready, _ := f.broker.depth(); ready != 0 {
		t.Errorf("messages queued by a worker-only server: got %d, want 0", ready)
	}
}

// TestHandlersOverHTTP sends the guide's curl requests through a real
// connection, where bodies, lengths and headers are what a client sends.
func TestHandlersOverHTTP(t *testing.T) {
	f := newHandlerFixture(t)
	srv := httptest.NewServer(f.server)
	t.Cleanup(srv.Close)

	send := func(t *testing.T, method, path, contentType, body string, header map[string]string) (*http.Response, []byte) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, srv.URL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read answer: %v", err)
		}
		return resp, raw
	}

	tests := []struct {
		name, method, path, contentType, body string
		header                                map[string]string
		wantStatus                            int
	}{
		{name: "create the guide's item", method: "POST", path: "/api/items", contentType: "application/json",
			body: `{"name": "Test Item", "description": "My first item", "metadata": {"category": "test"}}`, wantStatus: 201},
		{name: "curl -d without a type", method: "POST", path: "/api/async/process", contentType: "application/x-www-form-urlencoded",
			body: `{"data": "heavy processing task", "iterations": 100, "priority": "high"}`, wantStatus: 202},
		{name: "the guide's welcome e-mail", method: "POST", path: "/api/send-welcome-email?user_email=john@example.com&user_name=John",
			contentType: "application/json", wantStatus: 202},
		{name: "body over MaxBodyBytes", method: "POST", path: "/api/items", contentType: "application/json",
			body: `{"name": "` + strings.Repeat("n", 2*handlerMaxBody) + `"}`, wantStatus: 413},
		{name: "request id echoed", method: "GET", path: "/health", header: map[string]string{"X-Request-ID": "trace-42"}, wantStatus: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, raw := send(t, tc.method, tc.path, tc.contentType, tc.body, tc.header)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", resp.StatusCode, tc.wantStatus, raw)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type: got %q, want application/json", ct)
			}
			if !json.Valid(raw) {
				t.Errorf("body %s is not JSON", raw)
			}
			if want := tc.header["X-Request-ID"]; want != "" && resp.Header.Get("X-Request-ID") != want {
				t.Errorf("X-Request-ID: got %q, want %q", resp.Header.Get("X-Request-ID"), want)
			}
		})
	}
}
