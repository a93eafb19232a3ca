package main

import (
	"net/http"
)

// route is one route of errand's HTTP API: its pattern, its handler and
// its OpenAPI operation. The route table is the only list of routes: the
// server registers it and /openapi.json documents it, so neither can name
// a route the other lacks.
type route struct {
	pattern string // "METHOD /path/{param}", as http.ServeMux takes it
	handler http.Handler
	// open routes need no API key and are not rate limited.
	open bool
	// apiOnly routes are not served by a worker-only process.
	apiOnly bool
	doc     operation
}

// routeTable is every route errand serves.
func routeTable(d serverDeps) []route {
	h := func(f handlerFunc) http.Handler { return handle(d.log, f) }
	api := func(pattern string, f handlerFunc, doc operation) route {
		return route{pattern: pattern, handler: h(f), apiOnly: true, doc: doc}
	}
	taskID := "The task's id, as the submit answered it."
	workflowID := "The workflow's id, as the submit answered it."
	return []route{
		{pattern: "GET /health", handler: h(handleHealth(d.health, d.backends, d.healthTimeout, d.log, d.now)), open: true, doc: operation{
			tag: "Operations", summary: "Health of errand and of each service it uses",
			responses: []response{{200, healthResponse{}, "every service answers"}, {503, healthResponse{}, "a service does not answer"}},
		}},
		{pattern: "GET /metrics", handler: d.metrics.handler(), open: true, doc: operation{
			tag: "Operations", summary: "Prometheus metrics",
			responses: []response{{200, promText{}, "the metrics in Prometheus' text format"}},
		}},
		{pattern: "GET /openapi.json", handler: h(handleOpenAPI(d)), open: true, apiOnly: true, doc: operation{
			tag: "Operations", summary: "This document",
			responses: []response{{200, anyJSON{}, "the OpenAPI 3.1 document of errand's API"}},
		}},
		{pattern: "GET /docs", handler: h(handleDocs()), open: true, apiOnly: true, doc: operation{
			tag: "Operations", summary: "The API reference, with \"try it out\" (Swagger UI)",
			responses: []response{{200, htmlPage{}, "the page"}},
		}},
		{pattern: "GET /docs/{file}", handler: h(handleDocs()), open: true, apiOnly: true, doc: operation{
			tag: "Operations", summary: "A script or style sheet of the API reference", params: map[string]string{"file": "The asset's name."},
			responses: []response{{200, staticFile{}, "the asset"}, {404, errorBody{}, "no such asset"}},
		}},

		api("POST /api/items", handleCreateItem(d.items, d.maxBody, d.now), operation{
			tag: "Items", summary: "Create an item", body: itemRequest{},
			responses: []response{{201, itemResponse{}, "the item"}, {400, errorBody{}, "not JSON"}, {422, errorBody{}, "a field breaks a rule"}},
		}),
		api("GET /api/items", handleListItems(d.items), operation{
			tag: "Items", summary: "List items, newest first",
			query:     []param{{"skip", "integer", "items to skip"}, {"limit", "integer", "most items to return (1 to 100, default 10)"}},
			responses: []response{{200, []itemResponse{}, "a page of items"}, {422, errorBody{}, "skip or limit out of range"}},
		}),
		api("GET /api/items/{id}", handleGetItem(d.items), operation{
			tag: "Items", summary: "Get an item", params: map[string]string{"id": "The item's id."},
			responses: []response{{200, itemResponse{}, "the item"}, {404, errorBody{}, "no such item"}},
		}),
		api("PUT /api/items/{id}", handleUpdateItem(d.items, d.maxBody, d.now), operation{
			tag: "Items", summary: "Update an item's given fields", params: map[string]string{"id": "The item's id."}, body: itemRequest{},
			responses: []response{{200, itemResponse{}, "the item as updated"}, {404, errorBody{}, "no such item"}, {422, errorBody{}, "a field breaks a rule"}},
		}),
		api("DELETE /api/items/{id}", handleDeleteItem(d.items), operation{
			tag: "Items", summary: "Delete an item", params: map[string]string{"id": "The item's id."},
			responses: []response{{200, deletedJSON{}, "deleted"}, {404, errorBody{}, "no such item"}},
		}),

		api("POST /api/async/process", handleSubmitProcess(d.specs, d.submitter, d.maxBody), operation{
			tag: "The guide's routes", summary: "Submit process_heavy_task (the guide's route)", body: anyJSON{},
			description: "The body is process_heavy_task's arguments, with an optional priority.",
			responses:   submitResponses,
		}),
		api("GET /api/async/status/{task_id}", handleTaskStatus(d.reader), operation{
			tag: "The guide's routes", summary: "A task's status (the guide's route)", params: map[string]string{"task_id": taskID},
			responses: []response{{200, guideStatusJSON{}, "the task's status"}, {404, errorBody{}, "no such task"}},
		}),
		api("POST /api/send-welcome-email", handleWelcomeEmail(d.specs, d.submitter, d.maxBody), operation{
			tag: "The guide's routes", summary: "Submit send_welcome_email (the guide's route)", body: welcomeEmailRequest{}, optionalBody: true,
			query:     []param{{"user_email", "string", "the address to welcome"}, {"user_name", "string", "the name to greet"}},
			responses: submitResponses,
		}),
		api("POST /api/generate-report", handleGenerateReport(d.specs, d.submitter, d.maxBody, d.now), reportOperation),
		api("POST /generate-report", handleGenerateReport(d.specs, d.submitter, d.maxBody, d.now), reportOperation),

		api("GET /api/task-types", handleTaskTypes(d.registry), operation{
			tag: "Tasks", summary: "The task types, with the JSON Schema of their arguments",
			responses: []response{{200, []taskTypeJSON{}, "every registered type"}},
		}),
		api("POST /api/tasks", handleSubmitTask(d.specs, d.submitter, d.maxBody), operation{
			tag: "Tasks", summary: "Submit a task of any type, now or later", body: taskRequestDoc{},
			responses: submitResponses,
		}),
		api("POST /api/tasks/batch", handleSubmitBatch(d.specs, d.submitter, d.maxBody), operation{
			tag: "Tasks", summary: "Submit up to 1,000 tasks", body: batchRequestDoc{},
			responses: []response{{202, batchAnswer{}, "every task accepted"}, {207, batchAnswer{}, "some tasks accepted"}, {400, errorBody{}, "not JSON"}, {422, errorBody{}, "a task breaks a rule: none is submitted"}, {503, batchAnswer{}, "no task accepted: the broker did not confirm"}},
		}),
		api("GET /api/tasks", handleListTasks(d.reader, d.registry.Known), operation{
			tag: "Tasks", summary: "List tasks, newest first",
			query:     []param{{"status", "string", "only tasks in this state"}, {"type", "string", "only tasks of this type"}, {"concurrency_key", "string", "only tasks with this concurrency key"}, {"limit", "integer", "most tasks to return"}, {"cursor", "string", "the next_cursor of the page before"}},
			responses: []response{{200, taskListJSON{}, "a page of tasks"}, {422, errorBody{}, "a filter is not valid"}},
		}),
		api("GET /api/tasks/{task_id}", handleGetTask(d.reader), operation{
			tag: "Tasks", summary: "A task", params: map[string]string{"task_id": taskID},
			responses: []response{{200, taskJSON{}, "the task"}, {404, errorBody{}, "no such task"}},
		}),
		api("GET /api/tasks/{task_id}/events", handleTaskEvents(d.reader, d.watcher, d.shutdown), operation{
			tag: "Tasks", summary: "Follow a task as it runs (Server-Sent Events)", params: map[string]string{"task_id": taskID},
			responses: []response{{200, eventStream{}, "an event each time the task changes, until it ends"}, {404, errorBody{}, "no such task"}},
		}),
		api("POST /api/tasks/{task_id}/retry", handleRetryTask(d.reader, d.submitter), operation{
			tag: "Tasks", summary: "Run a failed or cancelled task again, as a new task", params: map[string]string{"task_id": taskID},
			responses: []response{{202, retryAccepted{}, "the new task"}, {404, errorBody{}, "no such task"}, {409, errorBody{}, "the task has not failed, or is a step of a workflow"}},
		}),
		api("POST /api/tasks/{task_id}/cancel", handleCancelTask(d.canceller), operation{
			tag: "Tasks", summary: "Cancel a queued, scheduled or running task", params: map[string]string{"task_id": taskID},
			responses: []response{{200, taskJSON{}, "the task, cancelled"}, {404, errorBody{}, "no such task"}, {409, errorBody{}, "the task has ended"}},
		}),
		api("GET /api/webhook-secret", handleWebhookSecret(d.webhooks, d.apiKeys.enabled()), operation{
			tag: "Tasks", summary: "The secret that signs the webhooks of this API key's tasks",
			responses: []response{{200, webhookSecretJSON{}, "the key's secret"}, {404, errorBody{}, "webhooks are off (no WEBHOOK_SECRET), or there are no API keys and the secret is WEBHOOK_SECRET itself"}},
		}),

		api("POST /api/workflows", d.workflows.handleSubmitWorkflow(), operation{
			tag: "Workflows", summary: "Submit a workflow: a chain, a group, or a group with a then step (a chord)", body: workflowRequestDoc{},
			description: "Every task is validated before any is queued; the workflow is accepted once the broker has confirmed its start. " +
				"A chain step starts after the step before it succeeded and gets its result (tasks.Task.Previous); a then step gets the results of the group's members, in order.",
			responses: []response{{202, workflowAccepted{}, "accepted: the broker has confirmed the workflow's start"}, {400, errorBody{}, "not JSON"},
				{422, errorBody{}, "a step breaks a rule: nothing is submitted"}, {503, errorBody{}, "not accepted: the broker or a store did not answer"}},
		}),
		api("GET /api/workflows/{workflow_id}", d.workflows.handleGetWorkflow(), operation{
			tag: "Workflows", summary: "A workflow, with every step's task id, status and result", params: map[string]string{"workflow_id": workflowID},
			responses: []response{{200, workflowJSON{}, "the workflow"}, {404, errorBody{}, "no such workflow"}, {503, errorBody{}, "a store did not answer"}},
		}),
		api("POST /api/workflows/{workflow_id}/cancel", d.workflows.handleCancelWorkflow(), operation{
			tag: "Workflows", summary: "Cancel what has not finished of a workflow", params: map[string]string{"workflow_id": workflowID},
			responses: []response{{200, workflowJSON{}, "the workflow, cancelled: steps not started end REVOKED at once, running ones when their workers stop them"}, {404, errorBody{}, "no such workflow"}, {409, errorBody{}, "every step has ended"}, {503, errorBody{}, "a store did not answer"}},
		}),

		api("GET /api/dead-letters", handleListDeadLetters(d.dead), operation{
			tag: "Dead letters", summary: "The dead-letter queue, oldest first, with the reason of each",
			query:     []param{{"limit", "integer", "most dead letters to return (1 to 100, default 10)"}},
			responses: []response{{200, deadLetterListJSON{}, "the key's dead letters among the oldest 1,000"}, {422, errorBody{}, "limit out of range"}, {503, errorBody{}, "the broker did not answer"}},
		}),
		api("POST /api/dead-letters/{task_id}/requeue", handleRequeueDeadLetter(d.dead), operation{
			tag: "Dead letters", summary: "Run a dead letter's task again, as a new task, and take it off the queue", params: map[string]string{"task_id": taskID},
			responses: []response{{202, retryAccepted{}, "the new task"}, {404, errorBody{}, "no dead letter of that task"}, {409, errorBody{}, "the task is a step of a workflow, which runs only within it"}, {422, errorBody{}, "its arguments no longer pass its type's schema"}, {503, errorBody{}, "the broker did not answer"}},
		}),
		api("DELETE /api/dead-letters", handlePurgeDeadLetters(d.dead), operation{
			tag: "Dead letters", summary: "Purge the dead-letter queue of the key's dead letters",
			responses: []response{{200, deadLetterPurgedJSON{}, "how many were purged"}, {503, errorBody{}, "the broker did not answer"}},
		}),

		api("POST /api/files", handleUploadFile(d.files), operation{
			tag: "Files", summary: "Store a file", upload: true,
			query:     []param{{"filename", "string", "the file's name, for a raw body"}},
			responses: []response{{201, fileJSON{}, "the stored file"}, {400, errorBody{}, "no file"}, {413, errorBody{}, "larger than FILE_MAX_BYTES"}, {415, errorBody{}, "not a file upload, or bytes that are not the declared type"}},
		}),
		api("GET /api/files", handleListFiles(d.files), operation{
			tag: "Files", summary: "List files, newest first",
			query:     []param{{"limit", "integer", "most files to return"}, {"cursor", "string", "the next_cursor of the page before"}},
			responses: []response{{200, fileListJSON{}, "a page of files"}, {422, errorBody{}, "limit or cursor not valid"}},
		}),
		api("GET /api/files/{id}", handleGetFile(d.files), operation{
			tag: "Files", summary: "Download a file (Range supported)", params: map[string]string{"id": "The file's id."},
			responses: []response{{200, fileBytes{}, "the file"}, {206, fileBytes{}, "the requested range"}, {404, errorBody{}, "no such file"}, {416, errorBody{}, "a range outside the file"}},
		}),
		api("DELETE /api/files/{id}", handleDeleteFile(d.files), operation{
			tag: "Files", summary: "Delete a file", params: map[string]string{"id": "The file's id."},
			responses: []response{{204, nil, "deleted"}, {404, errorBody{}, "no such file"}},
		}),

		api("POST /api/schedules", handleCreateSchedule(d.schedules), operation{
			tag: "Schedules", summary: "Run a task periodically (cron or every)", body: scheduleRequest{},
			responses: []response{{201, scheduleJSON{}, "the schedule"}, {400, errorBody{}, "not JSON"}, {409, errorBody{}, "a schedule of that name exists"}, {422, errorBody{}, "a field breaks a rule"}},
		}),
		api("GET /api/schedules", handleListSchedules(d.schedules), operation{
			tag: "Schedules", summary: "List schedules",
			responses: []response{{200, scheduleListJSON{}, "every schedule of the key"}},
		}),
		api("GET /api/schedules/{name}", handleGetSchedule(d.schedules), operation{
			tag: "Schedules", summary: "A schedule", params: map[string]string{"name": "The schedule's name."},
			responses: []response{{200, scheduleJSON{}, "the schedule"}, {404, errorBody{}, "no such schedule"}},
		}),
		api("DELETE /api/schedules/{name}", handleDeleteSchedule(d.schedules), operation{
			tag: "Schedules", summary: "Delete a schedule", params: map[string]string{"name": "The schedule's name."},
			responses: []response{{200, scheduleDeletedJSON{}, "deleted"}, {404, errorBody{}, "no such schedule"}},
		}),
		api("POST /api/schedules/{name}/pause", handlePauseSchedule(d.schedules, true), operation{
			tag: "Schedules", summary: "Pause a schedule", params: map[string]string{"name": "The schedule's name."},
			responses: []response{{200, scheduleJSON{}, "the schedule, paused"}, {404, errorBody{}, "no such schedule"}},
		}),
		api("POST /api/schedules/{name}/resume", handlePauseSchedule(d.schedules, false), operation{
			tag: "Schedules", summary: "Resume a schedule", params: map[string]string{"name": "The schedule's name."},
			responses: []response{{200, scheduleJSON{}, "the schedule, running again"}, {404, errorBody{}, "no such schedule"}},
		}),
	}
}

// submitResponses are the answers of every submit route.
var submitResponses = []response{
	{202, taskAccepted{}, "accepted: the broker has confirmed the task"},
	{400, errorBody{}, "not JSON"},
	{422, errorBody{}, "an argument breaks a rule"},
	{503, errorBody{}, "not accepted: the broker did not confirm in time"},
}

var reportOperation = operation{
	tag: "The guide's routes", summary: "Submit generate_monthly_report (the guide's /generate-report)", body: reportRequestDoc{}, optionalBody: true,
	query: []param{{"user_id", "string", "the user to report on"}, {"month", "string", "YYYY-MM; the current month in UTC when left out"},
		{"email", "string", "where to mail the PDF"}},
	responses: submitResponses,
}
