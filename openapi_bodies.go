package main

import (
	"encoding/json"
	"fmt"

	"errand/tasks"
)

// The request bodies whose schemas are built, not reflected: those that
// depend on the registry's task types.

// taskRequestSchema is POST /api/tasks's body: the common fields, and
// for each registered type, its arguments' schema.
func taskRequestSchema(registry *tasks.Registry) (map[string]any, error) {
	names := registry.Names()
	var shapes []any
	for _, name := range names {
		def, _ := registry.Lookup(name)
		var args any
		if err := json.Unmarshal(def.ArgsSchema(), &args); err != nil {
			return nil, fmt.Errorf("arguments of %s: %w", name, err)
		}
		shapes = append(shapes, map[string]any{
			"title":      name,
			"properties": map[string]any{"type": map[string]any{"const": name, "description": def.Description}, "args": args},
		})
	}
	return map[string]any{
		"type":                 "object",
		"required":             []string{"type"},
		"additionalProperties": false,
		"properties": map[string]any{
			"type":            map[string]any{"type": "string", "enum": names, "description": "The task type; GET /api/task-types lists them."},
			"args":            map[string]any{"type": "object", "description": "The type's arguments."},
			"priority":        map[string]any{"type": "string", "enum": []string{"low", "normal", "high"}},
			"countdown":       map[string]any{"type": "number", "minimum": 0, "description": "Run this many seconds from now."},
			"eta":             map[string]any{"type": "string", "format": "date-time", "description": "Run at this time (RFC 3339)."},
			"idempotency_key": map[string]any{"type": "string", "maxLength": 255, "description": "Submits with the same key make one task."},
			"concurrency_key": map[string]any{"type": "string", "minLength": 1, "maxLength": maxConcurrencyKey, "description": "Tasks with the same key share its type's MAX_RUNNING_PER_KEY: at most that many run at once."},
			"callback_url":    map[string]any{"type": "string", "format": "uri", "maxLength": maxCallbackURL, "description": "POST the task's final status here, signed (Errand-Signature); needs WEBHOOK_SECRET."},
		},
		"oneOf": shapes,
	}, nil
}

// workflowRequestSchema is POST /api/workflows's body: a chain or a
// group at the top, whose steps are tasks, chains or groups (the
// WorkflowStep schema, which refers to itself).
func (b *docBuilder) workflowRequestSchema(registry *tasks.Registry) (map[string]any, error) {
	step := map[string]any{"$ref": "#/components/schemas/WorkflowStep"}
	steps := map[string]any{"type": "array", "minItems": 1, "items": step}
	// The top may also name a callback_url; a step may not.
	node := func(top bool, kind string, props map[string]any) map[string]any {
		props[kind] = steps
		if top {
			props["callback_url"] = map[string]any{"type": "string", "format": "uri", "maxLength": maxCallbackURL,
				"description": "Where the workflow's final state is POSTed, signed (needs WEBHOOK_SECRET)."}
		}
		return map[string]any{"type": "object", "required": []string{kind}, "additionalProperties": false, "properties": props}
	}
	chain := func(top bool) map[string]any { return node(top, "chain", map[string]any{}) }
	group := func(top bool) map[string]any {
		return node(top, "group", map[string]any{"then": step,
			"then_on_failure": map[string]any{"type": "boolean", "description": "Run the then step even when a member failed (its result is then null in the list)."}})
	}
	task := map[string]any{"type": "object", "required": []string{"type"}, "additionalProperties": false,
		"properties": map[string]any{
			"type":            map[string]any{"type": "string", "enum": registry.Names()},
			"args":            map[string]any{"type": "object", "description": "The type's arguments, as GET /api/task-types describes them."},
			"priority":        map[string]any{"type": "string", "enum": []string{"low", "normal", "high"}},
			"concurrency_key": map[string]any{"type": "string", "minLength": 1, "maxLength": maxConcurrencyKey},
		}}
	b.schemas["WorkflowStep"] = map[string]any{"oneOf": []any{task, chain(false), group(false)}}
	return map[string]any{"oneOf": []any{chain(true), group(true)}}, nil
}
