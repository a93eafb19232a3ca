package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"errand/tasks"
)

// The console's pages: the overview, the task list, schedules and dead
// letters (a task's own page is in console_task.go), and what the
// templates share.

// taskStates are the states a task list can be filtered by, in the order
// a task goes through them.
var taskStates = []string{statePending, stateScheduled, stateProgress, stateRetry, stateSuccess, stateFailure, stateRevoked}

type overviewPage struct {
	Queues    []queueLine
	Counts    []stateCount
	Failures  []taskJSON
	Recent    []taskJSON
	Problems  []string
	UpdatedAt time.Time
}

type queueLine struct {
	Name     string
	Messages int
	Dead     bool
}

// stateCount is how many tasks are in a state, up to overviewCountLimit.
type stateCount struct {
	Label string
	State string
	Since string // a task-list filter on the time, for the link
	Count int
	More  bool // there are more than Count
}

// overviewCountLimit bounds the overview's counts: each is one page of
// the task listing.
const overviewCountLimit = 100

func (c *console) overview(w http.ResponseWriter, r *http.Request) error {
	p := overviewPage{UpdatedAt: c.now()}
	problem := func(what string, err error) {
		c.log.WarnContext(r.Context(), "console overview: part not shown", "part", what, "request_id", requestID(r.Context()), "error", err)
		p.Problems = append(p.Problems, what+": "+apiMessage(err))
	}
	if depths, err := c.queues.queueDepths(r.Context()); err != nil {
		c.log.WarnContext(r.Context(), "console overview: queue depths", "error", err)
		p.Problems = append(p.Problems, "queue depths: the broker did not answer")
	} else {
		for name, n := range depths {
			p.Queues = append(p.Queues, queueLine{Name: name, Messages: n, Dead: strings.HasSuffix(name, ".dead")})
		}
		slices.SortFunc(p.Queues, func(a, b queueLine) int { return cmp.Compare(a.Name, b.Name) })
	}
	recentSince := c.now().Add(-5 * time.Minute)
	for _, sc := range []stateCount{
		{Label: "Running", State: stateProgress}, {Label: "Waiting to run", State: statePending},
		{Label: "Scheduled", State: stateScheduled}, {Label: "Waiting to retry", State: stateRetry},
		{Label: "Succeeded, of those submitted in the last 5 min", State: stateSuccess, Since: "5m"},
		{Label: "Failed, of those submitted in the last 5 min", State: stateFailure, Since: "5m"},
	} {
		q := url.Values{"status": {sc.State}, "limit": {strconv.Itoa(overviewCountLimit)}}
		if sc.Since != "" {
			q.Set("since", recentSince.Format(time.RFC3339Nano))
		}
		list, err := c.fetchTasks(r.Context(), q)
		if err != nil {
			problem(sc.Label, err)
			continue
		}
		sc.Count, sc.More = len(list.Tasks), list.NextCursor != "" && len(list.Tasks) == overviewCountLimit
		p.Counts = append(p.Counts, sc)
	}
	if list, err := c.fetchTasks(r.Context(), url.Values{"status": {stateFailure}, "limit": {"5"}}); err != nil {
		problem("recent failures", err)
	} else {
		p.Failures = list.Tasks
	}
	if list, err := c.fetchTasks(r.Context(), url.Values{"limit": {"10"}}); err != nil {
		problem("recent tasks", err)
	} else {
		p.Recent = list.Tasks
	}
	c.render(w, r, http.StatusOK, "overview", "Overview", p)
	return nil
}

// fetchTasks is a page of GET /api/tasks.
func (c *console) fetchTasks(ctx context.Context, q url.Values) (taskListJSON, error) {
	var list taskListJSON
	_, err := c.api.call(ctx, http.MethodGet, "/api/tasks?"+q.Encode(), nil, &list)
	return list, err
}

type taskListPage struct {
	Tasks  []taskJSON
	States []string
	Types  []string
	Spans  []timeSpan
	// The filters as given.
	Status, Type, Since, Key, ID string
	Notice                       string
	Next                         string // the link to older tasks, if any
}

// timeSpan is a choice of the task list's time filter.
type timeSpan struct {
	Value, Label string
	d            time.Duration
}

var timeSpans = []timeSpan{{"5m", "last 5 minutes", 5 * time.Minute}, {"1h", "last hour", time.Hour},
	{"24h", "last day", 24 * time.Hour}, {"7d", "last week", 7 * 24 * time.Hour}}

// taskList is the task list, with filters by state, type, time and
// concurrency key, and a search by id that opens the task.
func (c *console) taskList(w http.ResponseWriter, r *http.Request) error {
	in := r.URL.Query()
	p := taskListPage{States: taskStates, Spans: timeSpans,
		Status: in.Get("status"), Type: in.Get("type"), Since: in.Get("since"), Key: in.Get("concurrency_key"), ID: strings.TrimSpace(in.Get("id"))}
	if p.ID != "" {
		_, err := c.api.call(r.Context(), http.MethodGet, "/api/tasks/"+url.PathEscape(p.ID), nil, nil)
		if err == nil {
			http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(p.ID), http.StatusSeeOther)
			return nil
		}
		if !isStatus(err, http.StatusNotFound, http.StatusBadRequest) {
			return err
		}
		p.Notice = fmt.Sprintf("No task has the id %q.", p.ID)
	}
	types, err := c.taskTypes(r.Context())
	if err != nil {
		return err
	}
	for _, t := range types {
		p.Types = append(p.Types, t.Name)
	}
	q := url.Values{"limit": {"50"}}
	for _, f := range []string{"status", "type", "concurrency_key", "cursor"} {
		if v := in.Get(f); v != "" {
			q.Set(f, v)
		}
	}
	if p.Since != "" {
		i := slices.IndexFunc(timeSpans, func(s timeSpan) bool { return s.Value == p.Since })
		if i < 0 {
			return invalidField("since", "must be one of 5m, 1h, 24h, 7d")
		}
		q.Set("since", c.now().Add(-timeSpans[i].d).Format(time.RFC3339Nano))
	}
	list, err := c.fetchTasks(r.Context(), q)
	if err != nil {
		return err
	}
	p.Tasks = list.Tasks
	if list.NextCursor != "" {
		next := url.Values{"cursor": {list.NextCursor}}
		for f, v := range map[string]string{"status": p.Status, "type": p.Type, "since": p.Since, "concurrency_key": p.Key} {
			if v != "" {
				next.Set(f, v)
			}
		}
		p.Next = "/ui/tasks?" + next.Encode()
	}
	c.render(w, r, http.StatusOK, "tasks", "Tasks", p)
	return nil
}

type schedulesPage struct {
	Schedules []scheduleJSON
	Done      string
}

var scheduleDone = map[string]string{"pause": "Paused.", "resume": "Resumed: it runs from its next tick.", "delete": "Deleted."}

func (c *console) scheduleList(w http.ResponseWriter, r *http.Request) error {
	var list scheduleListJSON
	if _, err := c.api.call(r.Context(), http.MethodGet, "/api/schedules", nil, &list); err != nil {
		return err
	}
	c.render(w, r, http.StatusOK, "schedules", "Schedules", schedulesPage{Schedules: list.Schedules, Done: scheduleDone[r.URL.Query().Get("done")]})
	return nil
}

// scheduleAction pauses, resumes or deletes a schedule.
func (c *console) scheduleAction(w http.ResponseWriter, r *http.Request) error {
	action, target := r.PathValue("action"), "/api/schedules/"+url.PathEscape(r.PathValue("name"))
	method := http.MethodPost
	switch action {
	case "pause", "resume":
		target += "/" + action
	case "delete":
		method = http.MethodDelete
	default:
		return &apiError{status: http.StatusNotFound, code: "not_found", message: "A schedule can be paused, resumed or deleted; not " + action + "."}
	}
	if _, err := c.api.call(r.Context(), method, target, nil, nil); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/schedules?done="+action, http.StatusSeeOther)
	return nil
}

func (c *console) notFound(http.ResponseWriter, *http.Request) error {
	return &apiError{status: http.StatusNotFound, code: "not_found", message: "The console has no such page."}
}

// isStatus reports whether err is an API error with one of statuses.
func isStatus(err error, statuses ...int) bool {
	var ae *apiError
	return errors.As(err, &ae) && slices.Contains(statuses, ae.status)
}

func prettyJSON(v any) string {
	if raw, ok := v.(json.RawMessage); ok {
		var parsed any
		if json.Unmarshal(raw, &parsed) == nil {
			v = parsed
		}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// consoleTemplateFuncs are the helpers the console's templates use.
func consoleTemplateFuncs(now func() time.Time) template.FuncMap {
	return template.FuncMap{
		"when": func(t any) string {
			switch v := t.(type) {
			case *time.Time:
				if v == nil {
					return ""
				}
				return v.UTC().Format("2006-01-02 15:04:05 UTC")
			case time.Time:
				return v.UTC().Format("2006-01-02 15:04:05 UTC")
			}
			return ""
		},
		"ago": func(t *time.Time) string {
			if t == nil {
				return ""
			}
			return humanAgo(now().Sub(*t))
		},
		"percent":    progressPercent,
		"stateClass": func(s string) string { return "state-" + strings.ToLower(s) },
		// rfc3339 is a time as an HTML datetime attribute wants it.
		"rfc3339": func(t any) string {
			switch v := t.(type) {
			case *time.Time:
				if v != nil {
					return v.UTC().Format(time.RFC3339)
				}
			case time.Time:
				return v.UTC().Format(time.RFC3339)
			}
			return ""
		},
	}
}

func progressPercent(p *tasks.Progress) int {
	if p == nil {
		return 0
	}
	return min(max(p.Percent, 0), 100)
}

// humanAgo says how long ago something was, roughly.
func humanAgo(d time.Duration) string {
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%d s ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d min ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d h ago", int(d.Hours()))
	}
	return fmt.Sprintf("%d days ago", int(d.Hours()/24))
}

type deadLettersPage struct {
	List deadLetterListJSON
	Done string
}

func (c *console) deadLetterList(w http.ResponseWriter, r *http.Request) error {
	var list deadLetterListJSON
	if _, err := c.api.call(r.Context(), http.MethodGet, "/api/dead-letters?limit="+strconv.Itoa(maxPageSize), nil, &list); err != nil {
		return err
	}
	done := ""
	if n := r.URL.Query().Get("purged"); n != "" {
		if count, err := strconv.Atoi(n); err == nil {
			done = fmt.Sprintf("Dead letters purged: %d.", count)
		}
	}
	c.render(w, r, http.StatusOK, "deadletters", "Dead letters", deadLettersPage{List: list, Done: done})
	return nil
}

// requeueDeadLetter runs a dead letter's task again and opens the new
// task.
func (c *console) requeueDeadLetter(w http.ResponseWriter, r *http.Request) error {
	var answer retryAccepted
	if _, err := c.api.call(r.Context(), http.MethodPost, "/api/dead-letters/"+url.PathEscape(r.PathValue("task_id"))+"/requeue", nil, &answer); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(answer.TaskID)+"?done=requeue", http.StatusSeeOther)
	return nil
}

// purgeDeadLetters purges the dead letters once the form's box says so.
func (c *console) purgeDeadLetters(w http.ResponseWriter, r *http.Request) error {
	if r.PostFormValue("confirm") != "yes" {
		return invalidField("confirm", "tick the box to confirm the purge: it cannot be undone")
	}
	var purged deadLetterPurgedJSON
	if _, err := c.api.call(r.Context(), http.MethodDelete, "/api/dead-letters", nil, &purged); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/dead-letters?purged="+strconv.Itoa(purged.Purged), http.StatusSeeOther)
	return nil
}
