package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/robfig/cron/v3"
)

// schedule is a periodic task: the task to submit at every tick of a cron
// expression or of a fixed interval, as its owner asked for it.
type schedule struct {
	Name     string
	Owner    string
	Cron     string        // a standard five-field cron expression, or ""
	Every    time.Duration // an interval, when Cron is ""
	Timezone string        // the IANA zone Cron is read in; "" is UTC
	Task     taskSpec
	Paused   bool
	// NextRun is the tick due next.
	NextRun   time.Time
	LastFired *firedTick
	CreatedAt time.Time
}

// firedTick is the last tick a schedule fired: its time and its task.
type firedTick struct {
	Tick   time.Time `json:"tick"`
	TaskID string    `json:"task_id"`
}

// id is the schedule's key: names are unique per owner.
func (s schedule) id() string { return scheduleID(s.Owner, s.Name) }

func scheduleID(owner, name string) string {
	if owner == "" {
		owner = "-"
	}
	return owner + "/" + name
}

// scheduleNamePattern is what a schedule's name may be: it goes in paths.
var scheduleNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)

// keptClaims is how long the claims of a schedule's past ticks are kept:
// long past any lease, so a tick is never claimed twice.
const keptClaims = time.Hour

// minScheduleEvery bounds how often a schedule may fire.
const minScheduleEvery = time.Second

// ticker is when a schedule's ticks fall.
type ticker interface {
	// next is the first tick after t.
	next(t time.Time) time.Time
}

type cronTicker struct {
	sched cron.Schedule
	loc   *time.Location
}

func (c cronTicker) next(t time.Time) time.Time { return c.sched.Next(t.In(c.loc)).UTC() }

type everyTicker struct {
	every  time.Duration
	anchor time.Time // ticks fall at anchor + k·every
}

func (e everyTicker) next(t time.Time) time.Time {
	if t.Before(e.anchor) {
		return e.anchor
	}
	return e.anchor.Add((t.Sub(e.anchor)/e.every + 1) * e.every)
}

// ticker reads the schedule's timing; a schedule from the store was
// checked when it was made, so an error means a mistake in errand.
func (s schedule) ticker() (ticker, error) {
	if s.Cron == "" {
		if s.Every < minScheduleEvery {
			return nil, fmt.Errorf("schedule %s: interval %v under %v", s.id(), s.Every, minScheduleEvery)
		}
		return everyTicker{every: s.Every, anchor: s.CreatedAt.Add(s.Every)}, nil
	}
	loc, err := time.LoadLocation(s.Timezone)
	if err != nil {
		return nil, fmt.Errorf("schedule %s: timezone: %w", s.id(), err)
	}
	sched, err := cron.ParseStandard(s.Cron)
	if err != nil {
		return nil, fmt.Errorf("schedule %s: cron: %w", s.id(), err)
	}
	return cronTicker{sched: sched, loc: loc}, nil
}

// errScheduleExists is a schedule made with the name of another of its
// owner's.
var errScheduleExists = errors.New("a schedule of that name exists")

// scheduleStore keeps the schedules, and the claims of their ticks. Its
// implementations are mongoSchedules and memorySchedules.
type scheduleStore interface {
	createSchedule(ctx context.Context, s schedule) error
	getSchedule(ctx context.Context, owner, name string) (schedule, error)
	listSchedules(ctx context.Context, owner string) ([]schedule, error)
	deleteSchedule(ctx context.Context, owner, name string) error
	// setPaused pauses or resumes a schedule, next running at nextRun.
	setPaused(ctx context.Context, owner, name string, paused bool, nextRun time.Time) (schedule, error)
	// dueSchedules are the unpaused schedules whose next run is at or
	// before now.
	dueSchedules(ctx context.Context, now time.Time) ([]schedule, error)
	// nextDue is the earliest next run of the unpaused schedules; zero
	// when there is none.
	nextDue(ctx context.Context) (time.Time, error)
	// claimTick claims a tick of the schedule id, whose next run was due:
	// of every process that tries, exactly one gets true. The schedule's
	// next run moves on from due to next either way, so a claim whose
	// winner died before moving it cannot hold the schedule back. fire
	// says whether the tick's task is to be queued (false: the tick was
	// missed, and is skipped).
	claimTick(ctx context.Context, id string, due, tick, next time.Time, fire bool, now time.Time) (bool, error)
	// stuckTicks are the ticks to fire that were claimed before
	// stuckBefore and whose task was never recorded as queued (their
	// process died between the two).
	stuckTicks(ctx context.Context, stuckBefore time.Time) ([]stuckTick, error)
	// settleTick records that a claimed tick's task is queued.
	settleTick(ctx context.Context, id string, fired firedTick) error
	// skipTick records that a claimed tick will not be queued after all.
	skipTick(ctx context.Context, id string, tick time.Time) error
}

// stuckTick is a claimed tick whose task may never have been queued.
type stuckTick struct {
	schedule schedule
	tick     time.Time
}

// scheduleJSON is a schedule as the schedules routes show it.
type scheduleJSON struct {
	Name      string           `json:"name"`
	Cron      string           `json:"cron,omitempty"`
	Every     string           `json:"every,omitempty"`
	Timezone  string           `json:"timezone,omitempty"`
	Task      scheduleTaskJSON `json:"task"`
	Paused    bool             `json:"paused"`
	NextRun   *time.Time       `json:"next_run,omitempty"`
	LastFired *firedTick       `json:"last_fired,omitempty"`
	CreatedAt time.Time        `json:"created_at"`
}

type scheduleTaskJSON struct {
	Type     string          `json:"type"`
	Args     json.RawMessage `json:"args"`
	Priority string          `json:"priority"`
}

func newScheduleJSON(s schedule) scheduleJSON {
	out := scheduleJSON{Name: s.Name, Cron: s.Cron, Timezone: s.Timezone, Paused: s.Paused, LastFired: s.LastFired, CreatedAt: s.CreatedAt,
		Task: scheduleTaskJSON{Type: s.Task.Type, Args: s.Task.Args, Priority: s.Task.Priority}}
	if s.Cron == "" {
		out.Every = s.Every.String()
	}
	if !s.Paused {
		next := s.NextRun
		out.NextRun = &next
	}
	return out
}
