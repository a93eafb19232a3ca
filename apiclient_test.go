package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"testing"
	"time"

	"errand/tasks"
	"errand/tools/apiclient"
)

// TestGeneratedClient runs the Go client oapi-codegen generated from
// /openapi.json (tools/apiclient) against errand: a client made by a
// common generator, from the document alone, submits a task, follows it
// to SUCCESS and uses the items, with the API key scheme the document
// declares.
func TestGeneratedClient(t *testing.T) {
	env := realStack(t)
	env["HEAVY_TASK_DELAY"] = "1ms"
	env["API_KEYS"] = "generated-client-key"
	base := startErrand(t, env)
	ctx := context.Background()
	withKey := func(_ context.Context, r *http.Request) error {
		r.Header.Set("X-API-Key", "generated-client-key")
		return nil
	}
	c, err := apiclient.NewClientWithResponses(base, apiclient.WithRequestEditorFn(withKey))
	if err != nil {
		t.Fatal(err)
	}

	types, err := c.GetApiTaskTypesWithResponse(ctx)
	if err != nil || types.JSON200 == nil || len(*types.JSON200) != len(tasks.NewRegistry(tasks.Config{}).Names()) {
		t.Fatalf("task types: %v, %s", err, types.Body)
	}
	args := map[string]any{"data": "generated", "iterations": 2}
	sub, err := c.PostApiTasksWithResponse(ctx, apiclient.TaskRequest{Type: "process_heavy_task", Args: &args})
	if err != nil || sub.JSON202 == nil || sub.JSON202.TaskId == "" {
		t.Fatalf("submit: %v, %d %s", err, sub.StatusCode(), sub.Body)
	}
	var task *apiclient.Task
	waitFor(t, 20*time.Second, "the task to succeed", func() bool {
		got, err := c.GetApiTasksTaskIdWithResponse(ctx, sub.JSON202.TaskId)
		if err != nil || got.JSON200 == nil {
			t.Fatalf("get task: %v, %s", err, got.Body)
		}
		task = got.JSON200
		return task.Status == stateSuccess
	})
	if task.Type != "process_heavy_task" || task.Result == nil || (*task.Result)["total_processed"] != 2.0 {
		t.Errorf("task as the client reads it: %+v", task)
	}
	bad, err := c.PostApiTasksWithResponse(ctx, apiclient.TaskRequest{Type: "process_heavy_task"})
	if err != nil || bad.JSON422 == nil || bad.JSON422.Field == nil || *bad.JSON422.Field != "args.data" {
		t.Errorf("a submit without data: %v, %d %s; want the 422 decoded as the document's Error", err, bad.StatusCode(), bad.Body)
	}

	name, desc := "lamp", "a desk lamp"
	created, err := c.PostApiItemsWithResponse(ctx, apiclient.ItemRequest{Name: &name, Description: &desc})
	if err != nil || created.JSON201 == nil {
		t.Fatalf("create item: %v, %s", err, created.Body)
	}
	got, err := c.GetApiItemsIdWithResponse(ctx, created.JSON201.Id)
	if err != nil || got.JSON200 == nil || got.JSON200.Name != "lamp" || got.JSON200.Description == nil || *got.JSON200.Description != desc {
		t.Errorf("get item: %v, %s", err, got.Body)
	}
	noKey, err := apiclient.NewClientWithResponses(base)
	if err != nil {
		t.Fatal(err)
	}
	if refused, err := noKey.GetApiItemsIdWithResponse(ctx, created.JSON201.Id); err != nil || refused.JSON401 == nil {
		t.Errorf("without a key: %v, %d %s; want the 401 decoded", err, refused.StatusCode(), refused.Body)
	}
}

// TestGeneratedClientIsCurrent: the document the client was generated
// from is the one errand serves now, so the client cannot lag behind the
// API unnoticed.
func TestGeneratedClientIsCurrent(t *testing.T) {
	saved, err := os.ReadFile("tools/apiclient/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	current := newHandlerFixture(t).serve(t, "GET", "/openapi.json", "", nil).Body.Bytes()
	if !bytes.Equal(bytes.TrimSpace(saved), bytes.TrimSpace(current)) {
		t.Errorf("tools/apiclient/openapi.json is not the document errand serves: regenerate the client (see tools/apiclient/generate.go)")
	}
}
