package main

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	"errand/tasks"
)

// Concurrency keys. A task may carry a concurrency_key (a tenant, a user,
// an account); its type's MaxRunningPerKey bounds how many tasks of that
// type and key run at once across every worker process. Before it runs
// such a task, a worker takes one of the key's slots in a store every
// process shares (keySlots), on a lease it renews while the task runs, so
// the slot of a worker that dies comes free when the lease ends. A task
// that finds no free slot is parked (parkedTasks, in MongoDB like the
// results, so a parked task is as safe as a queued one) and its message
// acked: it holds no worker and no place in the queue. Each task that
// ends releases the next parked task of its key, highest priority first,
// back onto the queue, and every worker process sweeps now and then for
// keys with free slots and parked tasks (slots freed by leases that ran
// out, releases that failed).
//
// Fair sharing follows: a key with a big backlog occupies at most its
// limit of workers while the rest of its tasks wait parked, so another
// key's tasks start as soon as they reach a worker.

// maxConcurrencyKey bounds a concurrency key's length.
const maxConcurrencyKey = 200

// Sweeps and claims.
const (
	// keySweepInterval is how often a worker process looks for parked
	// tasks whose key has a free slot.
	keySweepInterval = 2 * time.Second
	// parkClaimTimeout is how long a release may take between claiming a
	// parked task and removing it once it is back on the queue; a claim
	// older than that belongs to a process that died, and its task is
	// released again.
	parkClaimTimeout = 30 * time.Second
	// parkedRestoreEvery is how many sweeps go between two restores of
	// the parked tasks' order (a minute): each reads every parked task's
	// id.
	parkedRestoreEvery = 30
)

// keySlots holds the running slots of concurrency keys. Its
// implementations are redisKeySlots and memoryKeySlots.
type keySlots interface {
	// acquire takes a slot of scope for holder if fewer than limit are
	// held, for lease, and reports whether it did.
	acquire(ctx context.Context, scope, holder string, limit int, lease time.Duration) (bool, error)
	// renew extends holder's lease, and reports false when it had ended.
	renew(ctx context.Context, scope, holder string, lease time.Duration) (bool, error)
	release(ctx context.Context, scope, holder string) error
	// held counts the live slots of scope.
	held(ctx context.Context, scope string) (int, error)
}

// parkedTasks keeps the tasks waiting for a slot of their key. Its
// implementations are durableParkedTasks and memoryParkedTasks.
type parkedTasks interface {
	park(ctx context.Context, scope string, m taskMessage) error
	// claim claims up to n of scope's parked tasks that no one claimed, or
	// whose claim is older than stale, highest priority first, then
	// oldest first.
	claim(ctx context.Context, scope string, n int, stale time.Duration) ([]taskMessage, error)
	// remove forgets a parked task (by its parkedID) once it is back on
	// the queue.
	remove(ctx context.Context, scope, parked string) error
	// waiting counts the parked tasks of every scope that has some.
	waiting(ctx context.Context) (map[string]int, error)
	// restore repairs what a store of the order of the parked tasks lost,
	// from the store of the tasks, for those parked before olderThan, and
	// says how many it put back.
	restore(ctx context.Context, olderThan time.Time) (int, error)
}

// parkedID identifies one park of a task: a task parked again after a
// release is a new record.
func parkedID(m taskMessage) string { return m.ID + "/" + strconv.Itoa(m.Parked) }

// skipReleasedDone acks a task released from parking that has a result
// already (a release that ran twice, or a task cancelled while it was
// parked), and reports whether it did.
func (p *workerPool) skipReleasedDone(ctx context.Context, j job) bool {
	if j.msg.Parked == 0 {
		return false
	}
	rec, err := p.results.getResult(ctx, j.msg.ID)
	if err != nil {
		return false
	}
	j.log.Info("released task has ended already; acking")
	if err := p.workflowStepEnded(ctx, j, rec); err != nil {
		p.settle(j, settleRequeue)
		return true
	}
	p.settle(j, settleAck)
	return true
}

// keyScope is the scope of a task's slots: its type and its key. Type
// names have no "/".
func keyScope(taskType, key string) string { return taskType + "/" + key }

func scopeParts(scope string) (taskType, key string) {
	taskType, key, _ = strings.Cut(scope, "/")
	return taskType, key
}

// keyBucket is the metrics label of a key: one of 16 buckets of a hash of
// it, so the number of series stays bounded however many keys there are.
func keyBucket(key string) string {
	h := fnv.New32a()
	h.Write([]byte(key))
	return strconv.Itoa(int(h.Sum32() % 16))
}

// takeKeySlot takes a slot of the task's key before it runs, and reports
// whether it settled the delivery instead (parked it, or put it off when
// the stores failed). release ends the slot's lease and sends the key's
// next parked task to the queue.
func (p *workerPool) takeKeySlot(ctx context.Context, j job, limit int) (settled bool, release func()) {
	scope := keyScope(j.msg.Type, j.msg.ConcurrencyKey)
	// A slot is held by one delivery: the redelivery of a task whose
	// worker died waits, like any task, for a slot, which may be the dead
	// worker's once its lease ends, and a duplicate delivery takes a slot
	// of its own, so the limit holds whatever the broker does.
	holder := j.msg.ID + "/" + newRandomID(8)
	ok, err := p.slots.acquire(ctx, scope, holder, limit, p.keySlotLease)
	if err == nil && !ok {
		parked := j.msg
		// Each park is a record of its own (parkedID), so a task released
		// and parked again before its release forgot it is not lost; it
		// keeps its first place in line. Its rate slot is spent: once
		// released, it reserves another.
		parked.Parked++
		if parked.ParkedAt.IsZero() {
			parked.ParkedAt = p.now()
		}
		parked.RateSlot = time.Time{}
		err = p.parked.park(ctx, scope, parked)
		if err == nil {
			p.metrics.taskParked(j.msg.Type)
			j.log.Debug("concurrency key at its limit; task parked", "concurrency_key", j.msg.ConcurrencyKey, "limit", limit)
			p.settle(j, settleAck)
			return true, nil
		}
	}
	if err != nil {
		j.log.Warn("concurrency key slot not taken; trying again later", "error", err, "retry_in", throttleRetry.String())
		p.putOff(ctx, j, j.msg, throttleRetry)
		return true, nil
	}
	bucket := keyBucket(j.msg.ConcurrencyKey)
	p.metrics.keyTaskRunning(bucket, 1)
	renewCtx, stopRenewing := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		tick := time.NewTicker(p.keySlotLease / 3)
		defer tick.Stop()
		for {
			select {
			case <-renewCtx.Done():
				return
			case <-tick.C:
				renewed, err := p.slots.renew(renewCtx, scope, holder, p.keySlotLease)
				if err != nil {
					j.log.Warn("concurrency key slot lease not renewed", "error", err)
				} else if !renewed {
					// The lease ended before this renewal (Redis was out
					// of reach for a lease): the task runs on without a
					// slot, and the key may run one over its limit.
					j.log.Warn("concurrency key slot lost: its lease ended while the task ran")
				}
			}
		}
	}()
	return false, func() {
		stopRenewing()
		p.metrics.keyTaskRunning(bucket, -1)
		// The slot is released even when shutdown ended ctx.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*statusOpTimeout)
		defer cancel()
		if err := p.slots.release(ctx, scope, holder); err != nil {
			j.log.Warn("concurrency key slot not released; its lease will end", "error", err)
			return
		}
		p.releaseParked(ctx, scope, 1)
	}
}

// releaseParked sends up to n of scope's parked tasks back to the queue,
// where each takes a slot like any task. A task is removed from the
// parked ones only once the broker has it; a release that dies midway
// leaves a claim that ends after parkClaimTimeout, and the sweep
// releases the task again.
func (p *workerPool) releaseParked(ctx context.Context, scope string, n int) int {
	msgs, err := p.parked.claim(ctx, scope, n, parkClaimTimeout)
	if err != nil {
		p.log.Warn("parked tasks not claimed", "error", err)
		return 0
	}
	released := 0
	for _, m := range msgs {
		if err := p.queue.publish(ctx, m); err != nil {
			p.log.Warn("parked task not released; the sweep will try again", "task_id", m.ID, "error", err)
			continue
		}
		if err := p.parked.remove(ctx, scope, parkedID(m)); err != nil {
			// It is queued: at worst it is released twice, and a worker
			// that gets a released task which has a result skips it
			// (skipReleasedDone).
			p.log.Warn("released task not removed from the parked ones", "task_id", m.ID, "error", err)
		}
		released++
	}
	return released
}

// sweepParked releases, for every key with parked tasks, as many as it has
// free slots, and measures how many wait.
func (p *workerPool) sweepParked(ctx context.Context) {
	waiting, err := p.parked.waiting(ctx)
	if err != nil {
		p.log.Warn("parked tasks not swept", "error", err)
		return
	}
	byBucket := map[string]int{}
	for scope, n := range waiting {
		taskType, key := scopeParts(scope)
		byBucket[keyBucket(key)] += n
		def, ok := p.definition(taskType)
		if !ok || def.Policy.MaxRunningPerKey <= 0 {
			// The limit was lifted since the tasks were parked: they all
			// go.
			p.releaseParked(ctx, scope, n)
			continue
		}
		held, err := p.slots.held(ctx, scope)
		if err != nil {
			p.log.Warn("concurrency key slots not counted", "error", err)
			continue
		}
		if free := def.Policy.MaxRunningPerKey - held; free > 0 {
			p.releaseParked(ctx, scope, min(free, n))
		}
	}
	p.metrics.keyTasksWaiting(byBucket)
}

// runKeySweeper sweeps every keySweepInterval until ctx ends, and now
// and then restores the order of parked tasks Redis may have lost.
func (p *workerPool) runKeySweeper(ctx context.Context) {
	tick := time.NewTicker(keySweepInterval)
	defer tick.Stop()
	for sweep := 1; ; sweep++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if sweep%parkedRestoreEvery == 0 {
			// A task parks in two steps; one parked a while ago is done.
			if n, err := p.parked.restore(ctx, p.now().Add(-keySweepInterval*5)); err != nil {
				p.log.Warn("parked tasks not restored", "error", err)
			} else if n > 0 {
				p.log.Warn("parked tasks restored to Redis, which had lost them", "restored", n)
			}
		}
		p.sweepParked(ctx)
	}
}

// parseKeyLimits reads MAX_RUNNING_PER_KEY: a number, the default of
// every type, and type=number pairs, separated by commas: "4,process_image=1".
func parseKeyLimits(s string) (fallback int, byType map[string]int, err error) {
	byType = map[string]int{}
	for _, item := range splitList(s) {
		name, value, isPair := strings.Cut(item, "=")
		if !isPair {
			name, value = "", item
		}
		n, err := strconv.Atoi(strings.TrimSpace(value))
		if err != nil || n < 0 {
			return 0, nil, fmt.Errorf("MAX_RUNNING_PER_KEY: %q: want a number of at least 0, or type=number", item)
		}
		if name = strings.TrimSpace(name); isPair && name == "" {
			return 0, nil, fmt.Errorf("MAX_RUNNING_PER_KEY: %q: the type is missing", item)
		}
		if !isPair {
			fallback = n
			continue
		}
		byType[name] = n
	}
	return fallback, byType, nil
}

// applyKeyLimits sets MAX_RUNNING_PER_KEY on the registry: its default on
// the types whose policy sets no limit, its pairs on theirs.
func applyKeyLimits(registry *tasks.Registry, s string) error {
	fallback, byType, err := parseKeyLimits(s)
	if err != nil {
		return err
	}
	for _, name := range registry.Names() {
		def, _ := registry.Lookup(name)
		n, named := byType[name]
		if !named {
			if def.Policy.MaxRunningPerKey > 0 {
				continue
			}
			n = fallback
		}
		if err := registry.SetMaxRunningPerKey(name, n); err != nil {
			return err
		}
	}
	for name := range byType {
		if !registry.Known(name) {
			return fmt.Errorf("MAX_RUNNING_PER_KEY: no task type %q; known types: %s", name, strings.Join(registry.Names(), ", "))
		}
	}
	return nil
}
