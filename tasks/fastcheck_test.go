package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// trickyArgs are arguments on which a check of the decoded Go value could
// part from the schema: nulls, case-folded and escaped keys, duplicates,
// numbers Go and JSON Schema read differently, bounds, lengths counted in
// characters, nesting, and what is not an object.
var trickyArgs = []string{
	``, `null`, `{}`, `[]`, `"x"`, `42`, `{"data": "x"}`, `{"data": "x", "iterations": 1}`,
	`{"data": "x", "iterations": 1000}`, `{"data": "x", "iterations": 1001}`, `{"data": "x", "iterations": 0}`,
	`{"data": "x", "iterations": -5}`, `{"data": "x", "iterations": 5.0}`, `{"data": "x", "iterations": 5.5}`,
	`{"data": "x", "iterations": 1e2}`, `{"data": "x", "iterations": 99999999999999999999}`,
	`{"data": "x", "iterations": "5"}`, `{"data": "x", "iterations": true}`, `{"data": "x", "iterations": null}`,
	`{"data": null}`, `{"data": 5}`, `{"data": ["x"]}`, `{"data": {"a": 1}}`, `{"Data": "x"}`, `{"DATA": "x"}`,
	`{"data": "x", "DATA": "y"}`, `{"d\u0061ta": "x"}`, `{"data": "x", "data": "y"}`, `{"data": "x", "extra": 1}`,
	`{"data": "x", "iterations": 2, "iterations": 2000}`, `{"iterations": 2}`, `{"data": ""}`,
	`{"data": "` + strings.Repeat("é", 10000) + `"}`, `{"data": "` + strings.Repeat("é", 10001) + `"}`,
	`{"data": "` + strings.Repeat("a", 10000) + `"}`, `{"data": "\u00e9\n\"quoted\"", "iterations": 3}`,
	`  {"data" : "x" , "iterations" : 7 }  `, `{"data": "x"} {}`, `{"data": "x",}`, `{"data": "x"`,
	`{"data": "null"}`, `{"user_email": "a@example.com", "user_name": "A"}`, `{"user_email": "not an address", "user_name": "A"}`,
	`{"user_id": 42, "month": "2026-11"}`, `{"user_id": "u-1", "month": "2026-13"}`, `{"file_id": "f", "delimiter": ";;"}`,
	`{"file_id": "f", "width": 100, "format": "png"}`, `{"file_id": "f", "format": "gif"}`, `{"file_id": "f", "quality": 0}`,
	`{"nested": {"data": "x"}, "data": "y"}`, `{"data": "x", "iterations": 3, "x": [1, {"y": "}"}]}`,
}

// TestFastCheckAgreesWithLibrary: for every task type, the check with the
// fast path gives what the JSON Schema library alone gives, arguments and
// error alike.
func TestFastCheckAgreesWithLibrary(t *testing.T) {
	r := NewRegistry(Config{})
	for _, name := range r.Names() {
		d, _ := r.Lookup(name)
		if d.checkArgsByLibrary == nil {
			continue
		}
		for _, raw := range trickyArgs {
			assertSameCheck(t, d, []byte(raw))
		}
	}
}

func assertSameCheck(t *testing.T, d Definition, raw []byte) {
	t.Helper()
	got, gotErr := d.checkArgs(raw)
	want, wantErr := d.checkArgsByLibrary(raw)
	// A refusal is the library's own either way (the fast check only
	// vouches), and which of several wrong fields it names varies from
	// call to call: refusals agree when both refuse.
	if !bytes.Equal(got, want) || (gotErr == nil) != (wantErr == nil) {
		t.Errorf("%s %q: got %s (%v), want the library's %s (%v)", d.Name, raw, got, gotErr, want, wantErr)
	}
}

// FuzzFastCheckAgreesWithLibrary is the same for any arguments.
func FuzzFastCheckAgreesWithLibrary(f *testing.F) {
	for _, raw := range trickyArgs {
		f.Add([]byte(raw))
	}
	r := NewRegistry(Config{})
	var checked []Definition
	for _, name := range r.Names() {
		if d, _ := r.Lookup(name); d.checkArgsByLibrary != nil {
			checked = append(checked, d)
		}
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, d := range checked {
			assertSameCheck(t, d, raw)
		}
	})
}

// TestFastCheckServesTheHeavyTask: the fast check applies where it pays
// (the guide's heavy task, the most submitted) and vouches for valid
// arguments; it stands aside for what it cannot judge exactly.
func TestFastCheckServesTheHeavyTask(t *testing.T) {
	r := NewRegistry(Config{})
	heavy, _ := r.Lookup(HeavyTaskName)
	fast := newFastCheck(heavy.Schema, reflect.TypeFor[HeavyArgs]())
	if fast == nil {
		t.Fatalf("no fast check for %s, schema %s", HeavyTaskName, heavy.Schema)
	}
	accepts := func(raw string) bool {
		var args HeavyArgs
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			return false
		}
		return fast.accepts([]byte(raw), reflect.ValueOf(&args).Elem())
	}
	for _, raw := range []string{`{"data": "x"}`, `{"data": "x", "iterations": 1000}`, `{"iterations": 1, "data": "é"}`} {
		if !accepts(raw) {
			t.Errorf("fast check refused %s", raw)
		}
	}
	for _, raw := range []string{`{"data": "x", "iterations": 1001}`, `{"iterations": 2}`, `{"DATA": "x"}`,
		`{"data": null}`, `{"d\u0061ta": "x"}`, `{"data": "` + strings.Repeat("é", 10001) + `"}`} {
		if accepts(raw) {
			t.Errorf("fast check vouched for %s", raw)
		}
	}
	if heavy.checkArgsByLibrary == nil {
		t.Errorf("%s has no check by the library alone for the tests to compare with", HeavyTaskName)
	}
	email, _ := r.Lookup(WelcomeEmailName)
	if newFastCheck(email.Schema, reflect.TypeFor[EmailArgs]()) != nil {
		t.Errorf("fast check for %s, whose schema has a format", WelcomeEmailName)
	}
}

// countString is a number that may come as a string, and lowerFormat a
// string folded to lower case: fields whose own decoding changes what was
// sent.
type (
	countString int
	lowerFormat string
)

func (c *countString) UnmarshalJSON(b []byte) error {
	n, err := strconv.Atoi(strings.Trim(string(b), `"`))
	*c = countString(n)
	return err
}

func (f *lowerFormat) UnmarshalText(b []byte) error {
	*f = lowerFormat(strings.ToLower(string(b)))
	return nil
}

// TestFastCheckLeavesSelfDecodingFieldsToTheLibrary: the schema judges
// what was sent, which a field that decodes itself hides from the fast
// check, so such a type has none.
func TestFastCheckLeavesSelfDecodingFieldsToTheLibrary(t *testing.T) {
	type args struct {
		Count  countString `json:"count" jsonschema:"minimum=1,maximum=5"`
		Format lowerFormat `json:"format" jsonschema:"enum=jpeg,enum=png"`
	}
	d := Declare(Type[args]{Name: "self_decoding", Run: func(context.Context, Task, args) (any, error) { return nil, nil }})
	if d.checkArgsByLibrary != nil {
		t.Errorf("a fast check for fields that decode themselves (schema %s)", d.Schema)
	}
	for _, raw := range []string{`{"count": "3"}`, `{"format": "JPEG"}`} {
		if got, err := d.CheckArgs(json.RawMessage(raw)); err == nil {
			t.Errorf("%s: got %s, want the schema's refusal", raw, got)
		}
	}
}

func TestTopLevelKeys(t *testing.T) {
	for raw, want := range map[string]string{
		`{}`: "",
		` { "a" : 1 , "b":"x,}" ,"c":{"d":[1,{"e":"]"}]} } `: "a b c",
		`{"a":"\"}","b":true}`:                               "a b",
		`{"a\u0062":1}`:                                      "!",
		`[1]`:                                                "!",
		`{"a":1} {}`:                                         "!",
		`{} x`:                                               "!",
	} {
		var keys []string
		ok := topLevelKeys([]byte(raw), func(k []byte) bool { keys = append(keys, string(k)); return true })
		got := strings.Join(keys, " ")
		if !ok {
			got = "!"
		}
		if got != want {
			t.Errorf("topLevelKeys(%s): got %q, want %q", raw, got, want)
		}
	}
}
