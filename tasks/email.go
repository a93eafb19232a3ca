package tasks

import (
	"context"
	"encoding/json"
	"fmt"
)

// WelcomeEmailName is the guide's send_welcome_email (Part 5).
const WelcomeEmailName = "send_welcome_email"

// EmailArgs are send_welcome_email's arguments.
type EmailArgs struct {
	UserEmail string `json:"user_email"`
	UserName  string `json:"user_name"`
}

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
// SMTP server is configured).
func welcomeEmailTask(cfg Config) Handler {
	return func(ctx context.Context, taskID string, raw json.RawMessage, report ReportFunc) (any, error) {
		var args EmailArgs
		if err := decodeArgs(raw, &args); err != nil {
			return nil, err
		}
		if args.UserEmail == "" || args.UserName == "" {
			return nil, fmt.Errorf("%w: user_email and user_name are required", ErrInvalidArgs)
		}
		log := cfg.Logger.With("task_id", taskID, "task_type", WelcomeEmailName)
		log.InfoContext(ctx, "sending welcome email", "user_email", args.UserEmail)
		steps := []Progress{
			{Percent: 25, Status: "Preparing email..."},
			{Percent: 50, Status: "Connecting to email server..."},
			{Percent: 75, Status: "Sending email..."},
		}
		for _, step := range steps {
			report(ctx, step)
			if err := sleep(ctx, cfg.EmailStepDelay); err != nil {
				return nil, fmt.Errorf("%s: %w", step.Status, err)
			}
		}
		subject := "Welcome, " + args.UserName + "!"
		body := fmt.Sprintf("Hello %s,\n\nwelcome aboard!\n", args.UserName)
		if err := cfg.Mailer.Send(ctx, args.UserEmail, subject, body); err != nil {
			return nil, fmt.Errorf("send welcome email to %s: %w", args.UserEmail, err)
		}
		log.InfoContext(ctx, "welcome email sent", "user_email", args.UserEmail)
		return EmailResult{
			TaskID:    taskID,
			UserEmail: args.UserEmail,
			UserName:  args.UserName,
			Status:    "sent",
			SentAt:    Timestamp(cfg.Now()),
		}, nil
	}
}
