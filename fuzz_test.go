package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"errand/tasks"
)

// The fuzz tests feed arbitrary bytes to every request decoder and to the
// task message decoder. Each request goes through the real mux on the
// embedded backends. A request fuzzer builds its fixture once (building
// the server costs ten times as much as a request) and empties the
// backends before each input, so every input meets the same empty
// service: an invariant such as "nothing stored" or "one message queued"
// reads the backends directly, and an input the fuzzer reports replays
// the same way on its own.

// fuzzContentTypes are the Content-Type headers a request fuzzer picks
// from with a fuzzed byte; "" sends none. They cover every branch of
// checkJSONContentType: accepted, refused and unparsable.
var fuzzContentTypes = []string{
	"",
	"application/json",
	"application/json; charset=utf-8",
	"application/x-www-form-urlencoded",
	"application/merge-patch+json",
	"APPLICATION/JSON",
	"text/plain",
	"multipart/form-data; boundary=x",
	"application/json; charset",
}

// fuzzContentType is the Content-Type a fuzzed byte picks.
func fuzzContentType(pick byte) string {
	return fuzzContentTypes[int(pick)%len(fuzzContentTypes)]
}

// fuzzJSONBodies are the tricky bodies every body fuzzer starts from, on
// top of its own valid examples.
var fuzzJSONBodies = []string{
	``,
	` `,
	`null`,
	`[]`,
	`[{"name":"x"}]`,
	`"name"`,
	`42`,
	`true`,
	`{}`,
	`{"name":"a"} {"name":"b"}`,
	`{"name":"a"}]`,
	`{"name":"a"`,
	`{"name":"a",}`,
	`{"name":"a","name":null}`,
	`{"NAME":"a"}`,
	`{"name":"\u0000"}`,
	"{\"name\":\"a\x00b\"}",
	"{\"name\":\"\xff\xfe\"}",
	`{"name":"\ud800"}`,
	`{"name":"日本語 🎉"}`,
	`{"name":1e400}`,
	`{"name":{"a":1}}`,
	`{"unknown":1}`,
	`{"main.itemRequest":1}`,
	`{"data":"x","iterations":99999999999999999999999}`,
	`{"data":"x","iterations":1.5}`,
	`{"data":"x","iterations":-1}`,
	`{"data":"x","iterations":null,"priority":null}`,
	`{"data":null}`,
	`{"user_email":"john@example.com","user_name":"John"}`,
	`{"user_email":"john@example.com","user_name":"Jo\r\nBcc: x@example.com"}`,
	`{"name":"a","metadata":` + nestedObject(11, "1") + `}`,
	`{"name":"a","metadata":` + nestedObject(9, "1") + `}`,
	`{"name":"a","metadata":{"n":123456789012345678901234567890}}`,
	`{"name":"a","metadata":{"n":1e400,"m":-0}}`,
	`{"name":"a","metadata":{"$set":1}}`,
	`{"name":"a","metadata":{"a.b":1}}`,
	`{"name":"a","metadata":{"a\u0000b":1}}`,
	`{"name":"a","metadata":{"":1}}`,
	`{"name":"a","metadata":[1,2]}`,
	`{"name":"a","metadata":"x"}`,
	`{"name":"a","metadata":{"main":{"panic":{"$x":1}}}}`,
	`{"name":"a","metadata":{"k":1,"k":2}}`,
}

// fuzzing reports whether this run fuzzes (-test.fuzz, in the coordinator
// or one of its worker processes) rather than only replays the seeds and
// the corpus. Seeds at the size limits stay out of a fuzzing run: the
// fuzzer mutates and minimizes every seed, and a few 30-70 KB inputs cut
// its throughput twentyfold.
func fuzzing() bool {
	fuzz, worker := flag.Lookup("test.fuzz"), flag.Lookup("test.fuzzworker")
	return (fuzz != nil && fuzz.Value.String() != "") || (worker != nil && worker.Value.String() == "true")
}

// largeSeeds returns seeds unless this run fuzzes.
func largeSeeds(seeds ...string) []string {
	if fuzzing() {
		return nil
	}
	return seeds
}

// fuzzLogs collects what the server logs at error level, so a failing
// input shows the panic or the internal error behind a 5xx.
type fuzzLogs struct{ bytes.Buffer }

// newFuzzFixture is newHandlerFixture with the server's error log kept.
func newFuzzFixture(t testing.TB) (*handlerFixture, *fuzzLogs) {
	t.Helper()
	logs := &fuzzLogs{}
	f := newHandlerFixture(t, func(d *apiParts) {
		d.log = slog.New(slog.NewTextHandler(&logs.Buffer, &slog.HandlerOptions{Level: slog.LevelError}))
	})
	return f, logs
}

// reset empties the embedded backends and the log behind f's server, as
// if it had just been built.
func (f *handlerFixture) reset(logs *fuzzLogs) {
	f.items.mu.Lock()
	clear(f.items.items)
	clear(f.items.results)
	f.items.mu.Unlock()
	f.statuses.mu.Lock()
	clear(f.statuses.entries)
	f.statuses.mu.Unlock()
	f.keys.mu.Lock()
	clear(f.keys.keys)
	f.keys.mu.Unlock()
	f.broker.mu.Lock()
	f.broker.ready, f.broker.dead = f.broker.ready[:0], nil
	f.broker.mu.Unlock()
	logs.Reset()
}

// serveFuzz sends one request with body (none when empty) and
// contentType (none when "") and returns the answer.
func serveFuzz(f *handlerFixture, method, target string, body []byte, contentType string, header map[string]string) *httptest.ResponseRecorder {
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, target, rd)
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.server.ServeHTTP(rec, r)
	return rec
}

// checkFuzzAnswer checks what every answer must be: a status from want,
// JSON, and for an error the shared error shape with a detail free of Go
// internals. clientText is what the client sent, which a detail may echo.
func checkFuzzAnswer(t *testing.T, rec *httptest.ResponseRecorder, logs *fuzzLogs, clientText []string, want ...int) {
	t.Helper()
	if !slices.Contains(want, rec.Code) {
		t.Fatalf("status: got %d, want one of %v (body %q, server log %q)", rec.Code, want, rec.Body, logs.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	if !json.Valid(rec.Body.Bytes()) {
		t.Fatalf("body is not JSON: %q", rec.Body)
	}
	if rec.Code < 400 {
		return
	}
	var body map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("error answer %q: %v", rec.Body, err)
	}
	for _, k := range []string{"error", "detail", "request_id"} {
		if s, _ := body[k].(string); s == "" {
			t.Errorf("%s: got %#v, want a non-empty string (body %q)", k, body[k], rec.Body)
		}
	}
	if got, want := body["request_id"], rec.Header().Get("X-Request-ID"); got != want {
		t.Errorf("request_id: got %v, want the X-Request-ID header %q", got, want)
	}
	detail, _ := body["detail"].(string)
	if marker := internalText(detail, clientText); marker != "" {
		t.Errorf("detail %q shows Go internals (%q)", detail, marker)
	}
}

// internalMarkers are pieces of text that only Go internals produce:
// panics, stack traces, Go type names and encoding/json's own messages.
var internalMarkers = []string{
	"goroutine", "panic", "runtime error", "main.", "*json.", "json.", "json: ",
	"Go struct", "Go value", "reflect.", "errand/",
}

// internalText returns the first internal marker in detail that is not
// part of an echo of clientText (what the client sent), or "". Echoes are
// cut out first, raw and as %q quotes them, each replaced by a NUL so
// that cutting cannot join two neighbours into a marker.
func internalText(detail string, clientText []string) string {
	var echoes []string
	for _, s := range clientText {
		if s == "" {
			continue
		}
		q := strconv.Quote(s)
		echoes = append(echoes, s, q[1:len(q)-1])
	}
	slices.SortFunc(echoes, func(a, b string) int { return len(b) - len(a) })
	for _, e := range echoes {
		detail = strings.ReplaceAll(detail, e, "\x00")
	}
	for _, m := range internalMarkers {
		if strings.Contains(detail, m) {
			return m
		}
	}
	return ""
}

// jsonTexts returns body and every string and number in it, as far as it
// parses: the text of a request that an error detail may quote.
func jsonTexts(body []byte) []string {
	texts := []string{string(body)}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return texts
		}
		switch tok := tok.(type) {
		case string:
			texts = append(texts, tok)
		case json.Number:
			texts = append(texts, string(tok))
		}
	}
}

// decodeStrict decodes data into out, failing on unknown fields.
func decodeStrict(t *testing.T, data []byte, out any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
}

// jsonRoundTrip returns s as it comes back from being encoded as a JSON
// string and decoded again (invalid UTF-8 becomes U+FFFD).
func jsonRoundTrip(s string) string {
	b, _ := json.Marshal(s)
	var out string
	_ = json.Unmarshal(b, &out)
	return out
}

// acceptedMessage returns the one message on f's broker, failing unless
// exactly one is ready and none is dead, and unless it is the task of
// type wantType that rec, a 202, names.
func (f *handlerFixture) acceptedMessage(t *testing.T, rec *httptest.ResponseRecorder, wantType string) taskMessage {
	t.Helper()
	var accepted taskAccepted
	decodeStrict(t, rec.Body.Bytes(), &accepted)
	if ready, dead := f.broker.depth(); ready != 1 || dead != 0 {
		t.Fatalf("broker depth: got %d ready and %d dead, want 1 and 0", ready, dead)
	}
	f.broker.mu.Lock()
	body := f.broker.ready[0].body
	f.broker.mu.Unlock()
	m, err := decodeTaskMessage(body)
	if err != nil {
		t.Fatalf("queued message %q: %v", body, err)
	}
	if m.ID != accepted.TaskID || m.Type != wantType {
		t.Errorf("message id and type: got %q %q, want %q %q", m.ID, m.Type, accepted.TaskID, wantType)
	}
	return m
}

// checkNothingQueued checks that a refused request left no trace: no
// message, no status and no idempotency key.
func (f *handlerFixture) checkNothingQueued(t *testing.T) {
	t.Helper()
	if ready, dead := f.broker.depth(); ready != 0 || dead != 0 {
		t.Errorf("broker depth: got %d ready and %d dead, want none", ready, dead)
	}
	if n := f.statusCount(); n != 0 {
		t.Errorf("status entries: got %d, want 0", n)
	}
	f.keys.mu.Lock()
	keys := len(f.keys.keys)
	f.keys.mu.Unlock()
	if keys != 0 {
		t.Errorf("idempotency keys: got %d, want 0", keys)
	}
}

// checkPendingStatus checks that the status store holds exactly one
// entry, PENDING, for the task id.
func (f *handlerFixture) checkPendingStatus(t *testing.T, id string) {
	t.Helper()
	if n := f.statusCount(); n != 1 {
		t.Errorf("status entries: got %d, want 1", n)
	}
	f.statuses.mu.Lock()
	e, ok := f.statuses.entries[id]
	f.statuses.mu.Unlock()
	if !ok || e.status.Status != statePending {
		t.Errorf("status of %s: got %+v (found %v), want PENDING", id, e.status, ok)
	}
}

// taskMessageOptions compare task messages as the wire keeps them: the
// same instant and UTC offset (not the same *time.Location), and an empty
// trace map the same as none.
var taskMessageOptions = cmp.Options{
	cmp.Comparer(func(a, b time.Time) bool {
		_, aOffset := a.Zone()
		_, bOffset := b.Zone()
		return a.Equal(b) && aOffset == bOffset
	}),
	cmpopts.EquateEmpty(),
}

func FuzzDecodeTaskMessage(f *testing.F) {
	valid, err := encodeTaskMessage(taskMessage{
		ID: "a7f8c9d0-1234-4678-9abc-def012345678", Type: tasks.HeavyTaskName,
		Args: json.RawMessage(`{"data":"heavy processing task","iterations":100}`), Priority: "high",
		EnqueuedAt: handlerEpoch, Attempt: 2, LastError: "boom", Deliveries: 1, Owner: "key-1",
		Trace: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	})
	if err != nil {
		f.Fatal(err)
	}
	seeds := []string{
		string(valid),
		`{"id":"1","type":"send_welcome_email","args":{"user_email":"john@example.com","user_name":"John"},"priority":"normal","enqueued_at":"2026-01-02T03:04:05.678901Z"}`,
		`{"id":"1","type":"t"}`,
		`{"id":"1","type":"t","args":null}`,
		`{"id":"1","type":"t","args": [ 1 , 2 ] }`,
		`{"id":"1","type":"t","args":"<&>\u2028"}`,
		`{"id":"1","type":"t","args":{"a":1,"a":2}}`,
		`{"id":"1","type":"t","args":1e400}`,
		`{"id":"1","type":"t","enqueued_at":"2026-01-02T03:04:05+14:00"}`,
		`{"id":"1","type":"t","enqueued_at":"0000-01-01T00:00:00+01:00"}`,
		`{"id":"1","type":"t","enqueued_at":"9999-12-31T23:59:59-23:59"}`,
		`{"id":"1","type":"t","enqueued_at":"2026-13-01T00:00:00Z"}`,
		`{"id":"1","type":"t","enqueued_at":null,"trace":{},"attempt":-1}`,
		`{"id":"1","type":"t","attempt":99999999999999999999}`,
		`{"ID":"1","TYPE":"t","Priority":"low"}`,
		`{"id":"1","type":"t","id":""}`,
		`{"id":"","type":"t"}`,
		`{"id":"\u0000","type":"\ud800"}`,
		"{\"id\":\"\xff\",\"type\":\"t\",\"owner\":\"\xfe\"}",
		`{"id":"1","type":"t"} trailing`,
		`{"id":"1","type":"t"}{}`,
		`null`,
		`[]`,
		`[{"id":"1","type":"t"}]`,
		`"x"`,
		``,
	}
	for _, s := range append(seeds, largeSeeds(`{"id":"1","type":"t","args":`+nestedObject(5000, "1")+`}`)...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m1, err := decodeTaskMessage(body)
		if err != nil {
			return
		}
		if m1.ID == "" || m1.Type == "" {
			t.Fatalf("decoded %q with id %q and type %q, want both non-empty", body, m1.ID, m1.Type)
		}
		// The first re-encoding compacts Args (and escapes <, > and &), so
		// only from the second decode on must the message stay the same.
		m2 := reencodeTaskMessage(t, m1)
		m3 := reencodeTaskMessage(t, m2)
		if diff := cmp.Diff(m2, m3, taskMessageOptions); diff != "" {
			t.Fatalf("second round trip of %q changed the message (-first +second):\n%s", body, diff)
		}
		// Everything but the form of Args survives the first trip too.
		wantArgs, err := json.Marshal(m1.Args)
		if err != nil {
			t.Fatalf("marshal args %q: %v", m1.Args, err)
		}
		if !bytes.Equal(m2.Args, wantArgs) {
			t.Errorf("args after a round trip: got %q, want %q", m2.Args, wantArgs)
		}
		if diff := cmp.Diff(m1, m2, taskMessageOptions, cmpopts.IgnoreFields(taskMessage{}, "Args")); diff != "" {
			t.Errorf("round trip of %q changed the message (-decoded +re-decoded):\n%s", body, diff)
		}
	})
}

// FuzzSplitTaskEnvelope: whatever a message claiming to be an envelope
// holds, splitting it never panics, and an envelope that splits re-encodes
// from its decodable parts to one that splits into the same tasks.
func FuzzSplitTaskEnvelope(f *testing.F) {
	valid, err := encodeTaskEnvelope([]taskMessage{
		{ID: "a", Type: tasks.HeavyTaskName, Args: json.RawMessage(`{"data":"x","iterations":1}`), Priority: "normal", EnqueuedAt: handlerEpoch},
		{ID: "b", Type: tasks.WelcomeEmailName, Args: json.RawMessage(`{}`), Priority: "normal", EnqueuedAt: handlerEpoch,
			Trace: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}},
	})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{string(valid), `[]`, `[{}]`, `[null]`, `[1,"x",{"id":"1","type":"t"}]`, `{"id":"1","type":"t"}`, `[`, ``, `[{"id":"1","type":"t"}] x`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		parts, err := splitTaskEnvelope(body)
		if err != nil {
			return
		}
		if len(parts) == 0 {
			t.Fatalf("split %q into no parts without an error", body)
		}
		var msgs []taskMessage
		for _, p := range parts {
			if m, err := decodeTaskMessage(p); err == nil {
				msgs = append(msgs, m)
			}
		}
		if len(msgs) == 0 {
			return
		}
		again, err := encodeTaskEnvelope(msgs)
		if err != nil {
			t.Fatalf("re-encode the tasks of %q: %v", body, err)
		}
		parts2, err := splitTaskEnvelope(again)
		if err != nil || len(parts2) != len(msgs) {
			t.Fatalf("re-encoded envelope of %q: %d parts (%v), want %d", body, len(parts2), err, len(msgs))
		}
		for i, p := range parts2 {
			m, err := decodeTaskMessage(p)
			if err != nil {
				t.Fatalf("part %d of the re-encoded envelope: %v", i, err)
			}
			if m.ID != msgs[i].ID || m.Type != msgs[i].Type {
				t.Errorf("part %d: got task %s/%s, want %s/%s", i, m.ID, m.Type, msgs[i].ID, msgs[i].Type)
			}
		}
	})
}

// reencodeTaskMessage encodes m and decodes it again, failing if either
// step fails: a message the decoder accepts must be one a worker can
// publish again (for a retry) and read back.
func reencodeTaskMessage(t *testing.T, m taskMessage) taskMessage {
	t.Helper()
	body, err := encodeTaskMessage(m)
	if err != nil {
		t.Fatalf("re-encode %+v: %v", m, err)
	}
	again, err := decodeTaskMessage(body)
	if err != nil {
		t.Fatalf("decode re-encoded %q: %v", body, err)
	}
	return again
}

// checkItemRules checks a stored item against the rules the API enforces
// on what it stores: name and description lengths, and metadata keys and
// nesting as MongoDB can store them.
func checkItemRules(t *testing.T, it itemResponse) {
	t.Helper()
	if n := utf8.RuneCountInString(it.Name); n < 1 || n > maxItemName {
		t.Errorf("name: got %d characters, want 1 to %d", n, maxItemName)
	}
	if it.Description != nil && utf8.RuneCountInString(*it.Description) > maxItemDescription {
		t.Errorf("description: got %d characters, want at most %d", utf8.RuneCountInString(*it.Description), maxItemDescription)
	}
	if it.Metadata == nil {
		t.Errorf("metadata: got null, want an object")
	}
	if depth := checkMetadataKeys(t, it.Metadata); depth > maxMetadataDepth {
		t.Errorf("metadata: nests %d levels, want at most %d", depth, maxMetadataDepth)
	}
}

// checkMetadataKeys checks every object key in v and returns how many
// objects and arrays nest at its deepest point, v included.
func checkMetadataKeys(t *testing.T, v any) int {
	t.Helper()
	deepest := 0
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if k == "" || strings.HasPrefix(k, "$") || strings.ContainsAny(k, ".\x00") {
				t.Errorf("metadata key %q stored, want only keys MongoDB accepts", k)
			}
			deepest = max(deepest, checkMetadataKeys(t, child))
		}
	case []any:
		for _, child := range v {
			deepest = max(deepest, checkMetadataKeys(t, child))
		}
	default:
		return 0
	}
	return deepest + 1
}

// itemRequestFields returns the name and description a create or update
// body asks for, each nil when it asks for none.
func itemRequestFields(t *testing.T, body []byte) (name, description *string) {
	t.Helper()
	var req struct{ Name, Description *string }
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("the API accepted %q, which does not decode: %v", body, err)
	}
	return req.Name, req.Description
}

// acceptedContentTypes is how many of fuzzContentTypes, from the first,
// checkJSONContentType accepts.
const acceptedContentTypes = 6

// addBodySeeds adds the valid bodies and fuzzJSONBodies, spread over the
// accepted content types, the first valid body with each content type,
// and bodies over the size and nesting limits.
func addBodySeeds(f *testing.F, valid []string) {
	for i, s := range append(valid, fuzzJSONBodies...) {
		f.Add([]byte(s), byte(i%acceptedContentTypes))
	}
	for i := range fuzzContentTypes {
		f.Add([]byte(valid[0]), byte(i))
	}
	for _, s := range largeSeeds(
		// Over the handler tests' MaxBodyBytes, valid JSON throughout.
		`{"name":"`+strings.Repeat("x", handlerMaxBody)+`"}`,
		// Deeper than encoding/json's nesting limit.
		`{"name":"a","metadata":`+strings.Repeat("[", 12000)+strings.Repeat("]", 12000)+`}`,
	) {
		f.Add([]byte(s), byte(1))
	}
}

func FuzzCreateItem(f *testing.F) {
	addBodySeeds(f, []string{
		`{"name": "Test Item", "description": "My first item", "metadata": {"category": "test"}}`,
		`{"name":"x"}`,
		`{"name":"x","description":null,"metadata":null}`,
		`{"name":"` + strings.Repeat("é", maxItemName) + `","description":"` + strings.Repeat("d", maxItemDescription) + `"}`,
		`{"name":"x","metadata":{"n":9223372036854775807,"f":1.5e300,"a":[1,"b",null,true,{"c":{}}]}}`,
	})
	fx, logs := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, body []byte, contentTypePick byte) {
		fx.reset(logs)
		contentType := fuzzContentType(contentTypePick)
		rec := serveFuzz(fx, "POST", "/api/items", body, contentType, nil)
		checkFuzzAnswer(t, rec, logs, append(jsonTexts(body), contentType),
			http.StatusCreated, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity)
		if rec.Code != http.StatusCreated {
			if n := fx.itemCount(); n != 0 {
				t.Errorf("items after a %d: got %d, want 0", rec.Code, n)
			}
			return
		}
		var created itemResponse
		decodeStrict(t, rec.Body.Bytes(), &created)
		checkItemRules(t, created)
		if !objectIDFormat.MatchString(created.ID) {
			t.Errorf("id: got %q, want an ObjectId", created.ID)
		}
		if got, want := rec.Header().Get("Location"), "/api/items/"+created.ID; got != want {
			t.Errorf("Location: got %q, want %q", got, want)
		}
		if name, _ := itemRequestFields(t, body); name == nil || created.Name != *name {
			t.Errorf("name: got %q, want the requested %v", created.Name, name)
		}
		if n := fx.itemCount(); n != 1 {
			t.Errorf("items: got %d, want 1", n)
		}
		got := serveFuzz(fx, "GET", "/api/items/"+created.ID, nil, "", nil)
		checkFuzzAnswer(t, got, logs, nil, http.StatusOK)
		if got.Body.String() != rec.Body.String() {
			t.Errorf("GET after create: got %s, want the create's answer %s", got.Body, rec.Body)
		}
	})
}

func FuzzUpdateItem(f *testing.F) {
	addBodySeeds(f, []string{
		`{"name": "Updated Item", "description": "Changed", "metadata": {"category": "updated"}}`,
		`{"description":"only this"}`,
		`{"metadata":{"k":2}}`,
		`{"name":null,"description":null,"metadata":null}`,
		`{"name":""}`,
	})
	const original = `{"name":"Original","description":"before","metadata":{"k":1,"nested":{"a":[1,2]}}}`
	fx, logs := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, body []byte, contentTypePick byte) {
		fx.reset(logs)
		id := fx.createItem(t, original).ID
		before := serveFuzz(fx, "GET", "/api/items/"+id, nil, "", nil).Body.String()
		contentType := fuzzContentType(contentTypePick)
		rec := serveFuzz(fx, "PUT", "/api/items/"+id, body, contentType, nil)
		checkFuzzAnswer(t, rec, logs, append(jsonTexts(body), contentType),
			http.StatusOK, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity)
		after := serveFuzz(fx, "GET", "/api/items/"+id, nil, "", nil)
		checkFuzzAnswer(t, after, logs, nil, http.StatusOK)
		if rec.Code != http.StatusOK {
			if after.Body.String() != before {
				t.Errorf("item after a %d: got %s, want it unchanged %s", rec.Code, after.Body, before)
			}
			return
		}
		if after.Body.String() != rec.Body.String() {
			t.Errorf("GET after update: got %s, want the update's answer %s", after.Body, rec.Body)
		}
		var updated itemResponse
		decodeStrict(t, rec.Body.Bytes(), &updated)
		checkItemRules(t, updated)
		name, description := itemRequestFields(t, body)
		wantName := "Original"
		if name != nil {
			wantName = *name
		}
		if updated.ID != id || updated.Name != wantName {
			t.Errorf("id and name: got %q %q, want %q %q", updated.ID, updated.Name, id, wantName)
		}
		if description != nil && (updated.Description == nil || *updated.Description != *description) {
			t.Errorf("description: got %v, want %q", updated.Description, *description)
		}
	})
}

func FuzzSubmitProcess(f *testing.F) {
	valid := []string{
		`{"data": "heavy processing task", "iterations": 100, "priority": "high"}`,
		`{"data":"x"}`,
		`{"data":"","iterations":1,"priority":"low"}`,
		`{"data":"x","iterations":1000,"priority":"normal"}`,
		`{"data":"x","iterations":1001}`,
		`{"data":"x","priority":"urgent"}`,
	}
	valid = append(valid, largeSeeds(
		`{"data":"`+strings.Repeat("€", tasks.MaxHeavyData)+`"}`,
		`{"data":"`+strings.Repeat("€", tasks.MaxHeavyData+1)+`"}`,
	)...)
	for i, s := range append(valid, fuzzJSONBodies...) {
		f.Add([]byte(s), byte(i%acceptedContentTypes), "")
	}
	for i := range fuzzContentTypes {
		f.Add([]byte(valid[0]), byte(i), "")
	}
	for _, key := range []string{"key-1", "bad\nkey", "\x7f", strings.Repeat("k", 256), "ünïcode"} {
		f.Add([]byte(valid[0]), byte(1), key)
	}
	fx, logs := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, body []byte, contentTypePick byte, idempotencyKey string) {
		fx.reset(logs)
		contentType := fuzzContentType(contentTypePick)
		var header map[string]string
		if idempotencyKey != "" {
			header = map[string]string{"Idempotency-Key": idempotencyKey}
		}
		rec := serveFuzz(fx, "POST", "/api/async/process", body, contentType, header)
		checkFuzzAnswer(t, rec, logs, append(jsonTexts(body), contentType, idempotencyKey),
			http.StatusAccepted, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity)
		if rec.Code != http.StatusAccepted {
			fx.checkNothingQueued(t)
			return
		}
		m := fx.acceptedMessage(t, rec, tasks.HeavyTaskName)
		if _, ok := priorityLevels[m.Priority]; !ok {
			t.Errorf("priority: got %q, want low, normal or high", m.Priority)
		}
		var args tasks.HeavyArgs
		decodeStrict(t, m.Args, &args)
		if args.Iterations < 1 || args.Iterations > tasks.MaxIterations {
			t.Errorf("iterations: got %d, want 1 to %d", args.Iterations, tasks.MaxIterations)
		}
		if n := utf8.RuneCountInString(args.Data); n > tasks.MaxHeavyData {
			t.Errorf("data: got %d characters, want at most %d", n, tasks.MaxHeavyData)
		}
		var req struct {
			Data *string `json:"data"`
		}
		if err := json.Unmarshal(body, &req); err != nil || req.Data == nil {
			t.Fatalf("the API accepted %q, which does not decode to data (%v)", body, err)
		}
		if args.Data != *req.Data {
			t.Errorf("data: got %q, want the requested %q", args.Data, *req.Data)
		}
		fx.checkPendingStatus(t, m.ID)
	})
}

func FuzzWelcomeEmail(f *testing.F) {
	f.Add("john@example.com", "John", []byte(nil), byte(0))
	f.Add("", "", []byte(`{"user_email":"john@example.com","user_name":"John"}`), byte(1))
	f.Add("john@example.com", "", []byte(`{"user_name":"Body Name"}`), byte(1))
	f.Add("", "Query Name", []byte(`{"user_email":"body@example.com","user_name":"Body Name"}`), byte(0))
	f.Add("john@example.com", "John\r\nBcc: eve@example.com", []byte(nil), byte(0))
	f.Add("John <john@example.com>", "John", []byte(nil), byte(0))
	f.Add("john@localhost", "John", []byte(nil), byte(0))
	f.Add("john@example.com\n", "John", []byte(nil), byte(0))
	f.Add(`"j d"@example.com`, "John", []byte(nil), byte(0))
	f.Add("j\xffn@example.com", "\xff\xfe", []byte(nil), byte(0))
	f.Add("jöhn@exämple.com", strings.Repeat("é", 200), []byte(nil), byte(0))
	f.Add(strings.Repeat("a", 64)+"@"+strings.Repeat("b", 190)+".com", "J", []byte(nil), byte(0))
	f.Add("john@example.com", "John", []byte(`{"user_email":"x"}`), byte(6))
	for i, s := range fuzzJSONBodies {
		f.Add("", "", []byte(s), byte(i%acceptedContentTypes))
	}
	for i := range fuzzContentTypes {
		f.Add("", "", []byte(`{"user_email":"john@example.com","user_name":"John"}`), byte(i))
	}
	fx, logs := newFuzzFixture(f)
	f.Fuzz(func(t *testing.T, userEmail, userName string, body []byte, contentTypePick byte) {
		fx.reset(logs)
		q := url.Values{}
		if userEmail != "" {
			q.Set("user_email", userEmail)
		}
		if userName != "" {
			q.Set("user_name", userName)
		}
		contentType := fuzzContentType(contentTypePick)
		rec := serveFuzz(fx, "POST", "/api/send-welcome-email?"+q.Encode(), body, contentType, nil)
		checkFuzzAnswer(t, rec, logs, append(jsonTexts(body), contentType, userEmail, userName),
			http.StatusAccepted, http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity)
		if rec.Code != http.StatusAccepted {
			fx.checkNothingQueued(t)
			return
		}
		m := fx.acceptedMessage(t, rec, tasks.WelcomeEmailName)
		var args tasks.EmailArgs
		decodeStrict(t, m.Args, &args)
		def, _ := tasks.NewRegistry(tasks.Config{}).Lookup(tasks.WelcomeEmailName)
		if _, err := def.CheckArgs(m.Args); err != nil {
			t.Errorf("queued arguments %s: %v", m.Args, err)
		}
		if strings.ContainsAny(args.UserName, "\r\n") || strings.ContainsAny(args.UserEmail, "\r\n") {
			t.Errorf("queued arguments %+v hold a line break", args)
		}
		// Query values win over the body's.
		if userEmail != "" && args.UserEmail != jsonRoundTrip(userEmail) {
			t.Errorf("user_email: got %q, want the query's %q", args.UserEmail, userEmail)
		}
		if userName != "" && args.UserName != jsonRoundTrip(userName) {
			t.Errorf("user_name: got %q, want the query's %q", args.UserName, userName)
		}
		fx.checkPendingStatus(t, m.ID)
	})
}

func FuzzListItemsQuery(f *testing.F) {
	for _, q := range []string{
		"", "skip=0&limit=10", "skip=1", "limit=1", "skip=3", "skip=2147483647&limit=1000",
		"skip=2147483648", "limit=0", "limit=1001", "skip=-1", "limit=1e3", "limit=%31",
		"limit=%zz", "skip=1&skip=2", "limit=", "skip", ";", "&&&", "limit=9223372036854775808",
		"limit=+5", "limit=0x10", "skip=٣", "a=b#c", "limit=1%00", "\x00", "skip=1 2",
	} {
		f.Add(q)
	}
	fx, logs := newFuzzFixture(f)
	const stored = 3
	for i := range stored {
		fx.createItem(f, `{"name":"item `+strconv.Itoa(i)+`"}`)
	}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		logs.Reset()
		// The query is set on the parsed request as the server would have
		// it, so bytes that httptest.NewRequest refuses still get through.
		r := httptest.NewRequest("GET", "/api/items", nil)
		r.URL.RawQuery = rawQuery
		rec := httptest.NewRecorder()
		fx.server.ServeHTTP(rec, r)
		var texts []string
		values, _ := url.ParseQuery(rawQuery)
		for k, vs := range values {
			texts = append(texts, k)
			texts = append(texts, vs...)
		}
		checkFuzzAnswer(t, rec, logs, append(texts, rawQuery), http.StatusOK, http.StatusBadRequest, http.StatusUnprocessableEntity)
		if rec.Code != http.StatusOK {
			return
		}
		var list []itemResponse
		decodeStrict(t, rec.Body.Bytes(), &list)
		skip, limit := queryValue(t, values, "skip", 0), queryValue(t, values, "limit", defaultPageSize)
		if want := max(0, min(stored-skip, limit)); len(list) != want {
			t.Errorf("items for skip %d and limit %d: got %d, want %d", skip, limit, len(list), want)
		}
	})
}

// queryValue reads an integer query value the API has accepted, def when
// it is missing or empty.
func queryValue(t *testing.T, values url.Values, name string, def int) int {
	t.Helper()
	raw := values.Get(name)
	if raw == "" {
		return def
	}
	n, err := strconv.Atoi(raw)
	if err != nil {
		t.Fatalf("%s=%q was accepted but is not an integer: %v", name, raw, err)
	}
	return n
}
