package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"errand/tasks"
)

// The guide's submit routes are aliases of POST /api/tasks for their
// task types, in the guide's request shapes: the body's fields are the
// task's arguments, and the registry checks them.

// handleSubmitProcess is POST /api/async/process: process_heavy_task's
// arguments and an optional priority, in one JSON object.
func handleSubmitProcess(specs taskSpecs, sub taskSubmitter, maxBody int64) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body map[string]json.RawMessage
		if err := decodeJSON(w, r, maxBody, &body); err != nil {
			return err
		}
		var priority *string
		if raw, ok := body["priority"]; ok && string(raw) != "null" {
			var p string
			if err := json.Unmarshal(raw, &p); err != nil {
				return invalidField("priority", "must be low, normal or high")
			}
			priority = &p
		}
		delete(body, "priority")
		args, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode arguments: %w", err)
		}
		spec, err := specs.check(tasks.HeavyTaskName, args, priority, "type", "", "priority")
		if err != nil {
			return err
		}
		return submitAlias(w, r, sub, spec, func(id string) string {
			return "Task submitted successfully. Use /api/async/status/{task_id} to check progress."
		})
	}
}

type welcomeEmailRequest struct {
	UserEmail *string `json:"user_email"`
	UserName  *string `json:"user_name"`
}

// handleWelcomeEmail is POST /api/send-welcome-email: user_email and
// user_name from the query, as the guide's curl sends them, or from a JSON
// body; query values win.
func handleWelcomeEmail(specs taskSpecs, sub taskSubmitter, maxBody int64) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body welcomeEmailRequest
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, maxBody, &body); err != nil && !isEmptyBody(err) {
				return err
			}
		}
		args := map[string]any{}
		if err := queryOrBody(r.URL.Query(), map[string]*string{"user_email": body.UserEmail, "user_name": body.UserName}, args); err != nil {
			return err
		}
		raw, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("encode arguments: %w", err)
		}
		spec, err := specs.check(tasks.WelcomeEmailName, raw, nil, "type", "", "priority")
		if err != nil {
			return err
		}
		return submitAlias(w, r, sub, spec, func(id string) string {
			return fmt.Sprintf("Email queued for %v. Check /api/async/status/%s", args["user_email"], id)
		})
	}
}

// queryOrBody sets each field of args from the query, as the guide's
// curl sends them, or else from the JSON body's value (nil: none); query
// values win.
func queryOrBody(q url.Values, fields map[string]*string, args map[string]any) error {
	for field, fromBody := range fields {
		v := q.Get(field)
		if v == "" && fromBody != nil {
			v = *fromBody
		}
		if !utf8.ValidString(v) {
			// A query string can carry any bytes; JSON bodies are UTF-8
			// already, and encoding the arguments would change them.
			return invalidField(field, "must be valid UTF-8")
		}
		if v != "" {
			args[field] = v
		}
	}
	return nil
}

// submitAlias submits spec with the request's Idempotency-Key header and
// answers with the guide's body and message.
func submitAlias(w http.ResponseWriter, r *http.Request, sub taskSubmitter, spec taskSpec, message func(id string) string) error {
	key, err := idempotencyKey(r)
	if err != nil {
		return err
	}
	return submitAndAnswer(w, r, sub, spec, key, message)
}

func isEmptyBody(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.code == "empty_body"
}

type reportRequest struct {
	UserID json.RawMessage `json:"user_id"`
	Month  *string         `json:"month"`
	Email  *string         `json:"email"`
}

// handleGenerateReport is the guide's POST /generate-report?user_id=42
// (also at /api/generate-report): generate_monthly_report for user_id,
// of month (YYYY-MM, the current month in UTC when left out), mailed to
// email when given; from the query, as the guide's client sends it, or a
// JSON body. It answers as the guide does, with the status "processing".
func handleGenerateReport(specs taskSpecs, sub taskSubmitter, maxBody int64, now func() time.Time) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body reportRequest
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, maxBody, &body); err != nil && !isEmptyBody(err) {
				return err
			}
		}
		args := map[string]any{"month": now().UTC().Format("2006-01")}
		if len(body.UserID) > 0 && string(body.UserID) != "null" {
			args["user_id"] = body.UserID
		}
		if err := queryOrBody(r.URL.Query(), map[string]*string{"user_id": nil, "month": body.Month, "email": body.Email}, args); err != nil {
			return err
		}
		raw, err := json.Marshal(args)
		if err != nil {
			return fmt.Errorf("encode arguments: %w", err)
		}
		spec, err := specs.check(tasks.MonthlyReportName, raw, nil, "type", "", "priority")
		if err != nil {
			return err
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		res, err := sub.submit(r.Context(), spec, key)
		if err != nil {
			return err
		}
		addAccessLogTask(r.Context(), res.id, spec.Type)
		if !res.replayed {
			res.status = "processing" // the guide's word for an accepted report
		}
		writeSubmitted(w, res, fmt.Sprintf("Report queued. Check /api/async/status/%s", res.id))
		return nil
	}
}
