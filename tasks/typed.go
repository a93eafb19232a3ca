package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	schemagen "github.com/invopop/jsonschema"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Type declares a task type once: its name, its arguments as a Go struct,
// its policy and its handler. The registry derives the rest from it: the
// JSON Schema of the arguments (from the struct's json and jsonschema
// tags), their decoding and validation, and the type-erased Definition the
// worker runs.
//
// Tags on Args say what a valid argument is: `jsonschema:"required"` for a
// field a submit must give, and the JSON Schema keywords invopop/jsonschema
// reads (minimum, maximum, minLength, maxLength, enum, pattern, format,
// description). A rule no schema can say goes in a Validate() error method
// on Args, which returns a *FieldError.
type Type[Args any] struct {
	Name        string
	Description string
	Policy      Policy
	// Defaults are the arguments a submit leaves out.
	Defaults Args
	Run      func(ctx context.Context, task Task, args Args) (any, error)
}

// FieldError is an argument that breaks a rule: Field is its path in the
// arguments ("user_email", "items[2].name").
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// argsValidator is Args with a rule of its own beyond its schema.
type argsValidator interface {
	Validate() error
}

// Declare makes the registry's Definition of t. It panics if Args has no
// valid schema, which is a mistake in the declaration, found at start.
func Declare[Args any](t Type[Args]) Definition {
	d, err := t.definition()
	if err != nil {
		panic(err)
	}
	return d
}

// definition builds the registry's view of t.
func (t Type[Args]) definition() (Definition, error) {
	schema, err := argsSchema[Args](t.Defaults)
	if err != nil {
		return Definition{}, fmt.Errorf("task type %s: %w", t.Name, err)
	}
	compiled, err := compileSchema(t.Name, schema)
	if err != nil {
		return Definition{}, fmt.Errorf("task type %s: %w", t.Name, err)
	}
	defaults, err := json.Marshal(t.Defaults)
	if err != nil {
		return Definition{}, fmt.Errorf("task type %s: encode defaults: %w", t.Name, err)
	}
	var shape struct {
		Required []string `json:"required"`
	}
	if err := json.Unmarshal(schema, &shape); err != nil {
		return Definition{}, fmt.Errorf("task type %s: read schema: %w", t.Name, err)
	}
	required := map[string]bool{}
	for _, name := range shape.Required {
		required[name] = true
	}
	plain := plainValue(reflect.TypeFor[Args]())
	fast := newFastCheck(schema, reflect.TypeFor[Args]())
	// Each task's arguments start from a copy of the defaults of their
	// own: a map or a slice among them is never shared. Plain values copy
	// by assignment; the others through their JSON.
	fresh := func() (Args, error) {
		if plain {
			return t.Defaults, nil
		}
		var args Args
		if err := json.Unmarshal(defaults, &args); err != nil {
			return t.Defaults, fmt.Errorf("copy the defaults of %s: %w", t.Name, err)
		}
		return args, nil
	}
	decode := func(raw json.RawMessage, args *Args) error {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		return dec.Decode(args)
	}
	validated := func(args Args) (Args, error) {
		if v, ok := any(&args).(argsValidator); ok {
			if err := v.Validate(); err != nil {
				var fe *FieldError
				if errors.As(err, &fe) {
					return t.Defaults, fe
				}
				return t.Defaults, &FieldError{Reason: err.Error()}
			}
		}
		return args, nil
	}
	check := func(raw json.RawMessage, useFast bool) (Args, error) {
		if len(bytes.TrimSpace(raw)) == 0 || string(bytes.TrimSpace(raw)) == "null" {
			raw = json.RawMessage(`{}`)
		}
		raw, err := dropOptionalNulls(raw, required)
		if err != nil {
			return t.Defaults, &FieldError{Reason: "must be a JSON object"}
		}
		if fast != nil && useFast {
			args, err := fresh()
			if err != nil {
				return t.Defaults, err
			}
			if decode(raw, &args) == nil && fast.accepts(raw, reflect.ValueOf(&args).Elem()) {
				return validated(args)
			}
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return t.Defaults, &FieldError{Reason: "must be a JSON object"}
		}
		if err := compiled.Validate(doc); err != nil {
			return t.Defaults, schemaFieldError(err)
		}
		args, err := fresh()
		if err != nil {
			return t.Defaults, err
		}
		if err := decode(raw, &args); err != nil {
			// The schema has passed, so this is a shape it cannot express:
			// 5.0 for an integer field, say.
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return t.Defaults, &FieldError{Field: typeErr.Field, Reason: "must be " + article(goJSONType(typeErr.Type.Kind()))}
			}
			return t.Defaults, &FieldError{Reason: err.Error()}
		}
		return validated(args)
	}
	d := Definition{
		Name:        t.Name,
		Description: t.Description,
		Policy:      t.Policy,
		Schema:      schema,
		checkArgs:   func(raw json.RawMessage) (json.RawMessage, error) { return marshalChecked(check(raw, true)) },
		Run: func(ctx context.Context, task Task, raw json.RawMessage) (any, error) {
			args, err := check(raw, true)
			if err != nil {
				// A message that bypassed the API cannot run with what it carries.
				return nil, fmt.Errorf("%w: %v", ErrInvalidArgs, err)
			}
			return t.Run(ctx, task, args)
		},
	}
	if fast != nil {
		d.checkArgsByLibrary = func(raw json.RawMessage) (json.RawMessage, error) { return marshalChecked(check(raw, false)) }
	}
	return d, nil
}

// dropOptionalNulls removes the optional fields that are null from the
// arguments object raw: a null means "not given", as it does for the
// guide's optional fields, and the field takes its default.
func dropOptionalNulls(raw json.RawMessage, required map[string]bool) (json.RawMessage, error) {
	if !bytes.Contains(raw, []byte("null")) {
		return raw, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		if bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
			return nil, err
		}
		return raw, nil // not an object: the schema says what is wrong
	}
	dropped := false
	for name, v := range fields {
		if !required[name] && string(bytes.TrimSpace(v)) == "null" {
			delete(fields, name)
			dropped = true
		}
	}
	if !dropped {
		return raw, nil
	}
	return json.Marshal(fields)
}

// plainValue reports whether an assignment copies a value of type t as
// its JSON would: nothing in it refers to memory the copy would share (no
// maps, slices, pointers or interfaces, at any depth), and every field is
// one JSON carries (exported, not tagged "-").
func plainValue(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Map, reflect.Slice, reflect.Pointer, reflect.Interface, reflect.Chan, reflect.Func, reflect.UnsafePointer:
		return false
	case reflect.Array:
		return plainValue(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() || f.Tag.Get("json") == "-" || !plainValue(f.Type) {
				return false
			}
		}
	}
	return true
}

// argsSchema reflects the JSON Schema of Args: no properties but its own,
// the required ones named by their tags, and each optional one's default
// taken from defaults.
func argsSchema[Args any](defaults Args) (json.RawMessage, error) {
	r := schemagen.Reflector{
		Anonymous:                  true,
		DoNotReference:             true,
		ExpandedStruct:             true,
		RequiredFromJSONSchemaTags: true,
	}
	s := r.Reflect(new(Args))
	if s.Type != "object" {
		return nil, fmt.Errorf("arguments must be a struct, not %s", reflect.TypeFor[Args]())
	}
	s.Version = ""
	var values map[string]any
	raw, err := json.Marshal(defaults)
	if err != nil {
		return nil, fmt.Errorf("encode defaults: %w", err)
	}
	if err := json.Unmarshal(raw, &values); err != nil {
		return nil, fmt.Errorf("decode defaults: %w", err)
	}
	for pair := s.Properties.Oldest(); pair != nil; pair = pair.Next() {
		if v, ok := values[pair.Key]; ok && !isZeroJSON(v) {
			pair.Value.Default = v
		}
	}
	return json.Marshal(s)
}

func isZeroJSON(v any) bool {
	switch v := v.(type) {
	case nil:
		return true
	case string:
		return v == ""
	case float64:
		return v == 0
	case bool:
		return !v
	case []any:
		return len(v) == 0
	case map[string]any:
		return len(v) == 0
	}
	return false
}

func compileSchema(name string, schema json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return nil, fmt.Errorf("read schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	url := "errand:task-types/" + name + ".json"
	if err := c.AddResource(url, doc); err != nil {
		return nil, fmt.Errorf("add schema: %w", err)
	}
	compiled, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("compile schema: %w", err)
	}
	return compiled, nil
}

var englishPrinter = message.NewPrinter(language.English)

// schemaFieldError turns a validation failure into the first field it
// names, with a reason a client can act on.
func schemaFieldError(err error) *FieldError {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &FieldError{Reason: err.Error()}
	}
	for len(ve.Causes) > 0 {
		ve = ve.Causes[0]
	}
	field := instancePath(ve.InstanceLocation)
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		return &FieldError{Field: joinPath(field, k.Missing[0]), Reason: "is required"}
	case *kind.AdditionalProperties:
		return &FieldError{Field: joinPath(field, k.Properties[0]), Reason: "unknown field"}
	case *kind.Type:
		return &FieldError{Field: field, Reason: fmt.Sprintf("must be %s, not %s", jsonTypeList(k.Want), article(k.Got))}
	case *kind.Minimum:
		return &FieldError{Field: field, Reason: "must be at least " + k.Want.RatString()}
	case *kind.Maximum:
		return &FieldError{Field: field, Reason: "must be at most " + k.Want.RatString()}
	case *kind.MinLength:
		return &FieldError{Field: field, Reason: fmt.Sprintf("must be at least %d %s", k.Want, plural(k.Want, "character"))}
	case *kind.MaxLength:
		return &FieldError{Field: field, Reason: fmt.Sprintf("must be at most %d %s", k.Want, plural(k.Want, "character"))}
	default:
		return &FieldError{Field: field, Reason: ve.ErrorKind.LocalizedString(englishPrinter)}
	}
}

func instancePath(loc []string) string {
	var b strings.Builder
	for _, part := range loc {
		if part != "" && strings.Trim(part, "0123456789") == "" {
			b.WriteString("[" + part + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(part)
	}
	return b.String()
}

func joinPath(parent, field string) string {
	if parent == "" {
		return field
	}
	return parent + "." + field
}

func jsonTypeList(types []string) string {
	named := make([]string, len(types))
	for i, t := range types {
		named[i] = article(t)
	}
	return strings.Join(named, " or ")
}

// goJSONType is the JSON type a Go kind decodes from.
func goJSONType(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "integer"
	case reflect.Float32, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice, reflect.Array:
		return "array"
	case reflect.Map, reflect.Struct:
		return "object"
	default:
		return "string"
	}
}

// article names a JSON type as a client should read it.
func article(jsonType string) string {
	switch jsonType {
	case "integer", "object", "array":
		return "an " + jsonType
	case "null":
		return "null"
	case "boolean":
		return "true or false"
	default:
		return "a " + jsonType
	}
}

func plural(n int, noun string) string {
	if n == 1 {
		return noun
	}
	return noun + "s"
}
