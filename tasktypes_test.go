package main

import (
	"encoding/json"
	"net/http"
	"testing"

	"errand/tasks"
)

func TestTaskTypesListsEachTypeWithItsSchemaAndPolicy(t *testing.T) {
	f := newHandlerFixture(t)
	var types []struct {
		Name        string          `json:"name"`
		Description string          `json:"description"`
		ArgsSchema  json.RawMessage `json:"args_schema"`
		Policy      policyJSON      `json:"policy"`
	}
	decodeAnswer(t, f.serve(t, "GET", "/api/task-types", "", nil), http.StatusOK, &types)
	if len(types) != 2 || types[0].Name != tasks.HeavyTaskName || types[1].Name != tasks.WelcomeEmailName {
		t.Fatalf("task types %+v, want process_heavy_task and send_welcome_email", types)
	}
	for _, tt := range types {
		var schema struct {
			Type     string   `json:"type"`
			Required []string `json:"required"`
		}
		if err := json.Unmarshal(tt.ArgsSchema, &schema); err != nil || schema.Type != "object" || len(schema.Required) == 0 || tt.Description == "" {
			t.Errorf("%s: schema %s (%v), description %q; want an object schema with required fields, and a description", tt.Name, tt.ArgsSchema, err, tt.Description)
		}
	}
	if p := types[1].Policy; p.MaxRetries != 3 || p.BackoffSeconds != 1 || p.BackoffMaxSecs != 600 || p.Priority != "normal" {
		t.Errorf("send_welcome_email policy %+v, want the guide's: 3 retries from 1 s to 600 s, normal priority", p)
	}
}
