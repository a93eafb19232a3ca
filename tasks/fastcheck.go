package tasks

import (
	"bytes"
	"encoding"
	"encoding/json"
	"reflect"
	"strings"
	"unicode/utf8"
)

// fastCheck checks arguments against a simple schema on their decoded Go
// value, without the JSON Schema library, whose decode to a generic
// document and validation cost a submit more than the rest of the check.
// It only ever vouches: arguments it accepts, the schema accepts, and
// they decode to the same value; for anything else (a rule broken, a
// null, a key in another spelling, a schema keyword it does not know)
// the library decides, and its answer and error stand.
type fastCheck struct {
	// props are the schema's properties by name; a key of the arguments
	// not among them, or spelled otherwise (Go's decoder folds case), is
	// the library's to judge.
	props    map[string]int
	rules    []fieldRule
	required []int
}

// fieldRule is one property's rules and the struct field it decodes to.
type fieldRule struct {
	field          []int
	kind           reflect.Kind // String, Int or Bool
	minLen, maxLen int          // in characters; -1 for no bound
	min, max       *int64
	enum           []string
}

// newFastCheck returns the fast check of schema for arguments of type
// args, or nil when the schema says something it cannot check exactly:
// anything but an object of string, integer and boolean properties with
// length, integer range and string enum rules, and no others allowed.
func newFastCheck(schema json.RawMessage, args reflect.Type) *fastCheck {
	var top map[string]json.RawMessage
	if json.Unmarshal(schema, &top) != nil || args.Kind() != reflect.Struct {
		return nil
	}
	var s struct {
		Type                 string                                `json:"type"`
		Properties           map[string]map[string]json.RawMessage `json:"properties"`
		Required             []string                              `json:"required"`
		AdditionalProperties *bool                                 `json:"additionalProperties"`
	}
	if json.Unmarshal(schema, &s) != nil || s.Type != "object" || s.AdditionalProperties == nil || *s.AdditionalProperties {
		return nil
	}
	for key := range top {
		switch key {
		case "type", "properties", "required", "additionalProperties":
		default:
			return nil
		}
	}
	fields := jsonFields(args)
	if fields == nil {
		return nil
	}
	f := &fastCheck{props: map[string]int{}}
	for name, prop := range s.Properties {
		field, ok := fields[name]
		if !ok {
			return nil
		}
		rule, ok := newFieldRule(prop, field)
		if !ok {
			return nil
		}
		f.props[name] = len(f.rules)
		f.rules = append(f.rules, rule)
	}
	for _, name := range s.Required {
		i, ok := f.props[name]
		if !ok {
			return nil
		}
		f.required = append(f.required, i)
	}
	return f
}

// jsonFields maps the JSON names of a struct's fields to the fields, or
// returns nil if any field decodes in a way the fast check does not know
// (embedded, options such as ",string").
func jsonFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		sf := t.Field(i)
		if sf.Anonymous {
			return nil
		}
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if opts != "" && opts != "omitempty" && opts != "omitzero" {
			return nil
		}
		if name == "" {
			name = sf.Name
		}
		out[name] = sf
	}
	return out
}

// newFieldRule reads one property's rules for field; false when the
// property or the field's type is beyond the fast check.
func newFieldRule(prop map[string]json.RawMessage, field reflect.StructField) (fieldRule, bool) {
	rule := fieldRule{field: field.Index, minLen: -1, maxLen: -1}
	if decodesItself(field.Type) {
		// What was sent and what the field holds may differ (a number
		// given as a string, a case folded): only the library sees the
		// former.
		return rule, false
	}
	var typ string
	if json.Unmarshal(prop["type"], &typ) != nil {
		return rule, false
	}
	switch {
	case typ == "string" && field.Type.Kind() == reflect.String:
		rule.kind = reflect.String
	case typ == "integer" && field.Type.Kind() == reflect.Int:
		rule.kind = reflect.Int
	case typ == "boolean" && field.Type.Kind() == reflect.Bool:
		rule.kind = reflect.Bool
	default:
		return rule, false
	}
	for key, value := range prop {
		ok := true
		switch key {
		case "type", "description", "title", "default":
		case "minLength":
			ok = rule.kind == reflect.String && json.Unmarshal(value, &rule.minLen) == nil && rule.minLen >= 0
		case "maxLength":
			ok = rule.kind == reflect.String && json.Unmarshal(value, &rule.maxLen) == nil && rule.maxLen >= 0
		case "minimum":
			rule.min, ok = integerBound(value)
			ok = ok && rule.kind == reflect.Int
		case "maximum":
			rule.max, ok = integerBound(value)
			ok = ok && rule.kind == reflect.Int
		case "enum":
			ok = rule.kind == reflect.String && json.Unmarshal(value, &rule.enum) == nil && len(rule.enum) > 0
		default:
			ok = false
		}
		if !ok {
			return rule, false
		}
	}
	return rule, true
}

var (
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decodesItself reports whether t has its own JSON or text decoding.
func decodesItself(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return t.Implements(jsonUnmarshaler) || p.Implements(jsonUnmarshaler) ||
		t.Implements(textUnmarshaler) || p.Implements(textUnmarshaler)
}

// integerBound reads a minimum or maximum that is an integer, written as
// one; a bound such as 1.5 or 1e3 is the library's to apply.
func integerBound(raw json.RawMessage) (*int64, bool) {
	var n json.Number
	if json.Unmarshal(raw, &n) != nil {
		return nil, false
	}
	v, err := n.Int64()
	if err != nil {
		return nil, false
	}
	return &v, true
}

// accepts reports whether raw, which decoded to args without error, is
// valid under the schema. False means "ask the library", not "invalid".
func (f *fastCheck) accepts(raw []byte, args reflect.Value) bool {
	// A null decodes to Go's zero value, which the schema's types refuse.
	// "null" inside a string only sends the arguments to the library.
	if bytes.Contains(raw, []byte("null")) {
		return false
	}
	var present [64]bool
	if len(f.rules) > len(present) {
		return false
	}
	ok := topLevelKeys(raw, func(key []byte) bool {
		i, known := f.props[string(key)]
		if known {
			present[i] = true
		}
		return known
	})
	if !ok {
		return false
	}
	for _, i := range f.required {
		if !present[i] {
			return false
		}
	}
	for i, rule := range f.rules {
		if present[i] && !rule.holds(args.FieldByIndex(rule.field)) {
			return false
		}
	}
	return true
}

// holds reports whether the field's decoded value v keeps the rule.
func (r fieldRule) holds(v reflect.Value) bool {
	switch r.kind {
	case reflect.String:
		s := v.String()
		n := utf8.RuneCountInString(s)
		if r.minLen >= 0 && n < r.minLen || r.maxLen >= 0 && n > r.maxLen {
			return false
		}
		if r.enum != nil {
			for _, e := range r.enum {
				if s == e {
					return true
				}
			}
			return false
		}
	case reflect.Int:
		n := v.Int()
		if r.min != nil && n < *r.min || r.max != nil && n > *r.max {
			return false
		}
	}
	return true
}

// topLevelKeys calls visit with each key of the JSON object raw, as
// written, until visit returns false. It returns false then, and for
// anything but one object whose keys have no escapes (Go's decoder reads
// the first value and leaves what follows; the library refuses it). raw
// must start with valid JSON.
func topLevelKeys(raw []byte, visit func(key []byte) bool) bool {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return false
	}
	i = skipSpace(raw, i+1)
	if i < len(raw) && raw[i] == '}' {
		return skipSpace(raw, i+1) == len(raw)
	}
	for i < len(raw) && raw[i] == '"' {
		end := i + 1
		for end < len(raw) && raw[end] != '"' {
			if raw[end] == '\\' {
				return false
			}
			end++
		}
		if end >= len(raw) || !visit(raw[i+1:end]) {
			return false
		}
		i = skipSpace(raw, end+1)
		if i >= len(raw) || raw[i] != ':' {
			return false
		}
		i = skipSpace(raw, skipValue(raw, skipSpace(raw, i+1)))
		if i >= len(raw) {
			return false
		}
		switch raw[i] {
		case '}':
			return skipSpace(raw, i+1) == len(raw)
		case ',':
			i = skipSpace(raw, i+1)
		default:
			return false
		}
	}
	return false
}

func skipSpace(raw []byte, i int) int {
	for i < len(raw) && (raw[i] == ' ' || raw[i] == '\t' || raw[i] == '\n' || raw[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value starting at i.
func skipValue(raw []byte, i int) int {
	if i >= len(raw) {
		return i
	}
	switch raw[i] {
	case '"':
		return skipString(raw, i)
	case '{', '[':
		depth := 0
		for i < len(raw) {
			switch raw[i] {
			case '"':
				i = skipString(raw, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default:
		for i < len(raw) && strings.IndexByte(",}] \t\n\r", raw[i]) < 0 {
			i++
		}
		return i
	}
}

// skipString returns the index just past the JSON string whose opening
// quote is at i.
func skipString(raw []byte, i int) int {
	i++
	for i < len(raw) && raw[i] != '"' {
		if raw[i] == '\\' {
			i++
		}
		i++
	}
	return i + 1
}
