package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// objectIDFormat is what an item id looks like: a MongoDB ObjectId.
var objectIDFormat = regexp.MustCompile(`^[0-9a-f]{24}$`)

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
