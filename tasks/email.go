package tasks

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"
)

// WelcomeEmailName is the guide's send_welcome_email (Part 5).
const WelcomeEmailName = "send_welcome_email"

// EmailArgs are send_welcome_email's arguments.
type EmailArgs struct {
	UserEmail string `json:"user_email" jsonschema:"required,maxLength=254,format=email" jsonschema_description:"The address to welcome, a plain address such as john@example.com."`
	UserName  string `json:"user_name" jsonschema:"required,minLength=1,maxLength=200" jsonschema_description:"The name the message greets."`
}

// Validate checks what the schema cannot: a plain address whose domain
// has a dot, and a name that cannot break the message's headers.
func (a EmailArgs) Validate() error {
	addr, err := mail.ParseAddress(a.UserEmail)
	domain := a.UserEmail[strings.LastIndexByte(a.UserEmail, '@')+1:]
	if err != nil || addr.Address != a.UserEmail || !strings.Contains(domain, ".") {
		return &FieldError{Field: "user_email", Reason: "must be a plain e-mail address such as john@example.com"}
	}
	if strings.ContainsAny(a.UserName, "\r\n") {
		return &FieldError{Field: "user_name", Reason: "must not contain line breaks"}
	}
	return nil
}

// errMailNotSent is what a client sees of a failed send: which server
// refused, and why, is in the worker's log.
var errMailNotSent = errors.New("the mail server did not take the message")

// EmailResult is send_welcome_email's result, in the guide's shape.
type EmailResult struct {
	TaskID    string `json:"task_id"`
	UserEmail string `json:"user_email"`
	UserName  string `json:"user_name"`
	Status    string `json:"status"`
	SentAt    string `json:"sent_at"`
}

// welcomeEmailTask walks the guide's three steps with their progress
// reports and sends the message through cfg.Mailer (which logs it when no
// SMTP server is configured). The guide's policy: max_retries=3, autoretry
// on every error and retry_backoff (1 s, doubling, capped at Celery's
// 600 s).
func welcomeEmailTask(cfg Config) Type[EmailArgs] {
	return Type[EmailArgs]{
		Name:        WelcomeEmailName,
		Description: "The guide's welcome e-mail: three progress steps, then the message through SMTP_ADDR (logged when unset).",
		Policy: Policy{
			MaxRetries: 3, BackoffBase: time.Second, BackoffMax: 600 * time.Second,
			TimeLimit: max(time.Minute, 6*cfg.EmailStepDelay),
		},
		Run: func(ctx context.Context, task Task, args EmailArgs) (any, error) {
			log := cfg.Logger.With("task_id", task.ID, "task_type", WelcomeEmailName)
			log.InfoContext(ctx, "sending welcome email", "user_email", args.UserEmail)
			steps := []Progress{
				{Percent: 25, Status: "Preparing email..."},
				{Percent: 50, Status: "Connecting to email server..."},
				{Percent: 75, Status: "Sending email..."},
			}
			for _, step := range steps {
				task.Report(ctx, step)
				if err := sleep(ctx, cfg.EmailStepDelay); err != nil {
					return nil, fmt.Errorf("%s: %w", step.Status, err)
				}
			}
			subject := "Welcome, " + args.UserName + "!"
			body := fmt.Sprintf("Hello %s,\n\nwelcome aboard!\n", args.UserName)
			if err := cfg.Mailer.Send(ctx, Mail{To: args.UserEmail, Subject: subject, Body: body}); err != nil {
				log.WarnContext(ctx, "welcome email not sent", "user_email", args.UserEmail, "error", err)
				return nil, fmt.Errorf("send welcome email to %s: %w", args.UserEmail, errMailNotSent)
			}
			log.InfoContext(ctx, "welcome email sent", "user_email", args.UserEmail)
			return EmailResult{
				TaskID:    task.ID,
				UserEmail: args.UserEmail,
				UserName:  args.UserName,
				Status:    "sent",
				SentAt:    Timestamp(cfg.Now()),
			}, nil
		},
	}
}
