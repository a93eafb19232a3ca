package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// The console's submit form, drawn from the task types' argument schemas
// (GET /api/task-types), so a new task type gets its form with no change
// here.

// argSchema is the part of a JSON Schema property the form uses.
type argSchema struct {
	Type        string      `json:"type"`
	Description string      `json:"description"`
	Default     any         `json:"default"`
	Minimum     *float64    `json:"minimum"`
	Maximum     *float64    `json:"maximum"`
	MaxLength   *int        `json:"maxLength"`
	Enum        []any       `json:"enum"`
	OneOf       []argSchema `json:"oneOf"`
}

// formField is one input of the form.
type formField struct {
	Name      string
	Kind      string // text, textarea, integer, number, checkbox, select, json
	Value     string
	Checked   bool
	Options   []string
	Required  bool
	Min, Max  string
	MaxLength int
	Help      string
	Error     string
	// intOrString: a field that takes an integer or a string (a user id),
	// sent as a number when it is one.
	intOrString bool
	// choices are a select's values as the schema has them, by option.
	choices []any
}

type submitPage struct {
	Types    []taskTypeJSON
	Type     *taskTypeJSON
	Fields   []formField
	Priority string
	Delay    string
	Error    string
	// PriorityError and DelayError are errors of the form's own fields.
	PriorityError, DelayError string
	// Invalid names every field in error, for the alert atop the form.
	Invalid string
}

func (c *console) taskTypes(ctx context.Context) ([]taskTypeJSON, error) {
	var types []taskTypeJSON
	_, err := c.api.call(ctx, http.MethodGet, "/api/task-types", nil, &types)
	return types, err
}

// submitForm is the form for one task type (?type=), or the choice of a
// type.
func (c *console) submitForm(w http.ResponseWriter, r *http.Request) error {
	types, err := c.taskTypes(r.Context())
	if err != nil {
		return err
	}
	p := submitPage{Types: types, Priority: "normal"}
	if name := r.URL.Query().Get("type"); name != "" {
		i := slices.IndexFunc(types, func(t taskTypeJSON) bool { return t.Name == name })
		if i < 0 {
			return &apiError{status: http.StatusNotFound, code: "not_found", message: fmt.Sprintf("There is no task type %q.", name)}
		}
		p.Type = &types[i]
		if p.Fields, err = formFields(types[i].ArgsSchema); err != nil {
			return fmt.Errorf("draw the form of %s: %w", name, err)
		}
		p.Priority = types[i].Policy.Priority
	}
	c.render(w, r, http.StatusOK, "submit", "Submit a task", p)
	return nil
}

// submitTask submits the form's task through POST /api/tasks and opens
// its page; the API's objections are shown on the form, by field.
func (c *console) submitTask(w http.ResponseWriter, r *http.Request) error {
	types, err := c.taskTypes(r.Context())
	if err != nil {
		return err
	}
	name := r.PostFormValue("type")
	i := slices.IndexFunc(types, func(t taskTypeJSON) bool { return t.Name == name })
	if i < 0 {
		return invalidField("type", "there is no task type %q", name)
	}
	p := submitPage{Types: types, Type: &types[i], Priority: r.PostFormValue("priority"), Delay: strings.TrimSpace(r.PostFormValue("countdown"))}
	if p.Fields, err = formFields(types[i].ArgsSchema); err != nil {
		return fmt.Errorf("draw the form of %s: %w", name, err)
	}
	args, ok := readArgs(r, p.Fields)
	req := map[string]any{"type": name, "args": args, "priority": p.Priority}
	if p.Delay != "" {
		if isJSONNumber(p.Delay) {
			req["countdown"] = json.Number(p.Delay)
		} else {
			p.DelayError, ok = "must be a number of seconds", false
		}
	}
	if ok {
		var answer taskAccepted
		_, err := c.api.call(r.Context(), http.MethodPost, "/api/tasks", req, &answer)
		if err == nil {
			http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(answer.TaskID)+"?done=submit", http.StatusSeeOther)
			return nil
		}
		if id := unconfirmedTask(err); id != "" {
			http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(id)+"?done=unconfirmed", http.StatusSeeOther)
			return nil
		}
		if !isStatus(err, http.StatusBadRequest, http.StatusUnprocessableEntity) {
			return err
		}
		p.showError(err)
	}
	p.Invalid = p.invalidFields()
	c.render(w, r, http.StatusUnprocessableEntity, "submit", "Submit a task", p)
	return nil
}

// invalidFields lists the fields in error, as "name: error; …".
func (p *submitPage) invalidFields() string {
	var list []string
	for _, f := range p.Fields {
		if f.Error != "" {
			list = append(list, f.Name+" "+strings.TrimPrefix(f.Error, "args."+f.Name+": "))
		}
	}
	for name, e := range map[string]string{"priority": p.PriorityError, "countdown": p.DelayError} {
		if e != "" {
			list = append(list, name+" "+strings.TrimPrefix(e, name+": "))
		}
	}
	slices.Sort(list)
	return strings.Join(list, "; ")
}

// showError puts the API's objection next to the field it names.
func (p *submitPage) showError(err error) {
	var ae *apiError
	if !errors.As(err, &ae) {
		p.Error = apiMessage(err)
		return
	}
	field := strings.TrimPrefix(ae.field, "args.")
	switch field {
	case "priority":
		p.PriorityError = ae.message
		return
	case "countdown":
		p.DelayError = ae.message
		return
	}
	for i := range p.Fields {
		if p.Fields[i].Name == field || strings.HasPrefix(field, p.Fields[i].Name+".") {
			p.Fields[i].Error = ae.message
			return
		}
	}
	p.Error = ae.message
}

// readArgs reads the form's arguments as JSON values of their schema's
// types; a value that is not one is marked on its field.
func readArgs(r *http.Request, fields []formField) (map[string]any, bool) {
	args, ok := map[string]any{}, true
	for i := range fields {
		f := &fields[i]
		v := strings.TrimSpace(r.PostFormValue("arg." + f.Name))
		f.Value = v
		if f.Kind == "checkbox" {
			f.Checked = v != ""
			args[f.Name] = f.Checked
			continue
		}
		if v == "" {
			continue
		}
		switch {
		case f.Kind == "integer" || f.Kind == "number" || (f.intOrString && isInteger(v)):
			if !isJSONNumber(v) {
				f.Error, ok = "must be a number", false
				continue
			}
			args[f.Name] = json.Number(v)
		case f.Kind == "select":
			i := slices.Index(f.Options, v)
			if i < 0 {
				f.Error, ok = "must be one of "+strings.Join(f.Options, ", "), false
				continue
			}
			args[f.Name] = f.choices[i]
		case f.Kind == "json":
			dec := json.NewDecoder(strings.NewReader(v))
			dec.UseNumber()
			var parsed any
			if err := dec.Decode(&parsed); err != nil || dec.More() {
				f.Error, ok = "must be one JSON value", false
				continue
			}
			args[f.Name] = parsed
		default:
			args[f.Name] = v
		}
	}
	return args, ok
}

func isInteger(s string) bool {
	_, err := strconv.ParseInt(s, 10, 64)
	return err == nil
}

// isJSONNumber reports whether s is a number as JSON writes one.
func isJSONNumber(s string) bool {
	var v any
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil || dec.More() {
		return false
	}
	_, ok := v.(json.Number)
	return ok
}

// formFields are the inputs of an argument schema, in its properties'
// order.
func formFields(schema json.RawMessage) ([]formField, error) {
	var s struct {
		Properties json.RawMessage `json:"properties"`
		Required   []string        `json:"required"`
	}
	if err := json.Unmarshal(schema, &s); err != nil {
		return nil, fmt.Errorf("read the schema: %w", err)
	}
	names, err := objectKeys(s.Properties)
	if err != nil {
		return nil, fmt.Errorf("read the schema's properties: %w", err)
	}
	var props map[string]argSchema
	if err := json.Unmarshal(s.Properties, &props); err != nil {
		return nil, fmt.Errorf("read the schema's properties: %w", err)
	}
	fields := make([]formField, 0, len(names))
	for _, name := range names {
		fields = append(fields, formFieldOf(name, props[name], slices.Contains(s.Required, name)))
	}
	return fields, nil
}

func formFieldOf(name string, p argSchema, required bool) formField {
	f := formField{Name: name, Required: required, Help: p.Description}
	if p.MaxLength != nil {
		f.MaxLength = *p.MaxLength
	}
	number := func(v *float64) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'f', -1, 64)
	}
	f.Min, f.Max = number(p.Minimum), number(p.Maximum)
	switch {
	case len(p.Enum) > 0:
		f.Kind = "select"
		for _, e := range p.Enum {
			f.Options, f.choices = append(f.Options, fmt.Sprint(e)), append(f.choices, e)
		}
	case p.Type == "boolean":
		f.Kind = "checkbox"
		f.Checked = p.Default == true
	case p.Type == "integer" || p.Type == "number":
		f.Kind = p.Type
	case p.Type == "string" && f.MaxLength > 200:
		f.Kind = "textarea"
	case p.Type == "string":
		f.Kind = "text"
	case len(p.OneOf) > 0 && slices.ContainsFunc(p.OneOf, func(o argSchema) bool { return o.Type == "integer" }):
		f.Kind, f.intOrString = "text", true
	default:
		f.Kind = "json"
	}
	if p.Default != nil && f.Kind != "checkbox" {
		if f.Kind == "json" {
			b, _ := json.Marshal(p.Default)
			f.Value = string(b)
		} else {
			f.Value = fmt.Sprint(p.Default)
		}
	}
	return f
}

// objectKeys are the keys of a JSON object in the order it has them.
func objectKeys(obj json.RawMessage) ([]string, error) {
	if len(obj) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(obj))
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}
