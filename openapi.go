package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"unicode"

	schemagen "github.com/invopop/jsonschema"

	"errand/tasks"
)

// operation documents a route in the OpenAPI document.
type operation struct {
	tag, summary, description string
	// params describes the path's {parameters}.
	params map[string]string
	query  []param
	// body is a value of the JSON request body's type; nil for none.
	body         any
	optionalBody bool
	// upload: the body is a file, as multipart/form-data or raw.
	upload    bool
	responses []response
}

type param struct{ name, typ, description string }

// response is an answer of an operation: body is a value of its JSON
// type (or a marker type below), nil for none.
type response struct {
	status      int
	body        any
	description string
}

// Marker types for what is not a JSON object of a Go type.
type (
	anyJSON     struct{} // any JSON object
	promText    struct{} // Prometheus' text format
	eventStream struct{} // text/event-stream
	fileBytes   struct{} // a stored file's bytes, in its own type
	htmlPage    struct{} // a web page
	staticFile  struct{} // a script or a style sheet
	// taskRequestDoc is POST /api/tasks's body, one shape per task type.
	taskRequestDoc  struct{}
	batchRequestDoc struct{}
)

// reportRequestDoc is /generate-report's optional JSON body.
type reportRequestDoc struct {
	UserID tasks.UserID `json:"user_id,omitempty"`
	Month  string       `json:"month,omitempty" jsonschema:"pattern=^[0-9]{4}-(0[1-9]|1[0-2])$"`
	Email  string       `json:"email,omitempty" jsonschema:"maxLength=254"`
}

// handleOpenAPI is GET /openapi.json: the OpenAPI 3.1 document of the
// route table, built once, with the registry's argument schemas.
func handleOpenAPI(d serverDeps) handlerFunc {
	build := sync.OnceValues(func() ([]byte, error) {
		return openAPIDocument(routeTable(d), d.registry, buildVersion())
	})
	return func(w http.ResponseWriter, r *http.Request) error {
		doc, err := build()
		if err != nil {
			return fmt.Errorf("build the OpenAPI document: %w", err)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(doc)
		return nil
	}
}

// openAPIDocument documents routes. Schemas of request and response
// bodies are reflected from their Go types, so they say what errand
// sends; the task request's argument schemas are the registry's.
func openAPIDocument(routes []route, registry *tasks.Registry, version string) ([]byte, error) {
	b := docBuilder{schemas: map[string]any{}}
	paths := map[string]map[string]any{}
	for _, rt := range routes {
		method, path, ok := strings.Cut(rt.pattern, " ")
		if !ok {
			return nil, fmt.Errorf("route %q has no method", rt.pattern)
		}
		op, err := b.operation(method, path, rt, registry)
		if err != nil {
			return nil, fmt.Errorf("route %s: %w", rt.pattern, err)
		}
		if paths[path] == nil {
			paths[path] = map[string]any{}
		}
		paths[path][strings.ToLower(method)] = op
	}
	doc := map[string]any{
		"openapi": "3.1.0",
		"info": map[string]any{
			"title":   "errand",
			"version": version,
			"description": "A task queue service: submit work over HTTP, RabbitMQ carries it, workers run it, " +
				"Redis keeps its progress and MongoDB its result. The guide's routes keep the guide's shapes.",
		},
		"paths": paths,
		"tags": []any{
			map[string]any{"name": "Tasks", "description": "Submit tasks of any registered type, follow, list, cancel and retry them."},
			map[string]any{"name": "The guide's routes", "description": "The routes of the guide errand rebuilds, in the guide's shapes."},
			map[string]any{"name": "Files", "description": "Files for the tasks that work on files, and their outputs."},
			map[string]any{"name": "Items", "description": "The guide's CRUD items."},
			map[string]any{"name": "Schedules", "description": "Periodic tasks."},
			map[string]any{"name": "Operations", "description": "Health, metrics and this reference."},
		},
		"components": map[string]any{
			"schemas": b.schemas,
			"securitySchemes": map[string]any{
				"apiKey": map[string]any{"type": "apiKey", "in": "header", "name": "X-API-Key",
					"description": "One of API_KEYS; without API_KEYS the API is open."},
				"bearer": map[string]any{"type": "http", "scheme": "bearer", "description": "The same key as a bearer token."},
			},
		},
	}
	return json.MarshalIndent(doc, "", "  ")
}

type docBuilder struct {
	schemas map[string]any
}

var pathParam = regexp.MustCompile(`\{([^}]+)\}`)

func (b *docBuilder) operation(method, path string, rt route, registry *tasks.Registry) (map[string]any, error) {
	doc := rt.doc
	if doc.summary == "" || len(doc.responses) == 0 {
		return nil, fmt.Errorf("no summary or no responses documented")
	}
	op := map[string]any{
		"operationId": operationID(method, path),
		"summary":     doc.summary,
		"tags":        []string{doc.tag},
	}
	if doc.description != "" {
		op["description"] = doc.description
	}
	var params []any
	for _, m := range pathParam.FindAllStringSubmatch(path, -1) {
		desc, ok := doc.params[m[1]]
		if !ok {
			return nil, fmt.Errorf("path parameter %s is not described", m[1])
		}
		params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "description": desc, "schema": map[string]any{"type": "string"}})
	}
	if len(params) != len(doc.params) {
		return nil, fmt.Errorf("describes parameters its path lacks")
	}
	for _, q := range doc.query {
		params = append(params, map[string]any{"name": q.name, "in": "query", "description": q.description, "schema": map[string]any{"type": q.typ}})
	}
	if params != nil {
		op["parameters"] = params
	}
	switch {
	case doc.upload:
		op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
			"multipart/form-data": map[string]any{"schema": map[string]any{"type": "object", "required": []string{"file"},
				"properties": map[string]any{"file": map[string]any{"type": "string", "contentMediaType": "application/octet-stream"}}}},
			"*/*": map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": "application/octet-stream"}},
		}}
	case doc.body != nil:
		schema, err := b.bodySchema(doc.body, registry, true)
		if err != nil {
			return nil, err
		}
		op["requestBody"] = map[string]any{"required": !doc.optionalBody, "content": map[string]any{"application/json": map[string]any{"schema": schema}}}
	}
	responses := map[string]any{}
	all := doc.responses
	if !rt.open {
		all = append(all[:len(all):len(all)],
			response{401, errorBody{}, "no valid API key (when API_KEYS is set)"},
			response{429, errorBody{}, "over RATE_LIMIT"})
		// The empty requirement: without API_KEYS the API is open.
		op["security"] = []any{map[string]any{"apiKey": []string{}}, map[string]any{"bearer": []string{}}, map[string]any{}}
	}
	all = append(all[:len(all):len(all)], response{500, errorBody{}, "an internal error (details in errand's log)"})
	for _, r := range all {
		key := fmt.Sprint(r.status)
		if _, dup := responses[key]; dup {
			continue
		}
		out := map[string]any{"description": r.description}
		content, err := b.responseContent(r.body)
		if err != nil {
			return nil, err
		}
		if content != nil {
			out["content"] = content
		}
		responses[key] = out
	}
	op["responses"] = responses
	return op, nil
}

func (b *docBuilder) responseContent(body any) (map[string]any, error) {
	switch body.(type) {
	case nil:
		return nil, nil
	case promText:
		return map[string]any{"text/plain": map[string]any{"schema": map[string]any{"type": "string"}}}, nil
	case eventStream:
		return map[string]any{"text/event-stream": map[string]any{"schema": map[string]any{"type": "string"}}}, nil
	case htmlPage:
		return map[string]any{"text/html": map[string]any{"schema": map[string]any{"type": "string"}}}, nil
	case staticFile:
		return map[string]any{"text/javascript": map[string]any{"schema": map[string]any{"type": "string"}},
			"text/css": map[string]any{"schema": map[string]any{"type": "string"}}}, nil
	case fileBytes:
		return map[string]any{"*/*": map[string]any{"schema": map[string]any{"type": "string", "contentMediaType": "application/octet-stream"}}}, nil
	}
	schema, err := b.bodySchema(body, nil, false)
	if err != nil {
		return nil, err
	}
	return map[string]any{"application/json": map[string]any{"schema": schema}}, nil
}

// bodySchema is a reference to body's type's schema, added to the
// components on first use. In a request's body, only the fields tagged
// required are; in an answer, every field without omitempty is there.
func (b *docBuilder) bodySchema(body any, registry *tasks.Registry, request bool) (map[string]any, error) {
	t := reflect.TypeOf(body)
	if t.Kind() == reflect.Slice {
		item, err := b.bodySchema(reflect.Zero(t.Elem()).Interface(), registry, request)
		if err != nil {
			return nil, err
		}
		return map[string]any{"type": "array", "items": item}, nil
	}
	name := schemaName(t)
	if _, done := b.schemas[name]; !done {
		var schema any
		var err error
		switch body.(type) {
		case anyJSON:
			schema = map[string]any{"type": "object"}
		case taskRequestDoc:
			schema, err = taskRequestSchema(registry)
		case workflowRequestDoc:
			schema, err = b.workflowRequestSchema(registry)
		case batchRequestDoc:
			var task map[string]any
			if task, err = b.bodySchema(taskRequestDoc{}, registry, true); err == nil {
				schema = map[string]any{"type": "object", "required": []string{"tasks"}, "additionalProperties": false,
					"properties": map[string]any{"tasks": map[string]any{"type": "array", "minItems": 1, "maxItems": maxBatchTasks, "items": task}}}
			}
		default:
			schema, err = reflectedSchema(t, request)
		}
		if err != nil {
			return nil, fmt.Errorf("schema of %s: %w", t, err)
		}
		b.schemas[name] = schema
	}
	return map[string]any{"$ref": "#/components/schemas/" + name}, nil
}

// reflectedSchema is the JSON Schema of a Go type's JSON, as
// invopop/jsonschema reads it, allowing no other properties. Required
// are, in a request, the fields tagged so; in an answer, those without
// omitempty.
func reflectedSchema(t reflect.Type, request bool) (map[string]any, error) {
	r := schemagen.Reflector{DoNotReference: true, ExpandedStruct: true, Anonymous: true, RequiredFromJSONSchemaTags: request}
	raw, err := json.Marshal(r.ReflectFromType(t))
	if err != nil {
		return nil, err
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		return nil, err
	}
	delete(schema, "$schema")
	delete(schema, "$id")
	openSchemas(schema)
	return schema, nil
}

// openSchemas writes the schemas that accept anything (a json.RawMessage
// field's) as {} rather than true: the same in JSON Schema, and what
// OpenAPI 3.0 tools, which many client generators still are, can read.
func openSchemas(schema map[string]any) {
	if props, ok := schema["properties"].(map[string]any); ok {
		for name, p := range props {
			if p == true {
				props[name] = map[string]any{}
			} else if sub, ok := p.(map[string]any); ok {
				openSchemas(sub)
			}
		}
	}
	if items, ok := schema["items"].(map[string]any); ok {
		openSchemas(items)
	}
	for _, key := range []string{"oneOf", "anyOf", "allOf"} {
		if list, ok := schema[key].([]any); ok {
			for _, s := range list {
				if sub, ok := s.(map[string]any); ok {
					openSchemas(sub)
				}
			}
		}
	}
}

// schemaName names a Go type's schema: errorBody is Error, fileJSON
// File, itemResponse Item.
func schemaName(t reflect.Type) string {
	name := t.Name()
	for _, suffix := range []string{"JSON", "Response", "Body", "Doc"} {
		if trimmed := strings.TrimSuffix(name, suffix); trimmed != "" && trimmed != name {
			name = trimmed
			break
		}
	}
	r := []rune(name)
	r[0] = unicode.ToUpper(r[0])
	return string(r)
}

// operationID names an operation after its method and path:
// POST /api/tasks/{task_id}/cancel is postApiTasksTaskIdCancel.
func operationID(method, path string) string {
	var b strings.Builder
	b.WriteString(strings.ToLower(method))
	words := strings.FieldsFunc(path, func(r rune) bool { return r == '/' || r == '{' || r == '}' || r == '_' || r == '-' || r == '.' })
	for _, w := range words {
		b.WriteString(strings.ToUpper(w[:1]) + w[1:])
	}
	return b.String()
}
