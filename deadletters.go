package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// The dead-letter routes: the messages that ended in the dead-letter
// queue (tasks that failed for good, messages that were not tasks), each
// with the reason it is there; a task's dead letter queued again as a new
// task; and a purge.

// deadLetter is one message of the dead-letter queue.
type deadLetter struct {
	body   []byte
	reason string
	deadAt time.Time // zero when the broker did not say
}

// deadLetterQueue is what the dead-letter routes need of the broker.
type deadLetterQueue interface {
	// sweepDead visits the oldest scan dead letters in order. visit
	// returns true to remove the one it was given, once what it did with
	// it has succeeded; every other dead letter stays, in its place.
	sweepDead(ctx context.Context, scan int, visit func(deadLetter) (remove bool, err error)) error
}

// How many dead letters, from the oldest, a listing looks through, and a
// requeue or purge.
const (
	deadLetterListScan  = 1000
	deadLetterSweepScan = 10000
)

// deadLetterJSON is a dead letter as the API shows it. A message that was
// not a task has only its reason and size.
type deadLetterJSON struct {
	TaskID      string          `json:"task_id,omitempty"`
	Type        string          `json:"type,omitempty"`
	Args        json.RawMessage `json:"args,omitempty"`
	Priority    string          `json:"priority,omitempty"`
	Reason      string          `json:"reason"`
	Attempts    int             `json:"attempts"`
	SubmittedAt *time.Time      `json:"submitted_at,omitempty"`
	DeadAt      *time.Time      `json:"dead_at,omitempty"`
	Bytes       int             `json:"bytes"`
	// Requeueable is true for a task whose message could be read.
	Requeueable bool `json:"requeueable"`
}

type deadLetterListJSON struct {
	DeadLetters []deadLetterJSON `json:"dead_letters"`
	// Scanned is how many dead letters, from the oldest, the listing
	// looked through (at most 1,000); Complete is true when that was all
	// of them.
	Scanned  int  `json:"scanned"`
	Complete bool `json:"complete"`
}

type deadLetterPurgedJSON struct {
	Purged  int    `json:"purged"`
	Message string `json:"message"`
}

// deadLetterRoutes serve the dead-letter routes.
type deadLetterRoutes struct {
	queue     deadLetterQueue
	specs     taskSpecs
	submitter taskSubmitter
}

// read is a dead letter as the API shows it, and its owner: the API key
// that submitted its task, "" for a message that is not a task (which
// only an API without keys shows).
func (d deadLetter) read() (deadLetterJSON, taskMessage, bool) {
	out := deadLetterJSON{Reason: d.reason, Bytes: len(d.body)}
	if !d.deadAt.IsZero() {
		at := d.deadAt.UTC()
		out.DeadAt = &at
	}
	msg, err := decodeTaskMessage(d.body)
	if err != nil {
		return out, taskMessage{}, false
	}
	out.TaskID, out.Type, out.Args, out.Priority, out.Attempts = msg.ID, msg.Type, msg.Args, msg.Priority, msg.Attempt+1
	if !msg.EnqueuedAt.IsZero() {
		out.SubmittedAt = &msg.EnqueuedAt
	}
	out.Requeueable = true
	return out, msg, true
}

// handleListDeadLetters is GET /api/dead-letters?limit=: the key's dead
// letters, oldest first, each with its reason.
func handleListDeadLetters(dl deadLetterRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		limit, err := queryInt(r, "limit", defaultPageSize, 1, maxPageSize)
		if err != nil {
			return err
		}
		owner := taskOwner(r.Context())
		out := deadLetterListJSON{DeadLetters: []deadLetterJSON{}}
		err = dl.queue.sweepDead(r.Context(), deadLetterListScan+1, func(d deadLetter) (bool, error) {
			if out.Scanned == deadLetterListScan {
				return false, errListFull
			}
			out.Scanned++
			shown, msg, _ := d.read()
			if msg.Owner == owner && len(out.DeadLetters) < limit {
				out.DeadLetters = append(out.DeadLetters, shown)
			}
			return false, nil
		})
		out.Complete = err == nil
		if err != nil && !errors.Is(err, errListFull) {
			return fmt.Errorf("%w: read the dead-letter queue: %w", errBrokerUnavailable, err)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// errListFull stops a listing's sweep at its scan limit.
var errListFull = errors.New("listing full")

// handleRequeueDeadLetter is POST /api/dead-letters/{task_id}/requeue:
// the task of that dead letter runs again as a new task, with its type,
// arguments and priority, and the dead letter leaves the queue. A repeat
// of the request answers the same new task: the requeue is submitted with
// an idempotency key of the dead task's id.
func handleRequeueDeadLetter(dl deadLetterRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		id := r.PathValue("task_id")
		if !taskIDPattern.MatchString(id) {
			return badRequest("invalid_id", "invalid task id")
		}
		var requeued *submission
		err := dl.queue.sweepDead(ctx, deadLetterSweepScan, func(d deadLetter) (bool, error) {
			_, msg, ok := d.read()
			if requeued != nil || !ok || msg.ID != id || msg.Owner != taskOwner(ctx) {
				return false, nil
			}
			if msg.Workflow != nil {
				return false, workflowStepNotAlone(msg.Workflow.ID)
			}
			priority := msg.Priority
			spec, err := dl.specs.check(msg.Type, msg.Args, &priority, "type", "args", "priority")
			if err != nil {
				return false, err
			}
			spec.CallbackURL, spec.ConcurrencyKey = msg.CallbackURL, msg.ConcurrencyKey
			sub, err := dl.submitter.submit(ctx, spec, "requeue:"+msg.ID)
			if err != nil {
				return false, err
			}
			requeued = &sub
			return true, nil
		})
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) || errors.Is(err, errBrokerUnavailable) || errors.Is(err, errStatusUnavailable) {
				return err
			}
			return fmt.Errorf("%w: requeue the dead letter of %s: %w", errBrokerUnavailable, id, err)
		}
		if requeued == nil {
			return &apiError{status: http.StatusNotFound, code: "not_found",
				message: fmt.Sprintf("no dead letter of task %s among the oldest %d", id, deadLetterSweepScan)}
		}
		addAccessLogAttrs(ctx, slog.String("task_id", requeued.id))
		w.Header().Set("Location", "/api/tasks/"+requeued.id)
		writeJSON(w, http.StatusAccepted, retryAccepted{
			taskAccepted: taskAccepted{TaskID: requeued.id, Status: statePending,
				Message: fmt.Sprintf("Dead letter of %s queued again as %s.", id, requeued.id)},
			RetryOf: id,
		})
		return nil
	}
}

// handlePurgeDeadLetters is DELETE /api/dead-letters: the key's dead
// letters among the oldest 10,000 leave the queue for good.
func handlePurgeDeadLetters(dl deadLetterRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		owner := taskOwner(r.Context())
		purged := 0
		err := dl.queue.sweepDead(r.Context(), deadLetterSweepScan, func(d deadLetter) (bool, error) {
			_, msg, _ := d.read()
			if msg.Owner != owner {
				return false, nil
			}
			purged++
			return true, nil
		})
		if err != nil {
			return fmt.Errorf("%w: purge the dead-letter queue: %w", errBrokerUnavailable, err)
		}
		writeJSON(w, http.StatusOK, deadLetterPurgedJSON{Purged: purged, Message: fmt.Sprintf("dead letters purged: %d", purged)})
		return nil
	}
}
