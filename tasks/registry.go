// Package tasks holds errand's task implementations and the registry that
// names them. A task is a function of a context, its JSON arguments and a
// progress callback; the worker pool owns everything else (acks, retries,
// result storage), so a task never touches the broker or the stores.
//
// "The guide" in these comments is the tutorial errand rebuilds, "Complete
// Beginner's Guide to Queue-Based Microservices"; its Celery tasks are the
// models of the built-in ones.
package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
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
	// Imported is the guide's count of rows stored so far by an import.
	Imported int `json:"imported,omitempty"`
}

// ReportFunc records a task's progress. It never fails the task: progress
// is advisory and the worker logs what it could not store.
type ReportFunc func(ctx context.Context, p Progress)

// Handler runs one task. The returned value becomes the task's result and
// must marshal to a JSON object.
type Handler func(ctx context.Context, task Task, args json.RawMessage) (any, error)

// Task is what a running handler knows of its task.
type Task struct {
	ID string
	// Owner is the API key the task was submitted with ("" without keys):
	// the files and items a task reads and writes are the owner's.
	Owner string
	// Report records the task's progress; see ReportFunc.
	Report ReportFunc
	// Previous is what a step of a workflow gets from the step before
	// it: that task's result (a JSON object) after a task; after a group,
	// a JSON array of its members' results in order (null for a member
	// that did not succeed, which only a then step run with
	// then_on_failure sees). It is nil outside workflows and for a
	// workflow's first steps.
	Previous json.RawMessage
}

// Definition is a registered task type, as the registry keeps it. Declare
// makes one from a Type; a Definition written by hand (tests do) takes
// any JSON object as its arguments.
type Definition struct {
	Name        string
	Description string
	Run         Handler
	Policy      Policy
	// Schema is the JSON Schema of the arguments.
	Schema json.RawMessage
	// checkArgs validates arguments and returns them with their defaults.
	checkArgs func(raw json.RawMessage) (json.RawMessage, error)
	// checkArgsByLibrary, for tests, is checkArgs without the fast check,
	// on the types that have one: the JSON Schema library decides alone,
	// and the fast check must agree with it.
	checkArgsByLibrary func(raw json.RawMessage) (json.RawMessage, error)
}

// marshalChecked is checked arguments as the task will get them.
func marshalChecked[Args any](args Args, err error) (json.RawMessage, error) {
	if err != nil {
		return nil, err
	}
	return json.Marshal(args)
}

// CheckArgs validates a submit's arguments against the type's schema and
// rules and returns them as the task will get them, defaults filled in.
// Its error is a *FieldError.
func (d Definition) CheckArgs(raw json.RawMessage) (json.RawMessage, error) {
	if d.checkArgs != nil {
		return d.checkArgs(raw)
	}
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return json.RawMessage(`{}`), nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(trimmed, &obj); err != nil {
		return nil, &FieldError{Reason: "must be a JSON object"}
	}
	return trimmed, nil
}

// ArgsSchema is the JSON Schema of the arguments: an object of any shape
// for a Definition written by hand.
func (d Definition) ArgsSchema() json.RawMessage {
	if d.Schema == nil {
		return json.RawMessage(`{"type":"object"}`)
	}
	return d.Schema
}

// Policy says how a task type is retried and how long one run may take.
type Policy struct {
	// MaxRetries is how many times a failed run is tried again; 0 never.
	MaxRetries int
	// BackoffBase is the wait before the first retry; each later retry
	// waits twice as long as the one before, up to BackoffMax, with jitter.
	BackoffBase time.Duration
	BackoffMax  time.Duration
	// TimeLimit cancels a run's context when it is reached.
	TimeLimit time.Duration
	// Priority is the priority of a submit that names none ("low",
	// "normal" or "high"); empty means "normal".
	Priority string
	// Rate limits how often tasks of the type start, across every worker
	// process; the tasks over it wait on the delay queues.
	Rate Rate
	// MaxRunningPerKey limits how many tasks of the type with the same
	// concurrency key run at once, across every worker process; 0 is no
	// limit.
	MaxRunningPerKey int
}

// Backoff is the wait before retry number attempt (1 for the first):
// exponential in attempt, capped at BackoffMax, and spread over its upper
// half by jitter (a value in [0,1)) so that tasks failing together do not
// retry together.
func (p Policy) Backoff(attempt int, jitter float64) time.Duration {
	d := p.BackoffBase
	for i := 1; i < attempt && d < p.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, p.BackoffMax)
	return d/2 + time.Duration(jitter*float64(d/2))
}

// ErrInvalidArgs marks arguments a task cannot run with; retrying such a
// task would fail the same way.
var ErrInvalidArgs = errors.New("invalid task arguments")

// Permanent marks err as not worth retrying.
func Permanent(err error) error { return permanentError{err} }

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// Retryable reports whether a run that failed with err may be tried again.
func Retryable(err error) bool {
	var p permanentError
	return !errors.As(err, &p) && !errors.Is(err, ErrInvalidArgs)
}

// Registry maps task names to their definitions.
type Registry struct {
	defs map[string]Definition
}

// Lookup returns the definition registered under name.
func (r *Registry) Lookup(name string) (Definition, bool) {
	d, ok := r.defs[name]
	return d, ok
}

// Known reports whether name is a registered task type.
func (r *Registry) Known(name string) bool {
	_, ok := r.defs[name]
	return ok
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
	// Mailer delivers send_welcome_email's message; nil logs it instead.
	Mailer Mailer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Files is the file store of the tasks that read and write files;
	// without it they fail.
	Files Files
	// Fetcher fetches the URLs tasks take instead of files; nil fetches
	// with FetchConfig's defaults.
	Fetcher *Fetcher
	// ImageMaxPixels is the largest image process_image decodes;
	// 0 means DefaultImageMaxPixels.
	ImageMaxPixels int
	// Items is where import_csv_data stores its rows; without it the
	// import fails.
	Items Items
	// Reports is what generate_monthly_report reads; without it the
	// report fails.
	Reports ReportData
	// ImageSlots is how many images process_image holds decoded at once
	// in this process; 0 means the number of CPUs.
	ImageSlots int
}

// NewRegistry returns the registry of errand's built-in tasks.
func NewRegistry(cfg Config) *Registry {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Mailer == nil {
		cfg.Mailer = LogMailer{Logger: cfg.Logger}
	}
	if cfg.Fetcher == nil {
		cfg.Fetcher = NewFetcher(FetchConfig{})
	}
	if cfg.ImageMaxPixels <= 0 {
		cfg.ImageMaxPixels = DefaultImageMaxPixels
	}
	if cfg.ImageSlots <= 0 {
		cfg.ImageSlots = runtime.NumCPU()
	}
	r := &Registry{defs: map[string]Definition{}}
	r.Register(Declare(heavyTask(cfg)))
	r.Register(Declare(welcomeEmailTask(cfg)))
	r.Register(Declare(processImageTask(cfg)))
	r.Register(Declare(importCSVTask(cfg)))
	r.Register(Declare(monthlyReportTask(cfg)))
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
