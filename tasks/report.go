package tasks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/mail"
	"slices"
	"sort"
	"strings"
	"time"
)

// MonthlyReportName is the guide's generate_monthly_report (Part 6).
const MonthlyReportName = "generate_monthly_report"

// ReportData is what a monthly report is made of: errand's items and
// finished tasks, in MongoDB.
type ReportData interface {
	// MonthItems calls each for every item of owner whose metadata.user_id
	// is userID (as a string, or the same whole number), created in
	// [from, to).
	MonthItems(ctx context.Context, owner, userID string, from, to time.Time, each func(ReportItem)) error
	// MonthTasks calls each for every finished task of owner submitted with
	// the argument user_id userID in [from, to).
	MonthTasks(ctx context.Context, owner, userID string, from, to time.Time, each func(ReportTask)) error
}

// ReportItem is what a report counts of an item.
type ReportItem struct {
	CreatedAt time.Time
	Category  string // metadata.category; empty without one
}

// ReportTask is what a report counts of a finished task.
type ReportTask struct {
	Type   string
	Status string // SUCCESS, FAILURE or REVOKED
	// StartedAt is zero for a task that never ran (cancelled before).
	CreatedAt, StartedAt, FinishedAt time.Time
}

// ReportArgs are generate_monthly_report's arguments.
type ReportArgs struct {
	UserID UserID `json:"user_id" jsonschema:"required"`
	Month  string `json:"month" jsonschema:"required,pattern=^[0-9]{4}-(0[1-9]|1[0-2])$" jsonschema_description:"The month to report, YYYY-MM, in UTC."`
	Email  string `json:"email,omitempty" jsonschema:"maxLength=254" jsonschema_description:"Where to send the report as a PDF attachment; without it the report is only stored."`
}

// Validate checks what the schema cannot: a plain address.
func (a ReportArgs) Validate() error {
	if a.Email == "" {
		return nil
	}
	addr, err := mail.ParseAddress(a.Email)
	if err != nil || addr.Address != a.Email || !strings.Contains(a.Email[strings.LastIndexByte(a.Email, '@')+1:], ".") {
		return &FieldError{Field: "email", Reason: "must be a plain e-mail address such as john@example.com"}
	}
	return nil
}

// ReportResult is generate_monthly_report's result: the guide's
// report_url and sent_to, and the file and its pages.
type ReportResult struct {
	ReportFileID string `json:"report_file_id"`
	ReportURL    string `json:"report_url"`
	SentTo       string `json:"sent_to,omitempty"`
	Pages        int    `json:"pages"`
	Bytes        int64  `json:"bytes"`
	Items        int    `json:"items"`
	Tasks        int    `json:"tasks"`
	CompletedAt  string `json:"completed_at"`
}

// monthData is a month of a user's items and tasks, counted.
type monthData struct {
	userID      string
	month       time.Time // its first instant, UTC
	days        int
	itemsPerDay []float64 // index 0 is day 1
	itemsPerCat map[string]int
	items       int
	tasks       map[string]*taskTally // by type
	tasksTotal  int
	generatedAt time.Time
}

// taskTally counts one task type's tasks of the month.
type taskTally struct {
	states map[string]int
	runs   []time.Duration // of the tasks that ran
}

func (d *monthData) empty() bool { return d.items == 0 && d.tasksTotal == 0 }

// monthlyReportTask gathers a user's month from MongoDB, draws its
// charts, writes a PDF, stores it as a file and, when asked, mails it,
// with the guide's progress (20, 40, 70, 90).
func monthlyReportTask(cfg Config) Type[ReportArgs] {
	return Type[ReportArgs]{
		Name:        MonthlyReportName,
		Description: "The guide's monthly report: a user's items (per day and category) and tasks (per type and state, with run times) of a month, as a PDF with charts, stored as a file and optionally e-mailed.",
		Policy:      Policy{MaxRetries: 3, BackoffBase: 2 * time.Second, BackoffMax: time.Minute, TimeLimit: 10 * time.Minute},
		Run: func(ctx context.Context, task Task, args ReportArgs) (any, error) {
			if cfg.Reports == nil || cfg.Files == nil {
				return nil, Permanent(errors.New("this process has no report data or file store"))
			}
			month, err := time.Parse("2006-01", args.Month)
			if err != nil {
				return nil, Permanent(fmt.Errorf("month %q: %w", args.Month, err))
			}
			task.Report(ctx, Progress{Percent: 20, Status: "Fetching the month's data"})
			data, err := gatherMonth(ctx, cfg, task.Owner, string(args.UserID), month)
			if err != nil {
				return nil, err
			}
			task.Report(ctx, Progress{Percent: 40, Status: "Drawing the charts"})
			charts, err := drawCharts(data)
			if err != nil {
				return nil, err
			}
			task.Report(ctx, Progress{Percent: 70, Status: "Writing the PDF"})
			var pdf bytes.Buffer
			pages, err := writeReportPDF(&pdf, data, charts)
			if err != nil {
				return nil, err
			}
			name := fmt.Sprintf("report-%s-%s.pdf", safeName(string(args.UserID)), args.Month)
			size := int64(pdf.Len())
			attachment := Attachment{Filename: name, ContentType: "application/pdf", Data: pdf.Bytes()}
			f, err := saveOutput(ctx, cfg, task, name, "application/pdf", bytes.NewReader(pdf.Bytes()))
			if err != nil {
				return nil, err
			}
			res := ReportResult{ReportFileID: f.ID, ReportURL: f.URL(), Pages: pages, Bytes: size, Items: data.items, Tasks: data.tasksTotal}
			if args.Email != "" {
				task.Report(ctx, Progress{Percent: 90, Status: "Sending the report to " + args.Email})
				err := cfg.Mailer.Send(ctx, Mail{
					To:          args.Email,
					Subject:     fmt.Sprintf("Your report for %s", month.Format("January 2006")),
					Body:        reportMailBody(data),
					Attachments: []Attachment{attachment},
				})
				if err != nil {
					cfg.Logger.WarnContext(ctx, "report not mailed", "task_id", task.ID, "to", args.Email, "error", err)
					return nil, fmt.Errorf("send the report to %s: %w", args.Email, errMailNotSent)
				}
				res.SentTo = args.Email
			}
			res.CompletedAt = Timestamp(cfg.Now())
			return res, nil
		},
	}
}

// gatherMonth reads and counts the user's month.
func gatherMonth(ctx context.Context, cfg Config, owner, userID string, month time.Time) (*monthData, error) {
	end := month.AddDate(0, 1, 0)
	d := &monthData{
		userID: userID, month: month, days: int(end.Sub(month).Hours() / 24),
		itemsPerCat: map[string]int{}, tasks: map[string]*taskTally{}, generatedAt: cfg.Now().UTC(),
	}
	d.itemsPerDay = make([]float64, d.days)
	err := cfg.Reports.MonthItems(ctx, owner, userID, month, end, func(it ReportItem) {
		day := it.CreatedAt.UTC().Day() - 1
		if day < 0 || day >= d.days {
			return
		}
		d.items++
		d.itemsPerDay[day]++
		cat := it.Category
		if cat == "" {
			cat = "(none)"
		}
		d.itemsPerCat[cat]++
	})
	if err != nil {
		return nil, fmt.Errorf("read the month's items: %w", err)
	}
	err = cfg.Reports.MonthTasks(ctx, owner, userID, month, end, func(t ReportTask) {
		tally := d.tasks[t.Type]
		if tally == nil {
			tally = &taskTally{states: map[string]int{}}
			d.tasks[t.Type] = tally
		}
		d.tasksTotal++
		tally.states[t.Status]++
		if !t.StartedAt.IsZero() && t.FinishedAt.After(t.StartedAt) {
			tally.runs = append(tally.runs, t.FinishedAt.Sub(t.StartedAt))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read the month's tasks: %w", err)
	}
	return d, nil
}

// maxCategories is how many categories a report shows by name; the
// rest are counted together as "other".
const maxCategories = 8

// categories are the month's categories, most items first, the smallest
// folded into "other".
func (d *monthData) categories() (names []string, counts []float64) {
	for name := range d.itemsPerCat {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := d.itemsPerCat[names[i]], d.itemsPerCat[names[j]]
		return a > b || a == b && names[i] < names[j]
	})
	other := 0
	if len(names) > maxCategories {
		for _, n := range names[maxCategories-1:] {
			other += d.itemsPerCat[n]
		}
		names = append(names[:maxCategories-1], "other")
	}
	for _, n := range names {
		if n == "other" && other > 0 {
			counts = append(counts, float64(other))
			continue
		}
		counts = append(counts, float64(d.itemsPerCat[n]))
	}
	return names, counts
}

// taskTypes are the month's task types in name order.
func (d *monthData) taskTypes() []string {
	types := make([]string, 0, len(d.tasks))
	for t := range d.tasks {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// runStats are the median and the longest of runs.
func runStats(runs []time.Duration) (median, longest time.Duration) {
	if len(runs) == 0 {
		return 0, 0
	}
	sorted := slices.Clone(runs)
	slices.Sort(sorted)
	return sorted[len(sorted)/2], sorted[len(sorted)-1]
}

func reportMailBody(d *monthData) string {
	if d.empty() {
		return fmt.Sprintf("Hello,\n\nthere were no items or tasks for user %s in %s. The attached report says so.\n", d.userID, d.month.Format("January 2006"))
	}
	return fmt.Sprintf("Hello,\n\nattached is the report for user %s for %s: %d items and %d tasks.\n", d.userID, d.month.Format("January 2006"), d.items, d.tasksTotal)
}

// safeName keeps the letters, digits, dashes and underscores of s, for a
// file name.
func safeName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}
