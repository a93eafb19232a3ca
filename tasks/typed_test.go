package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// wordCountArgs is a task type declared the way a user declares one.
type wordCountArgs struct {
	Text     string   `json:"text" jsonschema:"required,minLength=1,maxLength=100"`
	MinCount int      `json:"min_count" jsonschema:"minimum=1,maximum=10"`
	Tags     []string `json:"tags,omitempty" jsonschema:"maxItems=2"`
}

func (a wordCountArgs) Validate() error {
	if strings.TrimSpace(a.Text) == "" {
		return &FieldError{Field: "text", Reason: "must hold a word"}
	}
	return nil
}

func wordCount() Type[wordCountArgs] {
	return Type[wordCountArgs]{
		Name:     "word_count",
		Defaults: wordCountArgs{MinCount: 1},
		Policy:   Policy{MaxRetries: 2, Priority: "high"},
		Run: func(ctx context.Context, task Task, args wordCountArgs) (any, error) {
			task.Report(ctx, Progress{Percent: 50, Status: "counting"})
			return map[string]int{"words": len(strings.Fields(args.Text)), "min": args.MinCount}, nil
		},
	}
}

func TestDeclaredArgsAreCheckedAgainstTheirSchema(t *testing.T) {
	def := Declare(wordCount())
	tests := []struct {
		name      string
		args      string
		want      string // the checked arguments, when valid
		wantField string
	}{
		{name: "defaults filled in", args: `{"text": "a b"}`, want: `{"text":"a b","min_count":1}`},
		{name: "given values kept", args: `{"text": "a", "min_count": 3, "tags": ["x"]}`, want: `{"text":"a","min_count":3,"tags":["x"]}`},
		{name: "an optional null takes the default", args: `{"text": "a", "min_count": null}`, want: `{"text":"a","min_count":1}`},
		{name: "missing required field", args: `{"min_count": 2}`, wantField: "text"},
		{name: "no arguments at all", args: ``, wantField: "text"},
		{name: "required null", args: `{"text": null}`, wantField: "text"},
		{name: "wrong type", args: `{"text": 5}`, wantField: "text"},
		{name: "integer expected", args: `{"text": "a", "min_count": 1.5}`, wantField: "min_count"},
		{name: "below minimum", args: `{"text": "a", "min_count": 0}`, wantField: "min_count"},
		{name: "above maximum", args: `{"text": "a", "min_count": 11}`, wantField: "min_count"},
		{name: "beyond int64", args: `{"text": "a", "min_count": 99999999999999999999}`, wantField: "min_count"},
		{name: "too long", args: `{"text": "` + strings.Repeat("é", 101) + `"}`, wantField: "text"},
		{name: "too many items", args: `{"text": "a", "tags": ["x", "y", "z"]}`, wantField: "tags"},
		{name: "item of the wrong type", args: `{"text": "a", "tags": ["x", 5]}`, wantField: "tags[1]"},
		{name: "unknown field", args: `{"text": "a", "colour": "red"}`, wantField: "colour"},
		{name: "not an object", args: `["a"]`, wantField: ""},
		{name: "rule of its own", args: `{"text": "   "}`, wantField: "text"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := def.CheckArgs(json.RawMessage(tc.args))
			if tc.want != "" {
				if err != nil {
					t.Fatalf("CheckArgs(%s): %v, want %s", tc.args, err, tc.want)
				}
				if string(got) != tc.want {
					t.Errorf("CheckArgs(%s) = %s, want %s", tc.args, got, tc.want)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("CheckArgs(%s) = %s, %v; want a *FieldError", tc.args, got, err)
			}
			if fe.Field != tc.wantField || fe.Reason == "" {
				t.Errorf("CheckArgs(%s): field %q (%s), want field %q with a reason", tc.args, fe.Field, fe.Reason, tc.wantField)
			}
		})
	}
}

func TestDeclaredSchemaSaysRequiredFieldsAndDefaults(t *testing.T) {
	var schema struct {
		Type                 string                     `json:"type"`
		Required             []string                   `json:"required"`
		AdditionalProperties *bool                      `json:"additionalProperties"`
		Properties           map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(Declare(wordCount()).ArgsSchema(), &schema); err != nil {
		t.Fatal(err)
	}
	if schema.Type != "object" || schema.AdditionalProperties == nil || *schema.AdditionalProperties {
		t.Errorf("schema type %q, additionalProperties %v; want an object with no other properties", schema.Type, schema.AdditionalProperties)
	}
	if diff := cmp.Diff([]string{"text"}, schema.Required); diff != "" {
		t.Errorf("required (-want +got):\n%s", diff)
	}
	var minCount struct {
		Type    string `json:"type"`
		Default int    `json:"default"`
		Minimum int    `json:"minimum"`
	}
	if err := json.Unmarshal(schema.Properties["min_count"], &minCount); err != nil {
		t.Fatal(err)
	}
	if minCount != (struct {
		Type    string `json:"type"`
		Default int    `json:"default"`
		Minimum int    `json:"minimum"`
	}{"integer", 1, 1}) {
		t.Errorf("min_count schema %+v, want an integer with default 1 and minimum 1", minCount)
	}
}

func TestDeclaredTypeRunsWithDecodedArgs(t *testing.T) {
	def := Declare(wordCount())
	var reports []Progress
	report := func(_ context.Context, p Progress) { reports = append(reports, p) }
	got, err := def.Run(context.Background(), Task{ID: "t-1", Report: report}, json.RawMessage(`{"text": "one two three"}`))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]int{"words": 3, "min": 1}, got); diff != "" {
		t.Errorf("result (-want +got):\n%s", diff)
	}
	if len(reports) != 1 || reports[0].Status != "counting" {
		t.Errorf("progress reports %+v, want the handler's one", reports)
	}
	// A message that bypassed the API's check does not run, and is not
	// worth a retry.
	_, err = def.Run(context.Background(), Task{ID: "t-2", Report: report}, json.RawMessage(`{"text": 5}`))
	if !errors.Is(err, ErrInvalidArgs) || Retryable(err) {
		t.Errorf("run with invalid arguments: %v, want ErrInvalidArgs, not retryable", err)
	}
}

func TestBuiltInTypesAreDeclared(t *testing.T) {
	r := NewRegistry(Config{})
	if diff := cmp.Diff([]string{MonthlyReportName, ImportCSVName, HeavyTaskName, ProcessImageName, WelcomeEmailName}, r.Names()); diff != "" {
		t.Errorf("names (-want +got):\n%s", diff)
	}
	heavy, _ := r.Lookup(HeavyTaskName)
	got, err := heavy.CheckArgs(json.RawMessage(`{"data": "x"}`))
	if err != nil || string(got) != `{"data":"x","iterations":10}` {
		t.Errorf("process_heavy_task with data only: %s, %v; want the guide's default of 10 iterations", got, err)
	}
	email, _ := r.Lookup(WelcomeEmailName)
	for args, wantField := range map[string]string{
		`{"user_email": "john@localhost", "user_name": "John"}`:          "user_email",
		`{"user_email": "John <john@example.com>", "user_name": "John"}`: "user_email",
		`{"user_email": "john@example.com", "user_name": "J\r\nBcc: e"}`: "user_name",
		`{"user_email": "john@example.com", "user_name": ""}`:            "user_name",
	} {
		var fe *FieldError
		if _, err := email.CheckArgs(json.RawMessage(args)); !errors.As(err, &fe) || fe.Field != wantField {
			t.Errorf("send_welcome_email %s: %v, want an error on %s", args, err, wantField)
		}
	}
}

func TestMistakenDeclarationsPanicAtStart(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("Declare of a type whose arguments are not a struct did not panic")
		}
	}()
	Declare(Type[[]string]{Name: "list"})
}

// taggedArgs has a map and a slice among its defaults.
type taggedArgs struct {
	Labels map[string]string `json:"labels,omitempty"`
	Tags   []string          `json:"tags,omitempty"`
	Count  int               `json:"count,omitempty"`
}

func TestDefaultsAreNotSharedBetweenTasks(t *testing.T) {
	def := Declare(Type[taggedArgs]{Name: "tagged", Defaults: taggedArgs{Labels: map[string]string{"team": "core"}, Tags: []string{"a", "b"}}})
	if _, err := def.CheckArgs(json.RawMessage(`{"labels": {"secret": "one client's"}, "tags": ["x"]}`)); err != nil {
		t.Fatal(err)
	}
	got, err := def.CheckArgs(json.RawMessage(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"labels":{"team":"core"},"tags":["a","b"]}`; string(got) != want {
		t.Errorf("arguments of a later submit: %s, want the defaults alone, %s", got, want)
	}
	// A number the schema takes (5.0 is an integer to JSON Schema) that
	// the struct cannot: the error names the field.
	var fe *FieldError
	if _, err := def.CheckArgs(json.RawMessage(`{"count": 5.5e0}`)); !errors.As(err, &fe) || fe.Field != "count" {
		t.Errorf("count 5.5e0: %v, want an error on count", err)
	}
	if _, err := def.CheckArgs(json.RawMessage(`{"count": 5.0}`)); !errors.As(err, &fe) || fe.Field != "count" {
		t.Errorf("count 5.0: %v, want an error on count", err)
	}
}

// TestPlainValue: which arguments' defaults copy by assignment.
func TestPlainValue(t *testing.T) {
	type inner struct{ N int }
	for _, tc := range []struct {
		value any
		plain bool
	}{
		{struct {
			A string
			B int
			C [2]float64
			D inner
		}{}, true},
		{struct{ M map[string]string }{}, false},
		{struct{ S []string }{}, false},
		{struct{ P *int }{}, false},
		{struct{ A any }{}, false},
		{struct{ D [1][]int }{}, false},
		{struct{ hidden int }{}, false},
		{struct {
			Skipped int `json:"-"`
		}{}, false},
	} {
		if got := plainValue(reflect.TypeOf(tc.value)); got != tc.plain {
			t.Errorf("plainValue(%T) = %v, want %v", tc.value, got, tc.plain)
		}
	}
}
