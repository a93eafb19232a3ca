package main

import (
	"encoding/json"
	"net/http"
	"slices"
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
	var names []string
	for _, tt := range types {
		names = append(names, tt.Name)
	}
	want := []string{tasks.MonthlyReportName, tasks.ImportCSVName, tasks.HeavyTaskName, tasks.ProcessImageName, tasks.WelcomeEmailName}
	if !slices.Equal(names, want) {
		t.Fatalf("task types %v, want %v in name order", names, want)
	}
	// The Part 6 file jobs take one of two sources, a rule of their
	// Validate, so their schemas name no required field.
	needsFields := map[string]bool{tasks.MonthlyReportName: true, tasks.HeavyTaskName: true, tasks.WelcomeEmailName: true}
	for _, tt := range types {
		var schema struct {
			Type       string                     `json:"type"`
			Required   []string                   `json:"required"`
			Properties map[string]json.RawMessage `json:"properties"`
		}
		if err := json.Unmarshal(tt.ArgsSchema, &schema); err != nil || schema.Type != "object" || len(schema.Properties) == 0 || (len(schema.Required) > 0) != needsFields[tt.Name] || tt.Description == "" {
			t.Errorf("%s: schema %s (%v), description %q; want an object schema with its properties (required ones: %v), and a description", tt.Name, tt.ArgsSchema, err, tt.Description, needsFields[tt.Name])
		}
	}
	if p := types[4].Policy; p.MaxRetries != 3 || p.BackoffSeconds != 1 || p.BackoffMaxSecs != 600 || p.Priority != "normal" {
		t.Errorf("send_welcome_email policy %+v, want the guide's: 3 retries from 1 s to 600 s, normal priority", p)
	}
}
