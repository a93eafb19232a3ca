package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
)

// errand's sentinel errors. Code that fails wraps one of these with %w,
// and the cause with %w too, so errorStatus finds the sentinel and the
// log keeps the whole chain.
var (
	// errNotFound: a store has no document with that id.
	errNotFound = errors.New("not found")
	// errInvalidID: an item id that is not an ObjectId, answered 400
	// rather than 404.
	errInvalidID = errors.New("invalid item id")
	// errStatusNotFound: neither the status store nor the result store
	// knows the task.
	errStatusNotFound = errors.New("task status not found")
	// errBrokerUnavailable: the broker could not take a message now; the
	// client may try again.
	errBrokerUnavailable = errors.New("broker unavailable")
	// errStatusUnavailable: the status store could not record a new task,
	// so the task was not queued.
	errStatusUnavailable = errors.New("status store unavailable")
	// errStoreUnavailable: a store failed to answer a read.
	errStoreUnavailable = errors.New("store unavailable")
	// errTimeLimit ends a run cut off by its task type's time limit.
	errTimeLimit = errors.New("time limit exceeded")
	// errRevoked ends a run cut off because its task was cancelled.
	errRevoked = errors.New("task cancelled")
)

// errPublishUnconfirmed marks a publish that reached the broker but whose
// confirm never came (its wait timed out, or the connection dropped
// under it): the message may be on the queue, or not.
var errPublishUnconfirmed = errors.New("publish not confirmed")

// unconfirmedError is a submit whose publish was not confirmed: not a
// refusal, since the task may run. The answer names the task, its status
// stays, and its Idempotency-Key stays bound to it.
type unconfirmedError struct {
	taskID string
	err    error
}

func (e *unconfirmedError) Error() string { return e.err.Error() }
func (e *unconfirmedError) Unwrap() error { return e.err }

// revokedError is errRevoked with the cancel's who and when.
type revokedError struct{ rev revocation }

func (e *revokedError) Error() string        { return errRevoked.Error() }
func (e *revokedError) Is(target error) bool { return target == errRevoked }

// apiError is an error with the HTTP answer it deserves. Handlers return
// it for problems with the request; every other error is mapped in
// errorStatus.
type apiError struct {
	status  int
	code    string
	message string
	field   string
	// taskID names the task of an answer about one that may run (an
	// unconfirmed submit, as the console reads it back).
	taskID string
}

func (e *apiError) Error() string { return e.message }

// invalidField reports a request value that breaks a rule (422).
func invalidField(field, format string, args ...any) error {
	return &apiError{status: http.StatusUnprocessableEntity, code: "validation_error", field: field,
		message: field + ": " + fmt.Sprintf(format, args...)}
}

// badRequest reports a request that cannot be read at all (400).
func badRequest(code, format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, code: code, message: fmt.Sprintf(format, args...)}
}

// errIdempotencyMismatch is a reused Idempotency-Key with a different request.
var errIdempotencyMismatch = &apiError{status: http.StatusUnprocessableEntity, code: "idempotency_key_reused", field: "Idempotency-Key",
	message: "Idempotency-Key: already used for a different request"}

// errorBody is the JSON of every error answer. "detail" is where FastAPI,
// and so the clients of the FastAPI service errand replaces, look for the
// message.
type errorBody struct {
	Error     string `json:"error"`
	Detail    string `json:"detail"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"request_id"`
	// TaskID names the task of a submit whose outcome is unknown
	// ("unconfirmed"): it may run; follow it rather than submit again.
	TaskID string `json:"task_id,omitempty"`
}

// errorStatus maps an error to its answer. It is the only place that does:
// internal errors become a generic 500 whose details go to the log only.
func errorStatus(err error) (int, errorBody) {
	var ae *apiError
	var uc *unconfirmedError
	switch {
	case errors.As(err, &ae):
		return ae.status, errorBody{Error: ae.code, Detail: ae.message, Field: ae.field, TaskID: ae.taskID}
	case errors.As(err, &uc):
		return http.StatusServiceUnavailable, errorBody{Error: "unconfirmed", TaskID: uc.taskID,
			Detail: "the broker did not confirm the task in time, so it may run or not: follow it at /api/tasks/" + uc.taskID +
				" rather than submit it again; a retry with the same Idempotency-Key answers with this task and queues no other"}
	case errors.Is(err, errInvalidID):
		return http.StatusBadRequest, errorBody{Error: "invalid_id", Detail: "invalid id: want a 24-character hexadecimal ObjectId"}
	case errors.Is(err, errNotFound), errors.Is(err, errStatusNotFound):
		return http.StatusNotFound, errorBody{Error: "not_found", Detail: "not found"}
	case errors.Is(err, errBrokerUnavailable):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Detail: "the task queue is unavailable; nothing was queued, try again"}
	case errors.Is(err, errStatusUnavailable):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Detail: "the task status store is unavailable; nothing was queued, try again"}
	case errors.Is(err, errStoreUnavailable):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Detail: "a data store is unavailable; try again"}
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, errorBody{Error: "unavailable", Detail: "a dependency did not answer in time; try again"}
	default:
		return http.StatusInternalServerError, errorBody{Error: "internal", Detail: "internal server error"}
	}
}

// writeError answers err as errand's JSON error, carrying the request's
// id, and returns the status it answered. Every error answer, from a
// handler or a middleware, is written here.
func writeError(w http.ResponseWriter, r *http.Request, err error) int {
	status, body := errorStatus(err)
	body.RequestID = requestID(r.Context())
	writeJSON(w, status, body)
	return status
}
