package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// scheduler fires the ticks of the schedules. Every process that serves
// the API runs one; the store's compare-and-set lets exactly one of them
// claim each tick, and the tick's task is submitted with an
// Idempotency-Key of the schedule and the tick, so a process that dies
// between claiming a tick and recording its task leaves it to another,
// which queues it once.
type scheduler struct {
	store     scheduleStore
	submitter taskSubmitter
	metrics   *metrics
	log       *slog.Logger
	now       func() time.Time
	// poll is the longest the scheduler sleeps between two looks at the
	// store: it wakes at the earliest next run, or after poll if that is
	// later (a schedule made or resumed meanwhile, perhaps by another
	// process, is found then).
	poll time.Duration
	// missGrace is how late a tick may still fire. A tick later than that
	// was missed while no process ran: it is skipped and counted, so that
	// a restart never fires a burst of old ticks.
	missGrace time.Duration
	// lease is how long a claimed tick may stay unqueued before another
	// process takes it over.
	lease time.Duration
}

// minSchedulerWait is the least time between two looks at the store.
const minSchedulerWait = 50 * time.Millisecond

func newScheduler(store scheduleStore, submitter taskSubmitter, m *metrics, log *slog.Logger) *scheduler {
	return &scheduler{store: store, submitter: submitter, metrics: m, log: log, now: time.Now,
		poll: time.Second, missGrace: 5 * time.Second, lease: 30 * time.Second}
}

// run fires due ticks until ctx ends.
func (s *scheduler) run(ctx context.Context) {
	for {
		s.fireDue(ctx)
		wait := s.poll
		if next, err := s.store.nextDue(ctx); err == nil && !next.IsZero() {
			// A schedule the store keeps due (its next run could not be
			// moved on) must not spin the loop.
			wait = min(wait, max(minSchedulerWait, next.Sub(s.now())))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// fireDue fires the ticks due now, and takes over those a dead process
// claimed but never queued.
func (s *scheduler) fireDue(ctx context.Context) {
	now := s.now()
	stuck, err := s.store.stuckTicks(ctx, now.Add(-s.lease))
	if err != nil {
		s.log.WarnContext(ctx, "could not read the unqueued schedule ticks", "error", err)
	}
	for _, st := range stuck {
		if now.Sub(st.tick) > s.lease+s.missGrace {
			// Every tick of an outage stays claimed and unqueued: firing
			// them all when it ends would be the burst missGrace prevents.
			// Only the latest of a schedule's can be recent enough.
			if err := s.store.skipTick(ctx, st.schedule.id(), st.tick); err != nil {
				s.log.WarnContext(ctx, "could not skip a schedule tick not queued in time", "schedule", st.schedule.Name, "error", err)
				continue
			}
			s.log.WarnContext(ctx, "schedule tick not queued in time; skipped", "schedule", st.schedule.Name, "tick", st.tick)
			s.metrics.scheduleTicksSkipped(st.schedule.Task.Type, 1)
			continue
		}
		s.log.WarnContext(ctx, "taking over a schedule tick whose task was never recorded as queued", "schedule", st.schedule.Name, "tick", st.tick)
		s.fire(ctx, st.schedule, st.tick)
	}
	due, err := s.store.dueSchedules(ctx, now)
	if err != nil {
		s.log.WarnContext(ctx, "could not read the due schedules", "error", err)
		return
	}
	for _, sch := range due {
		s.claim(ctx, sch, now)
	}
}

// claim claims the schedule's due tick, fires it unless it is too late,
// and moves the schedule on to its first tick after now.
func (s *scheduler) claim(ctx context.Context, sch schedule, now time.Time) {
	tk, err := sch.ticker()
	if err != nil {
		s.log.ErrorContext(ctx, "schedule cannot be read", "schedule", sch.Name, "error", err)
		return
	}
	// The ticks from the schedule's next run to now are due. The latest
	// fires if it is recent enough; the ones before it, and it too if it
	// is not, were missed and are skipped.
	tick := sch.NextRun
	skipped := missedTicks(tk, tick, now)
	for t := tick; ; {
		next := tk.next(t)
		if !next.After(t) || next.After(now) {
			break
		}
		t, tick = next, next
	}
	fire := now.Sub(tick) <= s.missGrace
	if fire {
		skipped--
	}
	won, err := s.store.claimTick(ctx, sch.id(), sch.NextRun, tick, tk.next(now), fire, now)
	if err != nil {
		s.log.WarnContext(ctx, "could not claim a schedule tick, or move the schedule on", "schedule", sch.Name, "won", won, "error", err)
	}
	if !won {
		return // another process did, or the claim failed
	}
	if skipped > 0 {
		s.metrics.scheduleTicksSkipped(sch.Task.Type, skipped)
		s.log.WarnContext(ctx, "schedule ticks missed while no errand ran; skipped", "schedule", sch.Name, "skipped", skipped, "first", tick)
	}
	if fire {
		s.fire(ctx, sch, tick)
	}
}

// missedTicks counts the ticks from tick to now, both included, up to a
// bound far past any real gap.
func missedTicks(tk ticker, tick, now time.Time) int {
	n := 0
	for t := tick; !t.After(now) && n < 1_000_000; n++ {
		next := tk.next(t)
		if !next.After(t) {
			return n + 1 // a ticker with no later tick
		}
		t = next
	}
	return n
}

// fire queues the task of the schedule's tick, as the schedule's owner,
// and records it. A failure leaves the tick unrecorded, and it is fired
// again after the lease; the Idempotency-Key makes that queue it once.
func (s *scheduler) fire(ctx context.Context, sch schedule, tick time.Time) {
	ctx = context.WithValue(ctx, ownerKey{}, sch.Owner)
	key := fmt.Sprintf("schedule %s %d", sch.id(), tick.UnixMilli())
	sub, err := s.submitter.submit(ctx, sch.Task, key)
	if err != nil {
		s.log.WarnContext(ctx, "schedule tick not queued; another try after the lease", "schedule", sch.Name, "tick", tick, "error", err)
		return
	}
	if err := s.store.settleTick(ctx, sch.id(), firedTick{Tick: tick, TaskID: sub.id}); err != nil {
		s.log.WarnContext(ctx, "schedule tick queued but not recorded; it is queued once all the same", "schedule", sch.Name, "error", err)
	}
	if !sub.replayed {
		s.metrics.scheduleTickFired(sch.Task.Type)
	}
	s.log.InfoContext(ctx, "schedule fired", "schedule", sch.Name, "tick", tick, "task_id", sub.id, "replayed", sub.replayed)
}
