package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"errand/tasks"
)

// TestTimeLimitCancels: a task past its time limit is cancelled and ends
// FAILURE, even one that ignores its context.
func TestTimeLimitCancels(t *testing.T) {
	env := realStack(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	obedient := tasks.Definition{Name: "obedient", Policy: tasks.Policy{TimeLimit: 200 * time.Millisecond},
		Run: func(ctx context.Context, _ tasks.Task, _ json.RawMessage) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}}
	stubborn := tasks.Definition{Name: "stubborn", Policy: tasks.Policy{TimeLimit: 200 * time.Millisecond},
		Run: func(context.Context, tasks.Task, json.RawMessage) (any, error) {
			<-release // ignores its context entirely
			return map[string]any{}, nil
		}}
	s := startPoolStack(t, env, 2, obedient, stubborn)
	for _, name := range []string{"obedient", "stubborn"} {
		id := s.submit(t, name, map[string]any{})
		st := waitForStatus(t, s.base, id, stateFailure, 20*time.Second)
		if !strings.HasPrefix(st.Error, "time limit exceeded") {
			t.Errorf("%s: error %q, want time limit exceeded", name, st.Error)
		}
	}
}
