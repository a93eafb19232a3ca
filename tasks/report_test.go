package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// memReports is a ReportData of the tests.
type memReports struct {
	items []ReportItem
	tasks []ReportTask
	// asked records the queries, to check what the task asks for.
	asked []string
}

func (m *memReports) MonthItems(_ context.Context, owner, userID string, from, to time.Time, each func(ReportItem)) error {
	m.asked = append(m.asked, fmt.Sprintf("items %s %s %s..%s", owner, userID, from.Format(time.DateOnly), to.Format(time.DateOnly)))
	for _, it := range m.items {
		each(it)
	}
	return nil
}

func (m *memReports) MonthTasks(_ context.Context, owner, userID string, from, to time.Time, each func(ReportTask)) error {
	m.asked = append(m.asked, fmt.Sprintf("tasks %s %s %s..%s", owner, userID, from.Format(time.DateOnly), to.Format(time.DateOnly)))
	for _, t := range m.tasks {
		each(t)
	}
	return nil
}

// sentMail keeps what a Mailer was given.
type sentMail struct{ mails []Mail }

func (s *sentMail) Send(_ context.Context, m Mail) error {
	s.mails = append(s.mails, m)
	return nil
}

// aMonth is a month of data: items on many days in five categories, and
// tasks of three types in every final state.
func aMonth() *memReports {
	m := &memReports{}
	start := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	cats := []string{"books", "tools", "garden", "kitchen", ""}
	for i := range 300 {
		m.items = append(m.items, ReportItem{CreatedAt: start.Add(time.Duration(i*i%(30*24)) * time.Hour), Category: cats[i*i%7%len(cats)]})
	}
	for i := range 60 {
		created := start.Add(time.Duration(i) * 11 * time.Hour)
		state := []string{"SUCCESS", "SUCCESS", "SUCCESS", "FAILURE", "REVOKED"}[i%5]
		t := ReportTask{Type: []string{"process_image", "import_csv_data", "send_welcome_email"}[i%3], Status: state, CreatedAt: created, FinishedAt: created.Add(time.Duration(1+i) * time.Second)}
		if state != "REVOKED" {
			t.StartedAt = created.Add(100 * time.Millisecond)
		}
		m.tasks = append(m.tasks, t)
	}
	return m
}

func runReport(t *testing.T, cfg Config, args string) (ReportResult, []Progress) {
	t.Helper()
	res, reports, err := runType[ReportResult](t, cfg, MonthlyReportName, args)
	if err != nil {
		t.Fatalf("report %s: %v", args, err)
	}
	return res, reports
}

// renderPDF renders a PDF's pages to PNGs with poppler's pdftoppm, as a
// reader would show them, and returns their paths.
func renderPDF(t *testing.T, pdf []byte) []string {
	t.Helper()
	if _, err := exec.LookPath("pdftoppm"); err != nil {
		t.Fatal("pdftoppm (poppler-utils) is needed to check the report opens in a real reader: scripts/test installs it")
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "report.pdf")
	if err := os.WriteFile(in, pdf, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("pdftoppm", "-r", "50", "-png", in, filepath.Join(dir, "page")).CombinedOutput(); err != nil {
		t.Fatalf("pdftoppm: %v\n%s", err, out)
	}
	pages, _ := filepath.Glob(filepath.Join(dir, "page-*.png"))
	return pages
}

func TestMonthlyReportIsAPDFWithChartsAndTables(t *testing.T) {
	files, data, mailer := newMemFiles(), aMonth(), &sentMail{}
	res, reports := runReport(t, Config{Files: files, Reports: data, Mailer: mailer}, `{"user_id": 42, "month": "2026-11", "email": "ann@example.com"}`)
	if want := []string{"items owner-a 42 2026-11-01..2026-12-01", "tasks owner-a 42 2026-11-01..2026-12-01"}; strings.Join(data.asked, "; ") != strings.Join(want, "; ") {
		t.Errorf("queries %q, want %q", data.asked, want)
	}
	var percents []int
	for _, p := range reports {
		percents = append(percents, p.Percent)
	}
	if fmt.Sprint(percents) != "[20 40 70 90]" {
		t.Errorf("progress %v, want the guide's 20, 40, 70, 90", percents)
	}
	pdf := files.data(t, res.ReportFileID)
	if !bytes.HasPrefix(pdf, []byte("%PDF-")) || res.Bytes != int64(len(pdf)) || res.Items != 300 || res.Tasks != 60 || res.SentTo != "ann@example.com" {
		t.Errorf("result %+v for a %d-byte file starting %q", res, len(pdf), pdf[:min(8, len(pdf))])
	}
	if pages := renderPDF(t, pdf); len(pages) != 3 || res.Pages != 3 {
		t.Errorf("pdftoppm rendered %d pages, the result says %d; want 3 (title, items, tasks)", len(pages), res.Pages)
	}
	if len(mailer.mails) != 1 {
		t.Fatalf("%d mails sent, want 1", len(mailer.mails))
	}
	m := mailer.mails[0]
	if m.To != "ann@example.com" || len(m.Attachments) != 1 || !bytes.Equal(m.Attachments[0].Data, pdf) || m.Attachments[0].Filename != "report-42-2026-11.pdf" || !strings.Contains(m.Body, "300 items and 60 tasks") {
		t.Errorf("mail to %s, %q, with %d attachments, want the report attached", m.To, m.Body, len(m.Attachments))
	}
}

func TestMonthlyReportOfAnEmptyMonthSaysSo(t *testing.T) {
	files := newMemFiles()
	res, _ := runReport(t, Config{Files: files, Reports: &memReports{}}, `{"user_id": "ann", "month": "2026-02"}`)
	pdf := files.data(t, res.ReportFileID)
	if pages := renderPDF(t, pdf); len(pages) != 1 || res.Pages != 1 || res.Items != 0 || res.Tasks != 0 || res.SentTo != "" {
		t.Errorf("empty month: %d pages rendered, result %+v; want one page, nothing sent", len(pages), res)
	}
	text := pdfText(t, pdf)
	if !strings.Contains(text, "no items and no tasks for user ann in February 2026") {
		t.Errorf("the empty month's report says %q, want it to say there was nothing", text)
	}
}

// pdfText is the PDF's text, by poppler's pdftotext.
func pdfText(t *testing.T, pdf []byte) string {
	t.Helper()
	in := filepath.Join(t.TempDir(), "report.pdf")
	if err := os.WriteFile(in, pdf, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("pdftotext", "-layout", in, "-").CombinedOutput()
	if err != nil {
		t.Fatalf("pdftotext: %v\n%s", err, out)
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

func TestReportArgs(t *testing.T) {
	def, _ := NewRegistry(Config{}).Lookup(MonthlyReportName)
	for args, field := range map[string]string{
		`{"month": "2026-11"}`:                                        "user_id",
		`{"user_id": 1}`:                                              "month",
		`{"user_id": 1, "month": "2026-13"}`:                          "month",
		`{"user_id": 1, "month": "26-11"}`:                            "month",
		`{"user_id": 1, "month": "2026-11", "email": "not an email"}`: "email",
		`{"user_id": 1.5, "month": "2026-11"}`:                        "user_id",
	} {
		_, err := def.CheckArgs(json.RawMessage(args))
		var fe *FieldError
		if !asFieldError(err, &fe) || fe.Field != field {
			t.Errorf("arguments %s: error %v, want one about %s", args, err, field)
		}
	}
}

func asFieldError(err error, fe **FieldError) bool {
	e, ok := err.(*FieldError)
	*fe = e
	return ok
}
