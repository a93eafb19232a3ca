package main

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"errand/tasks"
)

// reportSource is what generate_monthly_report reads: a user's items and
// finished tasks of a month.
type reportSource interface {
	// monthItems calls each for every item of owner whose metadata.user_id
	// is userID, created in [from, to).
	monthItems(ctx context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportItem)) error
	// monthTasks calls each for every finished task of owner with the
	// argument user_id userID, submitted in [from, to).
	monthTasks(ctx context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportTask)) error
}

// taskReports is the report source as tasks see it (tasks.ReportData).
type taskReports struct{ source reportSource }

func (tr taskReports) MonthItems(ctx context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportItem)) error {
	return tr.source.monthItems(ctx, owner, userID, from, to, each)
}

func (tr taskReports) MonthTasks(ctx context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportTask)) error {
	return tr.source.monthTasks(ctx, owner, userID, from, to, each)
}

// userIDValues are the stored values that mean userID: the string, and
// the whole number it spells, as the guide's integer user_id is stored
// in an item's metadata.
func userIDValues(userID string) []any {
	values := []any{userID}
	if n, err := strconv.ParseInt(userID, 10, 64); err == nil && strconv.FormatInt(n, 10) == userID {
		values = append(values, n, float64(n))
	}
	return values
}

// isUserID reports whether a stored value v means userID: the string,
// or a whole number that spells it.
func isUserID(v any, userID string) bool {
	switch v := v.(type) {
	case string:
		return v == userID
	case int64, int32, int:
		return fmt.Sprint(v) == userID
	case float64:
		return v == math.Trunc(v) && strconv.FormatFloat(v, 'f', -1, 64) == userID
	}
	return false
}

// reportTask is a finished task as a report counts it.
func (r taskRecord) reportTask() tasks.ReportTask {
	t := tasks.ReportTask{Type: r.TaskType, Status: r.Status, CreatedAt: r.CreatedAt, FinishedAt: r.CompletedAt}
	if r.StartedAt != nil {
		t.StartedAt = *r.StartedAt
	}
	return t
}
