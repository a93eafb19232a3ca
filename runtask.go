package main

import (
	"context"
	"encoding/json"
	"errand/tasks"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"
)

// cancelGrace is how long a task may take to return after its context
// is cancelled before errand stops waiting for it.
const cancelGrace = 2 * time.Second

// runTask calls the task's handler under its time limit, turning a panic
// into an error so one bad task cannot take the worker down with the
// others' work. The stack goes to the log only; the error, which clients
// see, names the panic value. A handler that ignores its cancelled context
// is abandoned after cancelGrace: Go cannot stop a goroutine, but the
// worker slot, the task's status and shutdown need not wait for it.
func runTask(ctx context.Context, log *slog.Logger, def tasks.Definition, msg taskMessage, report tasks.ReportFunc) (any, error) {
	if def.Policy.TimeLimit > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, def.Policy.TimeLimit,
			fmt.Errorf("%w (%s)", errTimeLimit, def.Policy.TimeLimit))
		defer cancel()
	}
	type outcome struct {
		value any
		err   error
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error("task panicked", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				done <- outcome{err: fmt.Errorf("task panicked: %v", r)}
			}
		}()
		v, err := def.Run(ctx, tasks.Task{ID: msg.ID, Owner: msg.Owner, Report: report, Previous: msg.Previous}, msg.Args)
		done <- outcome{v, err}
	}()
	var o outcome
	select {
	case o = <-done:
	case <-ctx.Done():
		select {
		case o = <-done:
		case <-time.After(cancelGrace):
			log.Error("task ignored cancellation; abandoning it", "cause", context.Cause(ctx).Error())
			return nil, context.Cause(ctx)
		}
	}
	if o.err != nil && errors.Is(context.Cause(ctx), errTimeLimit) {
		return nil, context.Cause(ctx)
	}
	return o.value, o.err
}

// resultObject converts a task's return value to the JSON object that the
// status endpoint and the result store keep.
func resultObject(value any) (map[string]any, error) {
	b, err := json.Marshal(value)
	if err != nil {
		return nil, fmt.Errorf("encode task result: %w", err)
	}
	var obj map[string]any
	if err := json.Unmarshal(b, &obj); err != nil {
		return nil, fmt.Errorf("task result is not a JSON object: %w", err)
	}
	return obj, nil
}
