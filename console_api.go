package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// consoleAPI is how the console reads and acts: it calls errand's own API
// handlers in process, as the signed-in key. Everything the console shows
// is what the API answers that key, and every action passes exactly the
// API's checks, so the two cannot disagree.
type consoleAPI struct {
	mux *http.ServeMux
}

// newConsoleAPI serves routes, the API's route table, without the key
// check and rate limit: the console has checked the session already.
func newConsoleAPI(routes []route) consoleAPI {
	mux := http.NewServeMux()
	for _, rt := range routes {
		mux.Handle(rt.pattern, rt.handler)
	}
	return consoleAPI{mux: mux}
}

// call makes one API request as the owner in ctx. body, if not nil, is
// sent as JSON; a 2xx answer is decoded into out (unless out is nil), and
// an error answer becomes an *apiError with the API's code, message and
// field.
func (a consoleAPI) call(ctx context.Context, method, target string, body, out any) (int, error) {
	var reqBody io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, fmt.Errorf("encode %s %s: %w", method, target, err)
		}
		reqBody = bytes.NewReader(b)
	}
	r, err := http.NewRequestWithContext(ctx, method, target, reqBody)
	if err != nil {
		return 0, fmt.Errorf("build %s %s: %w", method, target, err)
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	answer := &recordedAnswer{header: http.Header{}}
	a.mux.ServeHTTP(answer, r)
	if answer.status >= 400 {
		var e errorBody
		if err := json.Unmarshal(answer.body.Bytes(), &e); err != nil {
			return answer.status, fmt.Errorf("%s %s answered %d: %s", method, target, answer.status, answer.body.Bytes())
		}
		return answer.status, &apiError{status: answer.status, code: e.Error, message: e.Detail, field: e.Field, taskID: e.TaskID}
	}
	if out != nil {
		if err := json.Unmarshal(answer.body.Bytes(), out); err != nil {
			return answer.status, fmt.Errorf("decode the answer of %s %s: %w", method, target, err)
		}
	}
	return answer.status, nil
}

// unconfirmedTask is the task an unconfirmed submit named, if err is
// one: the console opens it rather than show an error, since it may run.
func unconfirmedTask(err error) string {
	var ae *apiError
	if errors.As(err, &ae) && ae.code == "unconfirmed" {
		return ae.taskID
	}
	return ""
}

// apiMessage is what a person is told of an API error: its message when
// the API gave one, else a generic line.
func apiMessage(err error) string {
	var ae *apiError
	if errors.As(err, &ae) && ae.message != "" {
		return ae.message
	}
	return "errand could not do that just now; the log has the details"
}

// recordedAnswer is an http.ResponseWriter that keeps the answer.
type recordedAnswer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (a *recordedAnswer) Header() http.Header { return a.header }

func (a *recordedAnswer) WriteHeader(status int) {
	if a.status == 0 {
		a.status = status
	}
}

func (a *recordedAnswer) Write(b []byte) (int, error) {
	a.WriteHeader(http.StatusOK)
	return a.body.Write(b)
}
