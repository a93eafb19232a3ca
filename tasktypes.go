package main

import (
	"cmp"
	"encoding/json"
	"net/http"

	"errand/tasks"
)

// taskTypeJSON is one registered task type as GET /api/task-types shows
// it: what a client needs to submit one.
type taskTypeJSON struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	ArgsSchema  json.RawMessage `json:"args_schema"`
	Policy      policyJSON      `json:"policy"`
}

type policyJSON struct {
	MaxRetries       int     `json:"max_retries"`
	BackoffSeconds   float64 `json:"retry_backoff_seconds,omitempty"`
	BackoffMaxSecs   float64 `json:"retry_backoff_max_seconds,omitempty"`
	TimeLimitSeconds float64 `json:"time_limit_seconds,omitempty"`
	Priority         string  `json:"priority"`
	// RateLimit is the type's rate limit across every worker, such as
	// "10/s"; none when empty.
	RateLimit string `json:"rate_limit,omitempty"`
	// MaxRunningPerKey is how many tasks of the type with the same
	// concurrency_key run at once; none when absent.
	MaxRunningPerKey int `json:"max_running_per_key,omitempty"`
}

// handleTaskTypes is GET /api/task-types: every registered type with the
// JSON Schema of its arguments and its policy.
func handleTaskTypes(registry *tasks.Registry) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		out := []taskTypeJSON{}
		for _, name := range registry.Names() {
			def, _ := registry.Lookup(name)
			p := def.Policy
			out = append(out, taskTypeJSON{
				Name: def.Name, Description: def.Description, ArgsSchema: def.ArgsSchema(),
				Policy: policyJSON{
					MaxRetries: p.MaxRetries, BackoffSeconds: p.BackoffBase.Seconds(), BackoffMaxSecs: p.BackoffMax.Seconds(),
					TimeLimitSeconds: p.TimeLimit.Seconds(), Priority: cmp.Or(p.Priority, "normal"), RateLimit: p.Rate.String(), MaxRunningPerKey: p.MaxRunningPerKey,
				},
			})
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}
