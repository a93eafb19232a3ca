package main

import (
	"errand/tasks"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"strings"
	"unicode/utf8"
)

type processRequest struct {
	Data       *string `json:"data"`
	Iterations *int    `json:"iterations"`
	Priority   *string `json:"priority"`
}

func handleSubmitProcess(sub taskSubmitter, maxBody int64) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req processRequest
		if err := decodeJSON(w, r, maxBody, &req); err != nil {
			return err
		}
		args := tasks.HeavyArgs{Iterations: tasks.DefaultHeavyIt}
		priority := "normal"
		switch {
		case req.Data == nil:
			return invalidField("data", "is required")
		case utf8.RuneCountInString(*req.Data) > tasks.MaxHeavyData:
			return invalidField("data", "must be at most %d characters", tasks.MaxHeavyData)
		}
		args.Data = *req.Data
		if req.Iterations != nil {
			if *req.Iterations < 1 || *req.Iterations > tasks.MaxIterations {
				return invalidField("iterations", "must be from 1 to %d", tasks.MaxIterations)
			}
			args.Iterations = *req.Iterations
		}
		if req.Priority != nil {
			if _, ok := priorityLevels[*req.Priority]; !ok {
				return invalidField("priority", "must be low, normal or high")
			}
			priority = *req.Priority
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		res, err := sub.submit(r.Context(), tasks.HeavyTaskName, args, priority, key)
		if err != nil {
			return err
		}
		writeSubmitted(w, res, "Task submitted successfully. Use /api/async/status/{task_id} to check progress.")
		return nil
	}
}

type welcomeEmailRequest struct {
	UserEmail *string `json:"user_email"`
	UserName  *string `json:"user_name"`
}

// handleWelcomeEmail takes user_email and user_name from the query, as the
// guide's curl sends them, or from a JSON body; query values win.
func handleWelcomeEmail(sub taskSubmitter, maxBody int64) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body welcomeEmailRequest
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, maxBody, &body); err != nil && !isEmptyBody(err) {
				return err
			}
		}
		q := r.URL.Query()
		args := tasks.EmailArgs{UserEmail: q.Get("user_email"), UserName: q.Get("user_name")}
		if args.UserEmail == "" && body.UserEmail != nil {
			args.UserEmail = *body.UserEmail
		}
		if args.UserName == "" && body.UserName != nil {
			args.UserName = *body.UserName
		}
		if err := validateEmailArgs(args); err != nil {
			return err
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		res, err := sub.submit(r.Context(), tasks.WelcomeEmailName, args, "normal", key)
		if err != nil {
			return err
		}
		writeSubmitted(w, res, fmt.Sprintf("Email queued for %s. Check /api/async/status/%s", args.UserEmail, res.id))
		return nil
	}
}

// Bounds of send_welcome_email's arguments.
const (
	maxUserName     = 200
	maxEmailAddress = 254
)

func validateEmailArgs(args tasks.EmailArgs) error {
	if args.UserEmail == "" {
		return invalidField("user_email", "is required")
	}
	addr, err := mail.ParseAddress(args.UserEmail)
	if err != nil || addr.Address != args.UserEmail || len(args.UserEmail) > maxEmailAddress || !strings.Contains(args.UserEmail[strings.LastIndexByte(args.UserEmail, '@')+1:], ".") {
		return invalidField("user_email", "must be a plain e-mail address such as john@example.com")
	}
	if n := utf8.RuneCountInString(args.UserName); n < 1 || n > maxUserName {
		return invalidField("user_name", "must be 1 to %d characters", maxUserName)
	}
	if !utf8.ValidString(args.UserName) {
		// A query string can carry any bytes; JSON bodies are UTF-8 already.
		return invalidField("user_name", "must be valid UTF-8")
	}
	if strings.ContainsAny(args.UserName, "\r\n") {
		return invalidField("user_name", "must not contain line breaks")
	}
	return nil
}

func isEmptyBody(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.code == "empty_body"
}

// idempotencyKey reads and checks the Idempotency-Key header.
func idempotencyKey(r *http.Request) (string, error) {
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 || !printableASCII(key) {
		return "", invalidField("Idempotency-Key", "must be 1 to 255 printable ASCII characters")
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
