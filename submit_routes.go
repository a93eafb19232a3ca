package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"errand/tasks"
)

// taskRequest is one task as POST /api/tasks and its batch take it.
type taskRequest struct {
	Type           *string         `json:"type"`
	Args           json.RawMessage `json:"args"`
	Priority       *string         `json:"priority"`
	Countdown      *json.Number    `json:"countdown"`
	ETA            *string         `json:"eta"`
	IdempotencyKey *string         `json:"idempotency_key"`
	CallbackURL    *string         `json:"callback_url"`
	ConcurrencyKey *string         `json:"concurrency_key"`
}

// taskSpecs turns clients' requests into task specs: the registry checks
// the type and its arguments, the horizon bounds how far ahead a task
// may be scheduled, and the webhook settings which callback URLs it may
// have.
type taskSpecs struct {
	registry *tasks.Registry
	horizon  time.Duration
	now      func() time.Time
	webhooks webhookConfig
}

// fromRequest checks req; path is where req sits in the request body ("",
// or "tasks[3]." in a batch), so every error names its field in full.
func (c taskSpecs) fromRequest(req taskRequest, path string) (taskSpec, error) {
	if req.Type == nil || *req.Type == "" {
		return taskSpec{}, invalidField(path+"type", "is required; known types: %s", strings.Join(c.registry.Names(), ", "))
	}
	spec, err := c.check(*req.Type, req.Args, req.Priority, path+"type", path+"args", path+"priority")
	if err != nil {
		return taskSpec{}, err
	}
	switch {
	case req.Countdown != nil && req.ETA != nil:
		return taskSpec{}, invalidField(path+"eta", "give countdown or eta, not both")
	case req.Countdown != nil:
		secs, err := req.Countdown.Float64()
		if err != nil || math.IsNaN(secs) || secs > c.horizon.Seconds() {
			return taskSpec{}, invalidField(path+"countdown", "must be a number of seconds of at most %d (SCHEDULE_HORIZON)", int64(c.horizon.Seconds()))
		}
		spec.RunAt = c.now().Add(time.Duration(secs * float64(time.Second)))
		spec.When = "countdown " + req.Countdown.String()
	case req.ETA != nil:
		eta, err := time.Parse(time.RFC3339Nano, *req.ETA)
		if err != nil {
			return taskSpec{}, invalidField(path+"eta", "must be an RFC 3339 time such as 2026-12-24T18:00:00Z")
		}
		if eta.Sub(c.now()) > c.horizon {
			return taskSpec{}, invalidField(path+"eta", "must be at most %s ahead (SCHEDULE_HORIZON)", humanDuration(c.horizon))
		}
		spec.RunAt, spec.When = eta, "eta "+eta.UTC().Format(time.RFC3339Nano)
	}
	if req.CallbackURL != nil {
		if err := c.webhooks.checkCallbackURL(*req.CallbackURL, path+"callback_url"); err != nil {
			return taskSpec{}, err
		}
		spec.CallbackURL = *req.CallbackURL
	}
	if req.ConcurrencyKey != nil {
		if k := *req.ConcurrencyKey; k == "" || len(k) > maxConcurrencyKey || !printableASCII(k) {
			return taskSpec{}, invalidField(path+"concurrency_key", "must be 1 to %d printable ASCII characters", maxConcurrencyKey)
		}
		spec.ConcurrencyKey = *req.ConcurrencyKey
	}
	return spec, nil
}

// check makes the spec of a task of taskType with args and priority,
// naming its fields typeField, argsField and priorityField in errors. An
// args field of "" means the arguments are the request body's own fields.
func (c taskSpecs) check(taskType string, args json.RawMessage, priority *string, typeField, argsField, priorityField string) (taskSpec, error) {
	def, ok := c.registry.Lookup(taskType)
	if !ok {
		return taskSpec{}, invalidField(typeField, "unknown task type %q; known types: %s", taskType, strings.Join(c.registry.Names(), ", "))
	}
	checked, err := def.CheckArgs(args)
	if err != nil {
		var fe *tasks.FieldError
		if !errors.As(err, &fe) {
			return taskSpec{}, fmt.Errorf("check %s arguments: %w", taskType, err)
		}
		field := fe.Field
		switch {
		case argsField != "" && field != "":
			field = argsField + "." + field
		case argsField != "":
			field = argsField
		case field == "":
			field = "body"
		}
		return taskSpec{}, invalidField(field, "%s", fe.Reason)
	}
	spec := taskSpec{Type: taskType, Args: checked, Priority: cmp.Or(def.Policy.Priority, "normal")}
	if priority != nil {
		if _, ok := priorityLevels[*priority]; !ok {
			return taskSpec{}, invalidField(priorityField, "must be low, normal or high")
		}
		spec.Priority = *priority
	}
	return spec, nil
}

// handleSubmitTask is POST /api/tasks: one task of any registered type,
// now or later.
func handleSubmitTask(specs taskSpecs, sub taskSubmitter, maxBody int64) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req taskRequest
		if err := decodeJSON(w, r, maxBody, &req); err != nil {
			return err
		}
		spec, err := specs.fromRequest(req, "")
		if err != nil {
			return err
		}
		key, err := requestIdempotencyKey(r, req.IdempotencyKey, "idempotency_key")
		if err != nil {
			return err
		}
		return submitAndAnswer(w, r, sub, spec, key, func(string) string {
			return "Task submitted. Use /api/async/status/{task_id} to check progress."
		})
	}
}

// maxBatchTasks bounds a batch: its tasks are validated and held in
// memory together.
const maxBatchTasks = 1000

type batchRequest struct {
	Tasks []taskRequest `json:"tasks"`
}

// batchOutcomeJSON is one task's line in a batch's answer.
type batchOutcomeJSON struct {
	Index    int        `json:"index"`
	TaskID   string     `json:"task_id,omitempty"`
	Status   string     `json:"status,omitempty"`
	Accepted bool       `json:"accepted"`
	Error    *errorBody `json:"error,omitempty"`
}

type batchAnswer struct {
	Accepted int                `json:"accepted"`
	Failed   int                `json:"failed"`
	Tasks    []batchOutcomeJSON `json:"tasks"`
}

// batchSubmitters bounds the submits of one batch in flight at once; they
// share envelopes and confirms, so a batch costs a few round trips, not
// one per task.
const batchSubmitters = 64

// handleSubmitBatch is POST /api/tasks/batch: up to maxBatchTasks tasks,
// every one validated before any is published. The answer says, task by
// task, which were accepted: 202 when at least one was, else the error
// of the first.
func handleSubmitBatch(specs taskSpecs, sub taskSubmitter, maxBody int64) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req batchRequest
		if err := decodeJSON(w, r, maxBody, &req); err != nil {
			return err
		}
		switch {
		case req.Tasks == nil:
			return invalidField("tasks", "is required: a list of 1 to %d tasks", maxBatchTasks)
		case len(req.Tasks) == 0 || len(req.Tasks) > maxBatchTasks:
			return invalidField("tasks", "must hold 1 to %d tasks, not %d", maxBatchTasks, len(req.Tasks))
		}
		type planned struct {
			spec taskSpec
			key  string
		}
		plan := make([]planned, len(req.Tasks))
		for i, t := range req.Tasks {
			path := fmt.Sprintf("tasks[%d].", i)
			spec, err := specs.fromRequest(t, path)
			if err != nil {
				return err
			}
			key, err := bodyIdempotencyKey(t.IdempotencyKey, path+"idempotency_key")
			if err != nil {
				return err
			}
			plan[i] = planned{spec: spec, key: key}
		}
		answer := batchAnswer{Tasks: make([]batchOutcomeJSON, len(plan))}
		errs := make([]error, len(plan))
		_ = forEachLimit(len(plan), batchSubmitters, func(i int) error {
			res, err := sub.submit(r.Context(), plan[i].spec, plan[i].key)
			answer.Tasks[i] = batchOutcomeJSON{Index: i, TaskID: res.id, Status: res.status, Accepted: err == nil}
			errs[i] = err
			return nil
		})
		for i, err := range errs {
			if err == nil {
				answer.Accepted++
				continue
			}
			answer.Failed++
			_, body := errorStatus(err)
			answer.Tasks[i].Error = &body
			answer.Tasks[i].TaskID = body.TaskID
		}
		if answer.Accepted == 0 {
			// Tasks that may run after all (unconfirmed) are named line by
			// line: the client must not send them again as new ones.
			if slices.ContainsFunc(answer.Tasks, func(o batchOutcomeJSON) bool { return o.TaskID != "" }) {
				writeJSON(w, http.StatusServiceUnavailable, answer)
				return nil
			}
			return errs[slices.IndexFunc(errs, func(err error) bool { return err != nil })]
		}
		addAccessLogAttrs(r.Context(), slog.Int("batch_accepted", answer.Accepted), slog.Int("batch_failed", answer.Failed))
		writeJSON(w, http.StatusAccepted, answer)
		return nil
	}
}

// requestIdempotencyKey is the request's Idempotency-Key: the header, or
// the body's field named field; both must agree when both are given.
func requestIdempotencyKey(r *http.Request, inBody *string, field string) (string, error) {
	header, err := idempotencyKey(r)
	if err != nil {
		return "", err
	}
	body, err := bodyIdempotencyKey(inBody, field)
	if err != nil {
		return "", err
	}
	if header != "" && body != "" && header != body {
		return "", invalidField(field, "differs from the Idempotency-Key header")
	}
	return cmp.Or(header, body), nil
}

// idempotencyKey reads and checks the Idempotency-Key header.
func idempotencyKey(r *http.Request) (string, error) {
	return checkIdempotencyKey(r.Header.Get("Idempotency-Key"), "Idempotency-Key")
}

func bodyIdempotencyKey(key *string, field string) (string, error) {
	if key == nil {
		return "", nil
	}
	if *key == "" {
		return "", invalidField(field, "must be 1 to 255 printable ASCII characters")
	}
	return checkIdempotencyKey(*key, field)
}

func checkIdempotencyKey(key, field string) (string, error) {
	if len(key) > 255 || !printableASCII(key) {
		return "", invalidField(field, "must be 1 to 255 printable ASCII characters")
	}
	return key, nil
}

func printableASCII(s string) bool {
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// taskAccepted is the guide's answer to a submit.
type taskAccepted struct {
	TaskID  string `json:"task_id"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// submitAndAnswer submits spec with key and answers with the guide's
// body and message.
func submitAndAnswer(w http.ResponseWriter, r *http.Request, sub taskSubmitter, spec taskSpec, key string, message func(id string) string) error {
	res, err := sub.submit(r.Context(), spec, key)
	if err != nil {
		return err
	}
	addAccessLogTask(r.Context(), res.id, spec.Type)
	writeSubmitted(w, res, message(res.id))
	return nil
}

// writeSubmitted answers a submit: 202 with the guide's body, or for an
// idempotent replay the same task id with its current status.
func writeSubmitted(w http.ResponseWriter, sub submission, message string) {
	if sub.replayed {
		w.Header().Set("Idempotent-Replayed", "true")
		message = "Task already submitted with this Idempotency-Key. Use /api/async/status/{task_id} to check progress."
	}
	w.Header().Set("Location", "/api/async/status/"+sub.id)
	writeJSON(w, http.StatusAccepted, taskAccepted{TaskID: sub.id, Status: sub.status, Message: message})
}

// humanDuration writes d in whole days when it is whole days: "30 days"
// reads better than "720h0m0s".
func humanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d >= day && d%day == 0 {
		return fmt.Sprintf("%d days", d/day)
	}
	return d.String()
}
