package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// scheduleRequest is POST /api/schedules's body.
type scheduleRequest struct {
	Name     *string `json:"name" jsonschema:"required"`
	Cron     *string `json:"cron"`
	Every    *string `json:"every"`
	Timezone *string `json:"timezone"`
	Task     *struct {
		Type     *string         `json:"type" jsonschema:"required"`
		Args     json.RawMessage `json:"args"`
		Priority *string         `json:"priority"`
	} `json:"task" jsonschema:"required"`
}

// scheduleRoutes serve the schedules of the request's API key.
type scheduleRoutes struct {
	store   scheduleStore
	specs   taskSpecs
	maxBody int64
	now     func() time.Time
}

// newSchedule checks req and makes the schedule it asks for.
func (sr scheduleRoutes) newSchedule(req scheduleRequest, owner string) (schedule, error) {
	s := schedule{Owner: owner, CreatedAt: mongoTime(sr.now())}
	switch {
	case req.Name == nil:
		return schedule{}, invalidField("name", "is required")
	case !scheduleNamePattern.MatchString(*req.Name):
		return schedule{}, invalidField("name", "must be 1 to 100 letters, digits, '_', '.' or '-', starting with a letter or digit")
	}
	s.Name = *req.Name
	switch {
	case (req.Cron == nil) == (req.Every == nil):
		return schedule{}, invalidField("cron", "give cron (\"*/5 * * * *\") or every (\"30s\"), one of them")
	case req.Cron != nil:
		if strings.HasPrefix(*req.Cron, "CRON_TZ=") || strings.HasPrefix(*req.Cron, "TZ=") {
			return schedule{}, invalidField("cron", "give the time zone as timezone, not in the expression")
		}
		if _, err := cron.ParseStandard(*req.Cron); err != nil {
			return schedule{}, invalidField("cron", "%v", err)
		}
		s.Cron = *req.Cron
		if req.Timezone != nil {
			if _, err := time.LoadLocation(*req.Timezone); err != nil || *req.Timezone == "" || *req.Timezone == "Local" {
				return schedule{}, invalidField("timezone", "must be an IANA time zone such as Europe/Paris")
			}
			s.Timezone = *req.Timezone
		}
	default:
		every, err := time.ParseDuration(*req.Every)
		if err != nil || every < minScheduleEvery {
			return schedule{}, invalidField("every", "must be a duration of at least %v, such as 30s or 5m", minScheduleEvery)
		}
		if every%time.Millisecond != 0 {
			return schedule{}, invalidField("every", "must be whole milliseconds")
		}
		if req.Timezone != nil {
			return schedule{}, invalidField("timezone", "applies to cron only")
		}
		s.Every = every
	}
	if req.Task == nil {
		return schedule{}, invalidField("task", "is required: {\"type\", \"args\", \"priority\"}")
	}
	if req.Task.Type == nil {
		return schedule{}, invalidField("task.type", "is required")
	}
	spec, err := sr.specs.check(*req.Task.Type, req.Task.Args, req.Task.Priority, "task.type", "task.args", "task.priority")
	if err != nil {
		return schedule{}, err
	}
	s.Task = spec
	tk, err := s.ticker()
	if err != nil {
		return schedule{}, fmt.Errorf("read the new schedule: %w", err)
	}
	s.NextRun = tk.next(s.CreatedAt)
	if !s.NextRun.After(s.CreatedAt) {
		// robfig/cron gives the zero time for an expression that matches
		// no time in the next five years (February 30th, say).
		return schedule{}, invalidField("cron", "matches no time in the next five years")
	}
	return s, nil
}

// handleCreateSchedule is POST /api/schedules.
func handleCreateSchedule(sr scheduleRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req scheduleRequest
		if err := decodeJSON(w, r, sr.maxBody, &req); err != nil {
			return err
		}
		s, err := sr.newSchedule(req, taskOwner(r.Context()))
		if err != nil {
			return err
		}
		err = sr.store.createSchedule(r.Context(), s)
		if errors.Is(err, errScheduleExists) {
			return &apiError{status: http.StatusConflict, code: "schedule_exists",
				message: fmt.Sprintf("a schedule named %q exists; delete it first, or pick another name", s.Name)}
		}
		if err != nil {
			return fmt.Errorf("%w: %w", errStoreUnavailable, err)
		}
		w.Header().Set("Location", "/api/schedules/"+s.Name)
		writeJSON(w, http.StatusCreated, newScheduleJSON(s))
		return nil
	}
}

type scheduleDeletedJSON struct {
	Message string `json:"message"`
	Name    string `json:"name"`
}

type scheduleListJSON struct {
	Schedules []scheduleJSON `json:"schedules"`
}

// handleListSchedules is GET /api/schedules.
func handleListSchedules(sr scheduleRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		list, err := sr.store.listSchedules(r.Context(), taskOwner(r.Context()))
		if err != nil {
			return fmt.Errorf("%w: %w", errStoreUnavailable, err)
		}
		out := scheduleListJSON{Schedules: make([]scheduleJSON, len(list))}
		for i, s := range list {
			out.Schedules[i] = newScheduleJSON(s)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// handleGetSchedule is GET /api/schedules/{name}.
func handleGetSchedule(sr scheduleRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		s, err := sr.store.getSchedule(r.Context(), taskOwner(r.Context()), r.PathValue("name"))
		if err != nil {
			return scheduleError(err)
		}
		writeJSON(w, http.StatusOK, newScheduleJSON(s))
		return nil
	}
}

// handleDeleteSchedule is DELETE /api/schedules/{name}: no tick fires
// after it.
func handleDeleteSchedule(sr scheduleRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("name")
		if err := sr.store.deleteSchedule(r.Context(), taskOwner(r.Context()), name); err != nil {
			return scheduleError(err)
		}
		writeJSON(w, http.StatusOK, scheduleDeletedJSON{Message: "Schedule deleted", Name: name})
		return nil
	}
}

// handlePauseSchedule is POST /api/schedules/{name}/pause (paused) and
// /resume: a resumed schedule goes on from its next tick, and the ticks
// it skipped while paused never fire.
func handlePauseSchedule(sr scheduleRoutes, paused bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		s, err := sr.store.getSchedule(ctx, taskOwner(ctx), r.PathValue("name"))
		if err != nil {
			return scheduleError(err)
		}
		tk, err := s.ticker()
		if err != nil {
			return err
		}
		s, err = sr.store.setPaused(ctx, s.Owner, s.Name, paused, tk.next(sr.now()))
		if err != nil {
			return scheduleError(err)
		}
		writeJSON(w, http.StatusOK, newScheduleJSON(s))
		return nil
	}
}

func scheduleError(err error) error {
	if errors.Is(err, errNotFound) {
		return &apiError{status: http.StatusNotFound, code: "not_found", message: "no schedule of that name"}
	}
	return fmt.Errorf("%w: %w", errStoreUnavailable, err)
}
