// Package tasks holds errand's task implementations and the registry that
// names them. A task is a function of a context, its JSON arguments and a
// progress callback; the worker pool owns everything else (acks, retries,
// result storage), so a task never touches the broker or the stores.
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"
)

// Progress is what a running task reports; its JSON is the "progress"
// object of the status endpoint, in the guide's shape.
type Progress struct {
	Current int    `json:"current,omitempty"`
	Total   int    `json:"total,omitempty"`
	Percent int    `json:"progress"`
	Status  string `json:"status"`
}

// ReportFunc records a task's progress. It never fails the task: progress
// is advisory and the worker logs what it could not store.
type ReportFunc func(ctx context.Context, p Progress)

// Handler runs one task. The returned value becomes the task's result and
// must marshal to a JSON object.
type Handler func(ctx context.Context, taskID string, args json.RawMessage, report ReportFunc) (any, error)

// Definition is a registered task type.
type Definition struct {
	Name string
	Run  Handler
}

// ErrInvalidArgs marks arguments a task cannot run with; retrying such a
// task would fail the same way.
var ErrInvalidArgs = errors.New("invalid task arguments")

// Registry maps task names to their definitions.
type Registry struct {
	defs map[string]Definition
}

// Lookup returns the definition registered under name.
func (r *Registry) Lookup(name string) (Definition, bool) {
	d, ok := r.defs[name]
	return d, ok
}

// Names lists the registered task types in order.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.defs))
	for n := range r.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Config carries what the built-in tasks need from errand's configuration.
type Config struct {
	// HeavyTaskDelay is the simulated work per iteration of process_heavy_task.
	HeavyTaskDelay time.Duration
	// EmailStepDelay is the simulated work per step of send_welcome_email.
	EmailStepDelay time.Duration
	Logger         *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// NewRegistry returns the registry of errand's built-in tasks.
func NewRegistry(cfg Config) *Registry {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registry{defs: map[string]Definition{}}
	r.register(Definition{Name: HeavyTaskName, Run: heavyTask(cfg)})
	r.register(Definition{Name: WelcomeEmailName, Run: welcomeEmailTask(cfg)})
	return r
}

// Register adds a definition; it is how embedding programs and tests add
// task types of their own.
func (r *Registry) Register(d Definition) { r.register(d) }

func (r *Registry) register(d Definition) {
	if _, dup := r.defs[d.Name]; dup {
		panic(fmt.Sprintf("tasks: %q registered twice", d.Name))
	}
	r.defs[d.Name] = d
}

// Timestamp formats t the way the guide's results do: UTC, milliseconds, Z.
func Timestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z")
}

// sleep waits for d or until ctx ends, whichever is first.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func decodeArgs(raw json.RawMessage, dst any) error {
	if err := json.Unmarshal(raw, dst); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgs, err)
	}
	return nil
}
