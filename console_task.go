package main

import (
	"cmp"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// A task's page in the console: what was asked, where it stands, its
// live progress (the API's event stream, proxied), its files, and the
// actions on it (cancel, retry).

type taskView struct {
	Task      taskJSON
	Final     bool
	Percent   int
	CanCancel bool
	CanRetry  bool
	Args      string
	Result    string
	Timeline  []timelineEntry
	Files     []fileLink
	Done      string
	// DoneInDoubt: the action's outcome is not known (an unconfirmed
	// submit).
	DoneInDoubt bool
}

type timelineEntry struct {
	What string
	At   time.Time
}

// fileLink is a file a task read or wrote, found by its field's name.
type fileLink struct {
	Field, ID string
}

// taskDone are the notes a task page shows after an action, by the
// action's name in the redirect.
var taskDone = map[string]string{
	"submit":  "Submitted: the broker has confirmed the task.",
	"cancel":  "Cancelled.",
	"retry":   "Queued again: this is the new task, with the failed one's arguments.",
	"requeue": "Requeued from the dead letters: this is the new task, with the dead one's arguments.",
	"unconfirmed": "The broker did not confirm this task in time: it may run, or may never have been queued. " +
		"It stays PENDING until a worker takes it up; submit it again only if it never does.",
}

// showTask is a task's page: what was asked, where it stands, its
// timeline, its result or error, and its files. console.js follows the
// task's events and updates the page as it runs.
func (c *console) showTask(w http.ResponseWriter, r *http.Request) error {
	var t taskJSON
	if _, err := c.api.call(r.Context(), http.MethodGet, "/api/tasks/"+url.PathEscape(r.PathValue("task_id")), nil, &t); err != nil {
		return err
	}
	done := r.URL.Query().Get("done")
	p := taskView{Task: t, Final: stateRank(t.Status) == 2, CanRetry: t.Status == stateFailure, Done: taskDone[done], DoneInDoubt: done == "unconfirmed"}
	p.CanCancel = !p.Final
	if p.Percent = progressPercent(t.Progress); t.Status == stateSuccess {
		p.Percent = 100
	}
	if len(t.Args) > 0 {
		p.Args = prettyJSON(t.Args)
		var args map[string]any
		if json.Unmarshal(t.Args, &args) == nil {
			p.Files = append(p.Files, fileLinks(args)...)
		}
	}
	if t.Result != nil {
		p.Result = prettyJSON(t.Result)
		p.Files = append(p.Files, fileLinks(t.Result)...)
	}
	for _, e := range []struct {
		what string
		at   *time.Time
	}{{"Submitted", t.CreatedAt}, {"Due", t.ScheduledFor}, {"Started", t.StartedAt}, {"Retry due", t.RetryAt}, {"Ended " + t.Status, t.FinishedAt}} {
		if e.at != nil {
			p.Timeline = append(p.Timeline, timelineEntry{What: e.what, At: *e.at})
		}
	}
	if t.Revoked != nil {
		p.Timeline = append(p.Timeline, timelineEntry{What: "Cancel asked", At: t.Revoked.At})
	}
	slices.SortStableFunc(p.Timeline, func(a, b timelineEntry) int { return a.At.Compare(b.At) })
	c.render(w, r, http.StatusOK, "task", "Task "+t.TaskID, p)
	return nil
}

// fileLinks are the fields of v that name a stored file: file_id and
// every *_file_id.
func fileLinks(v map[string]any) []fileLink {
	var out []fileLink
	for k, val := range v {
		id, ok := val.(string)
		if ok && id != "" && (k == "file_id" || strings.HasSuffix(k, "_file_id")) {
			out = append(out, fileLink{Field: k, ID: id})
		}
	}
	slices.SortFunc(out, func(a, b fileLink) int { return cmp.Compare(a.Field, b.Field) })
	return out
}

// taskEvents is the API's event stream of a task, for the task page's
// script, which cannot send an API key but sends the session cookie.
func (c *console) taskEvents(w http.ResponseWriter, r *http.Request) error {
	c.proxyAPI(w, r, "/api/tasks/", r.PathValue("task_id"), "/events")
	return nil
}

// file is the API's download of a stored file, for the task page's links.
func (c *console) file(w http.ResponseWriter, r *http.Request) error {
	c.proxyAPI(w, r, "/api/files/", r.PathValue("id"), "")
	return nil
}

// proxyAPI answers r with the API's answer at prefix+id+suffix, streamed
// as the API writes it, without the browser's cookies, and kept out of
// the browser's cache.
func (c *console) proxyAPI(w http.ResponseWriter, r *http.Request, prefix, id, suffix string) {
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = prefix+id+suffix, prefix+url.PathEscape(id)+suffix
	r2.Header.Del("Cookie")
	c.api.mux.ServeHTTP(noStore{w}, r2)
}

// noStore keeps Cache-Control at no-store whatever the API sets: what a
// signed-in key downloaded should not outlive its session in a cache.
type noStore struct{ http.ResponseWriter }

func (n noStore) WriteHeader(status int) {
	n.Header().Set("Cache-Control", "no-store")
	n.ResponseWriter.WriteHeader(status)
}

func (n noStore) Write(b []byte) (int, error) {
	n.Header().Set("Cache-Control", "no-store")
	return n.ResponseWriter.Write(b)
}

func (n noStore) Unwrap() http.ResponseWriter { return n.ResponseWriter }

func (c *console) cancelTask(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("task_id")
	if _, err := c.api.call(r.Context(), http.MethodPost, "/api/tasks/"+url.PathEscape(id)+"/cancel", nil, nil); err != nil {
		return err
	}
	http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(id)+"?done=cancel", http.StatusSeeOther)
	return nil
}

func (c *console) retryTask(w http.ResponseWriter, r *http.Request) error {
	var answer retryAccepted
	if _, err := c.api.call(r.Context(), http.MethodPost, "/api/tasks/"+url.PathEscape(r.PathValue("task_id"))+"/retry", nil, &answer); err != nil {
		if id := unconfirmedTask(err); id != "" {
			http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(id)+"?done=unconfirmed", http.StatusSeeOther)
			return nil
		}
		return err
	}
	http.Redirect(w, r, "/ui/tasks/"+url.PathEscape(answer.TaskID)+"?done=retry", http.StatusSeeOther)
	return nil
}
