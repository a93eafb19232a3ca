package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// GET /api/tasks lists a key's tasks in every state, newest first. The
// tasks that have not finished are in the status store, which indexes
// them by owner and creation time; the finished ones are in the result
// store. A listing reads both from the cursor on and merges them.

func keyOf(st taskStatus) pageKey {
	created := st.UpdatedAt
	if st.CreatedAt != nil {
		created = *st.CreatedAt
	}
	return pageKey{created: created.UTC().Truncate(time.Millisecond), id: st.TaskID}
}

// taskQuery is one page of a listing.
type taskQuery struct {
	owner    string
	status   string // one state, or "" for all
	taskType string // "" for all
	key      string // one concurrency key, or "" for all
	since    time.Time
	// after is the last task of the previous page; zero for the first.
	after *pageKey
	limit int
}

// matches reports whether st passes the query's filters (not its page).
func (q taskQuery) matches(st taskStatus) bool {
	return st.Owner == q.owner && (q.status == "" || st.Status == q.status) && (q.taskType == "" || st.TaskType == q.taskType) &&
		(q.key == "" || st.ConcurrencyKey == q.key) &&
		!keyOf(st).created.Before(q.since.Truncate(time.Millisecond))
}

// taskPage is what one store found of a page: its tasks, newest first,
// and how far it looked. A store that did not look to the end of its
// tasks (it found limit of them, or stopped scanning) sets reached to
// the key it stopped at: it knows nothing of older tasks.
type taskPage struct {
	tasks   []taskStatus
	reached *pageKey
}

// liveLister pages through the tasks that have not finished.
type liveLister interface {
	listLive(ctx context.Context, q taskQuery) (taskPage, error)
}

// finishedLister pages through the finished tasks.
type finishedLister interface {
	listFinished(ctx context.Context, q taskQuery) (taskPage, error)
}

// listTasks reads one page of q from both stores and merges them.
func listTasks(ctx context.Context, live liveLister, finished finishedLister, q taskQuery) ([]taskStatus, *pageKey, error) {
	var pages []taskPage
	if q.status == "" || stateRank(q.status) < 2 {
		p, err := live.listLive(ctx, q)
		if err != nil {
			return nil, nil, fmt.Errorf("list unfinished tasks: %w", err)
		}
		pages = append(pages, p)
	}
	if q.status == "" || stateRank(q.status) == 2 {
		p, err := finished.listFinished(ctx, q)
		if err != nil {
			return nil, nil, fmt.Errorf("list finished tasks: %w", err)
		}
		pages = append(pages, p)
	}
	// Only what every store has looked at is certain: a task older than
	// where one store stopped may be in that store's next page.
	var frontier *pageKey
	for _, p := range pages {
		if p.reached != nil && (frontier == nil || frontier.before(*p.reached)) {
			frontier = p.reached
		}
	}
	seen := map[string]int{}
	var merged []taskStatus
	for _, p := range pages {
		for _, st := range p.tasks {
			if frontier != nil && keyOf(st).before(*frontier) {
				continue
			}
			// A task that finished between the two reads is in both: the
			// finished record is the later word.
			if i, dup := seen[st.TaskID]; dup {
				if st.final() {
					merged[i] = st
				}
				continue
			}
			seen[st.TaskID] = len(merged)
			merged = append(merged, st)
		}
	}
	sortNewestFirst(merged)
	if len(merged) > q.limit {
		merged = merged[:q.limit]
		last := keyOf(merged[len(merged)-1])
		return merged, &last, nil
	}
	if frontier != nil {
		next := *frontier
		if len(merged) > 0 {
			if last := keyOf(merged[len(merged)-1]); last.before(next) {
				next = last
			}
		}
		return merged, &next, nil
	}
	return merged, nil, nil
}

// pageOf is the page of q in tasks, which all pass q's filters: for the
// stores that hold every task in memory.
func pageOf(tasks []taskStatus, q taskQuery) taskPage {
	sortNewestFirst(tasks)
	var page taskPage
	for _, st := range tasks {
		k := keyOf(st)
		if q.after != nil && !k.before(*q.after) {
			continue
		}
		page.tasks = append(page.tasks, st)
		if len(page.tasks) == q.limit {
			page.reached = &k
			break
		}
	}
	return page
}

// sortNewestFirst sorts tasks in listing order.
func sortNewestFirst(tasks []taskStatus) {
	slices.SortFunc(tasks, func(a, b taskStatus) int { return newestFirst(keyOf(a), keyOf(b)) })
}

// taskListJSON is a page of GET /api/tasks.
type taskListJSON struct {
	Tasks []taskJSON `json:"tasks"`
	// NextCursor, when set, fetches the next page (older tasks); the
	// pages stay correct while tasks are added.
	NextCursor string `json:"next_cursor,omitempty"`
}

// handleListTasks is GET /api/tasks?status=&type=&since=&limit=&cursor=:
// the request's API key's tasks in every state, newest first.
func handleListTasks(reader taskStatusReader, known func(string) bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		query := r.URL.Query()
		q := taskQuery{owner: taskOwner(r.Context()), status: query.Get("status"), taskType: query.Get("type"), key: query.Get("concurrency_key")}
		switch q.status {
		case "", statePending, stateScheduled, stateProgress, stateRetry, stateSuccess, stateFailure, stateRevoked:
		default:
			return invalidField("status", "must be one of PENDING, SCHEDULED, PROGRESS, RETRY, SUCCESS, FAILURE, REVOKED")
		}
		if q.taskType != "" && !known(q.taskType) {
			return invalidField("type", "unknown task type %q", q.taskType)
		}
		if len(q.key) > maxConcurrencyKey || !printableASCII(q.key) {
			return invalidField("concurrency_key", "must be at most %d printable ASCII characters", maxConcurrencyKey)
		}
		if v := query.Get("since"); v != "" {
			since, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return invalidField("since", "must be an RFC 3339 time such as 2026-12-01T00:00:00Z")
			}
			q.since = since
		}
		limit, err := queryInt(r, "limit", defaultPageSize, 1, maxPageSize)
		if err != nil {
			return err
		}
		q.limit = limit
		if q.after, err = queryCursor(r); err != nil {
			return err
		}
		list, next, err := listTasks(r.Context(), reader.statuses, reader.results, q)
		if err != nil {
			return fmt.Errorf("%w: %w", errStoreUnavailable, err)
		}
		out := taskListJSON{Tasks: make([]taskJSON, 0, len(list))}
		for _, st := range list {
			if !st.final() && reader.now().Sub(st.UpdatedAt) >= statusStaleAfter {
				// A running task's status that has not moved for a while
				// may belong to a task whose final status was never
				// written: the status reader repairs it from the result
				// store, and it is listed as it now stands, if it still
				// passes the filter.
				if repaired, err := reader.status(r.Context(), st.TaskID); err == nil {
					st = repaired
				}
				if !q.matches(st) {
					continue
				}
			}
			out.Tasks = append(out.Tasks, newTaskJSON(st))
		}
		if next != nil {
			out.NextCursor = encodeCursor(*next)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}
