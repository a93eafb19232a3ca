package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"errand/tasks"
)

// A task type's rate limit (its policy's Rate, or TASK_RATE_LIMITS) holds
// across every worker process: each start reserves the next free slot of
// the type, one interval after the last reserved, in a store every
// process shares. A task whose slot is later goes to the delay queues
// until it, holding no worker slot, and runs then without asking again.

// taskThrottle hands out start slots. Its implementations are
// redisThrottle and memoryThrottle.
type taskThrottle interface {
	// reserve reserves the next start of taskType, interval after the one
	// before, and returns how long from now it is.
	reserve(ctx context.Context, taskType string, interval time.Duration) (wait time.Duration, err error)
}

// throttleRetry is how long a task waits when its slot could not be
// reserved (the store is down): it asks again then, rather than run over
// the limit.
const throttleRetry = time.Second

// throttle reserves a start for a rate-limited task and reports whether
// it settled the delivery: a task whose slot is later waits for it on the
// delay queues.
func (p *workerPool) throttle(ctx context.Context, j job, rate tasks.Rate) bool {
	wait, err := p.throttles.reserve(ctx, j.msg.Type, rate.Interval())
	next := j.msg
	switch {
	case err != nil:
		j.log.Warn("rate limit slot not reserved; asking again later", "error", err, "retry_in", throttleRetry.String())
		wait = throttleRetry
	case wait <= etaTolerance:
		return false
	default:
		next.RateSlot = p.now().Add(wait)
	}
	p.metrics.taskThrottled(j.msg.Type)
	j.log.Debug("task over its type's rate limit; waiting for its slot", "wait", wait.String(), "rate", rate.String())
	p.putOff(ctx, j, next, wait)
	return true
}

// parseTaskRates reads TASK_RATE_LIMITS: type=rate pairs separated by
// commas, "process_image=10/s,import_csv_data=2/m".
func parseTaskRates(s string) (map[string]tasks.Rate, error) {
	rates := map[string]tasks.Rate{}
	for _, pair := range splitList(s) {
		name, spec, ok := strings.Cut(pair, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("TASK_RATE_LIMITS: %q: want type=rate, such as process_image=10/s", pair)
		}
		rate, err := tasks.ParseRate(spec)
		if err != nil {
			return nil, fmt.Errorf("TASK_RATE_LIMITS: %s: %w", name, err)
		}
		rates[name] = rate
	}
	return rates, nil
}

// applyTaskRates sets the rates of TASK_RATE_LIMITS on the registry's
// types; naming a type that does not exist is an error.
func applyTaskRates(registry *tasks.Registry, s string) error {
	rates, err := parseTaskRates(s)
	if err != nil {
		return err
	}
	for name, rate := range rates {
		if err := registry.SetRate(name, rate); err != nil {
			return fmt.Errorf("TASK_RATE_LIMITS: %w; known types: %s", err, strings.Join(registry.Names(), ", "))
		}
	}
	return nil
}
