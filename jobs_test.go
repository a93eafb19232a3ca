package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// The tests of the guide's Part 6 jobs (process_image, import_csv_data,
// generate_monthly_report) as a user runs them: files uploaded through
// /api/files, tasks through /api/tasks, outputs read back through
// /api/files, on the embedded backends and on the real servers.

// runJob submits body to /api/tasks and waits for the task to end.
func runJob(t testing.TB, base, body string, headers map[string]string, timeout time.Duration) taskJSON {
	t.Helper()
	var acc taskAccepted
	if resp := apiCall(t, "POST", base+"/api/tasks", body, headers, &acc); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit %s: %d %s, want 202", body, resp.StatusCode, resp.body)
	}
	var task taskJSON
	waitFor(t, timeout, "task "+acc.TaskID+" to end", func() bool {
		task = taskJSON{}
		return apiCall(t, "GET", base+"/api/tasks/"+acc.TaskID, "", headers, &task).StatusCode == http.StatusOK && stateRank(task.Status) == 2
	})
	return task
}

// uploadFile stores data through POST /api/files and returns its id.
func uploadFile(t testing.TB, base, filename, contentType string, data []byte, headers map[string]string) string {
	t.Helper()
	h := map[string]string{"Content-Type": contentType}
	for k, v := range headers {
		h[k] = v
	}
	var f fileJSON
	if resp := apiCall(t, "POST", base+"/api/files?filename="+filename, string(data), h, &f); resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload %s: %d %s", filename, resp.StatusCode, resp.body)
	}
	return f.FileID
}

// downloadFile reads a file back through GET, with its Content-Type.
func downloadFile(t testing.TB, base, url string, headers map[string]string) ([]byte, string) {
	t.Helper()
	resp := apiCall(t, "GET", base+url, "", headers, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, resp.body)
	}
	return []byte(resp.body), resp.Header.Get("Content-Type")
}

func testJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(testPNG(t, w, h)))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestProcessImageThroughTheAPI(t *testing.T) {
	photo := testJPEG(t, 640, 480)
	// The server an image_url points at: loopback, so errand fetches from
	// it only where FETCH_ALLOW_HOSTS allows 127.0.0.1.
	images := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Write(photo)
	}))
	defer images.Close()

	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			base := startErrand(t, withEnv(env(t), "FETCH_ALLOW_HOSTS", "127.0.0.1"))
			pngID := uploadFile(t, base, "chart.png", "image/png", testPNG(t, 200, 100), nil)
			jpegID := uploadFile(t, base, "photo.jpg", "image/jpeg", photo, nil)
			csvID := uploadFile(t, base, "rows.csv", "text/csv", []byte("name\nlamp\n"), nil)

			for _, tc := range []struct {
				args           string
				w, h           int
				format, ctype  string
				wantSourceName string
			}{
				{args: `{"file_id": "` + pngID + `", "width": 120, "watermark": "errand"}`, w: 120, h: 60, format: "jpeg", ctype: "image/jpeg"},
				{args: `{"file_id": "` + jpegID + `", "width": 320, "format": "png", "quality": 50}`, w: 320, h: 240, format: "png", ctype: "image/png"},
				{args: `{"image_url": "` + images.URL + `/photo.jpg", "user_id": 42}`, w: 640, h: 480, format: "jpeg", ctype: "image/jpeg"},
			} {
				task := runJob(t, base, `{"type": "process_image", "args": `+tc.args+`}`, nil, 30*time.Second)
				if task.Status != stateSuccess {
					t.Fatalf("process_image %s: %s %q", tc.args, task.Status, task.Error)
				}
				url, _ := task.Result["processed_url"].(string)
				data, ctype := downloadFile(t, base, url, nil)
				img, format, err := image.Decode(bytes.NewReader(data))
				if err != nil || format != tc.format || ctype != tc.ctype || img.Bounds().Dx() != tc.w || img.Bounds().Dy() != tc.h {
					t.Errorf("process_image %s: output %s %s %v (err %v), want a %dx%d %s", tc.args, format, ctype, img.Bounds(), err, tc.w, tc.h, tc.format)
				}
				if got := fmt.Sprint(task.Result["width"], "x", task.Result["height"], " ", task.Result["bytes"]); got != fmt.Sprint(tc.w, "x", tc.h, " ", len(data)) {
					t.Errorf("process_image %s: result says %s, the file is %dx%d %d bytes", tc.args, got, tc.w, tc.h, len(data))
				}
			}

			// Bad input fails at once, with what is wrong, and no retry.
			for args, want := range map[string]string{
				`{"file_id": "no-such-file"}`:  "file not found",
				`{"file_id": "` + csvID + `"}`: "not a JPEG, PNG or GIF image",
			} {
				task := runJob(t, base, `{"type": "process_image", "args": `+args+`}`, nil, 30*time.Second)
				if task.Status != stateFailure || !strings.Contains(task.Error, want) || task.Attempts != 1 {
					t.Errorf("process_image %s: %s after %d attempts, error %q; want FAILURE on the first, saying %q", args, task.Status, task.Attempts, task.Error, want)
				}
			}
			// The task type's metrics, which the dashboards chart by
			// task_type: a new type appears without an edit.
			families := scrape(t, base)
			for metric, want := range map[string]float64{"errand_tasks_succeeded_total": 3, "errand_tasks_failed_total": 2} {
				if got, ok := sampleValue(families, metric, map[string]string{"task_type": "process_image"}); !ok || got != want {
					t.Errorf("%s{task_type=\"process_image\"} = %v (present %v), want %v", metric, got, ok, want)
				}
			}
			// Out of range: refused at submit, before anything is queued.
			if resp := apiCall(t, "POST", base+"/api/tasks", `{"type": "process_image", "args": {"file_id": "`+pngID+`", "width": 10000}}`, nil, nil); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(resp.body, "width") {
				t.Errorf("width 10000: %d %s, want 422 naming width", resp.StatusCode, resp.body)
			}
		})
	}
}

// TestProcessImageRefusesInternalURLs: without FETCH_ALLOW_HOSTS, a task
// cannot make errand fetch from its own loopback (SSRF).
func TestProcessImageRefusesInternalURLs(t *testing.T) {
	base := startErrand(t, map[string]string{})
	task := runJob(t, base, fmt.Sprintf(`{"type": "process_image", "args": {"image_url": "%s/health"}}`, base), nil, 30*time.Second)
	if task.Status != stateFailure || !strings.Contains(task.Error, "loopback, private or link-local") || task.Attempts != 1 {
		t.Errorf("an image_url on errand's own loopback: %s after %d attempts, error %q; want a FAILURE refusing it", task.Status, task.Attempts, task.Error)
	}
}

// testCSV is a CSV of n good rows (row i is named item-i) and the bad
// rows given, after the good ones.
func testCSV(n int, bad ...string) []byte {
	var b strings.Builder
	b.WriteString("name,description,category,user_id\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "item-%d,row %d of the import,cat-%d,%d\n", i, i, i%4, 1+i%2)
	}
	for _, row := range bad {
		b.WriteString(row + "\n")
	}
	return []byte(b.String())
}

func TestImportCSVThroughTheAPI(t *testing.T) {
	rows := testCSV(1000, ",a row without a name,cat-1,1", "extra,fields,cat-1,1,surplus")
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			base := startErrand(t, env(t))
			id := uploadFile(t, base, "rows.csv", "text/csv", rows, nil)
			task := runJob(t, base, `{"type": "import_csv_data", "args": {"file_id": "`+id+`"}}`, nil, 60*time.Second)
			if task.Status != stateSuccess {
				t.Fatalf("import: %s %q", task.Status, task.Error)
			}
			wantRejected := `[{"error":"row name must be 1 to 200 characters","row":1002},{"error":"row has 5 fields, the header 4","row":1003}]`
			if r := task.Result; r["imported"] != 1000.0 || r["total"] != 1002.0 || r["added"] != 1000.0 || r["rejected_count"] != 2.0 || jsonString(t, r["rejected"]) != wantRejected {
				t.Errorf("result %v, want 1000 of 1002 imported and the two bad rows %s", r, wantRejected)
			}
			// The rows are items like any other.
			var listed []itemResponse
			apiCall(t, "GET", base+"/api/items?limit=3", "", nil, &listed)
			if len(listed) != 3 || listed[0].Name != "item-1000" || listed[0].Metadata["category"] != "cat-0" || listed[0].Description == nil || *listed[0].Description != "row 1000 of the import" {
				t.Errorf("newest items %+v, want the import's last rows, newest first", listed)
			}
			// Importing the same file again stores nothing twice.
			again := runJob(t, base, `{"type": "import_csv_data", "args": {"file_id": "`+id+`"}}`, nil, 60*time.Second)
			if again.Status != stateSuccess || again.Result["imported"] != 1000.0 || again.Result["added"] != 0.0 {
				t.Errorf("the same import again: %s %v, want 1000 imported and none added", again.Status, again.Result)
			}
			var page []itemResponse
			apiCall(t, "GET", base+"/api/items?skip=1000&limit=10", "", nil, &page)
			if len(page) != 0 {
				t.Errorf("%d items after the first 1000, want none: the second import added rows", len(page))
			}
			// A file that is not there fails at once.
			missing := runJob(t, base, `{"type": "import_csv_data", "args": {"file_id": "no-such-file"}}`, nil, 30*time.Second)
			if missing.Status != stateFailure || !strings.Contains(missing.Error, "file not found") || missing.Attempts != 1 {
				t.Errorf("import of a missing file: %s after %d attempts, %q; want FAILURE at once, file not found", missing.Status, missing.Attempts, missing.Error)
			}
		})
	}
}

func jsonString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// countImported counts the items of the test's database and how many
// distinct names they have.
func countImported(t *testing.T, env map[string]string) (items, names int) {
	t.Helper()
	ctx := context.Background()
	coll := testMongoAt(t, env["MONGODB_URI"]).Database(env["MONGODB_DATABASE"]).Collection("items")
	n, err := coll.CountDocuments(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	distinct := coll.Distinct(ctx, "name", bson.D{})
	var all []string
	if err := distinct.Decode(&all); err != nil {
		t.Fatal(err)
	}
	return int(n), len(all)
}

// TestImportSurvivesWorkerKill: the process running an import is killed
// (SIGKILL) half way; RabbitMQ gives the task to another process, which
// imports it again, and every row is stored exactly once.
func TestImportSurvivesWorkerKill(t *testing.T) {
	env := realStack(t)
	first := startChild(t, env)
	id := uploadFile(t, first.base, "big.csv", "text/csv", testCSV(10_000), nil)
	var acc taskAccepted
	if resp := apiCall(t, "POST", first.base+"/api/tasks", `{"type": "import_csv_data", "args": {"file_id": "`+id+`"}}`, nil, &acc); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, resp.body)
	}
	var task taskJSON
	waitFor(t, 60*time.Second, "the import to be half way", func() bool {
		task = taskJSON{}
		apiCall(t, "GET", first.base+"/api/tasks/"+acc.TaskID, "", nil, &task)
		return task.Progress != nil && task.Progress.Imported > 0 || stateRank(task.Status) == 2
	})
	if task.Status != stateProgress || task.Progress.Imported >= 10_000 {
		t.Fatalf("the import is %s with %+v before the kill; the test did not catch it half way", task.Status, task.Progress)
	}
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	first.wait(t, 10*time.Second)
	stored, _ := countImported(t, env)
	t.Logf("killed with %d of 10000 rows stored (progress said %d)", stored, task.Progress.Imported)

	second := startChild(t, env)
	waitFor(t, 120*time.Second, "the import to end in the second process", func() bool {
		task = taskJSON{}
		apiCall(t, "GET", second.base+"/api/tasks/"+acc.TaskID, "", nil, &task)
		return stateRank(task.Status) == 2
	})
	if task.Status != stateSuccess || task.Result["imported"] != 10_000.0 || task.Result["added"] != float64(10_000-stored) {
		t.Errorf("after the kill: %s %v (error %q), want SUCCESS with 10000 imported of which %d new", task.Status, task.Result, task.Error, 10_000-stored)
	}
	if items, names := countImported(t, env); items != 10_000 || names != 10_000 {
		t.Errorf("%d items with %d distinct names stored, want each of the 10000 rows once", items, names)
	}
}

// TestImportSurvivesMongoOutage: MongoDB stops half way through an
// import and comes back once the import has failed on it; the import is
// retried and stores every row exactly once.
func TestImportSurvivesMongoOutage(t *testing.T) {
	env, mongo := realStackOnOwnMongo(t)
	base := startErrand(t, env)
	id := uploadFile(t, base, "big.csv", "text/csv", testCSV(10_000), nil)
	var acc taskAccepted
	if resp := apiCall(t, "POST", base+"/api/tasks", `{"type": "import_csv_data", "args": {"file_id": "`+id+`"}}`, nil, &acc); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, resp.body)
	}
	var task taskJSON
	waitFor(t, 60*time.Second, "the import to be half way", func() bool {
		task = taskJSON{}
		apiCall(t, "GET", base+"/api/tasks/"+acc.TaskID, "", nil, &task)
		return task.Progress != nil && task.Progress.Imported > 0 || stateRank(task.Status) == 2
	})
	if task.Status != stateProgress {
		t.Fatalf("the import is %s before the outage; the test did not catch it half way", task.Status)
	}
	mongo.stop()
	// MongoDB stays down until a write of the import has failed: a short
	// outage that falls between its writes is ridden out by the driver's
	// own retries, and the task's retry would go untested.
	waitFor(t, 90*time.Second, "the import to fail a write and schedule its retry", func() bool {
		task = taskJSON{}
		apiCall(t, "GET", base+"/api/tasks/"+acc.TaskID, "", nil, &task)
		return task.Status == stateRetry || task.Attempts >= 2 || stateRank(task.Status) == 2
	})
	mongo.restart(t)
	waitFor(t, 120*time.Second, "the import to end", func() bool {
		task = taskJSON{}
		apiCall(t, "GET", base+"/api/tasks/"+acc.TaskID, "", nil, &task)
		return stateRank(task.Status) == 2
	})
	if task.Status != stateSuccess || task.Result["imported"] != 10_000.0 || task.Attempts < 2 {
		t.Errorf("after the outage: %s after %d attempts, %v (error %q); want SUCCESS with 10000 imported on a retry", task.Status, task.Attempts, task.Result, task.Error)
	}
	if items, names := countImported(t, env); items != 10_000 || names != 10_000 {
		t.Errorf("%d items with %d distinct names stored, want each of the 10000 rows once", items, names)
	}
}

// pdfInfo is a PDF's page count, by poppler's pdfinfo, and its text, by
// pdftotext: what a reader makes of it.
func pdfInfo(t *testing.T, pdf []byte) (pages int, text string) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "report.pdf")
	if err := os.WriteFile(in, pdf, 0o644); err != nil {
		t.Fatal(err)
	}
	info, err := exec.Command("pdfinfo", in).CombinedOutput()
	if err != nil {
		t.Fatalf("pdfinfo (poppler-utils, which scripts/test installs): %v\n%s", err, info)
	}
	for _, line := range strings.Split(string(info), "\n") {
		if v, ok := strings.CutPrefix(line, "Pages:"); ok {
			pages, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	out, err := exec.Command("pdftotext", "-layout", in, "-").CombinedOutput()
	if err != nil {
		t.Fatalf("pdftotext: %v\n%s", err, out)
	}
	return pages, strings.Join(strings.Fields(string(out)), " ")
}

// attachmentOf parses a received message as a mail client would and
// returns its text and its one attachment.
func attachmentOf(t *testing.T, data string) (text, filename, contentType string, content []byte) {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatalf("read the message: %v", err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" {
		t.Fatalf("message Content-Type %q (%v), want multipart/mixed", msg.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("read a part: %v", err)
		}
		body, err := io.ReadAll(part)
		if err != nil {
			t.Fatal(err)
		}
		if part.FileName() == "" {
			text = string(body)
			continue
		}
		if part.Header.Get("Content-Transfer-Encoding") != "base64" {
			t.Fatalf("attachment encoded as %q, want base64", part.Header.Get("Content-Transfer-Encoding"))
		}
		content, err = base64.StdEncoding.DecodeString(strings.ReplaceAll(string(body), "\r\n", ""))
		if err != nil {
			t.Fatalf("decode the attachment: %v", err)
		}
		filename, contentType = part.FileName(), part.Header.Get("Content-Type")
	}
	return text, filename, contentType, content
}

func TestMonthlyReportThroughTheAPI(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			sink := startSMTPSink(t, 0)
			base := startErrand(t, withEnv(env(t), "SMTP_ADDR", sink.addr))
			// User 42's month: items made through the API (the guide's
			// integer user_id) and by an import, and a finished task.
			for i, cat := range []string{"books", "books", "tools"} {
				body := fmt.Sprintf(`{"name": "item %d", "metadata": {"user_id": 42, "category": %q}}`, i, cat)
				if code := apiCall(t, "POST", base+"/api/items", body, nil, nil).StatusCode; code != http.StatusCreated {
					t.Fatalf("create item: %d", code)
				}
			}
			apiCall(t, "POST", base+"/api/items", `{"name": "someone else's", "metadata": {"user_id": 7, "category": "books"}}`, nil, nil)
			csvID := uploadFile(t, base, "rows.csv", "text/csv", []byte("name,category\nlamp,garden\nhose,garden\n"), nil)
			if task := runJob(t, base, `{"type": "import_csv_data", "args": {"file_id": "`+csvID+`", "user_id": 42}}`, nil, 30*time.Second); task.Status != stateSuccess {
				t.Fatalf("import: %s %q", task.Status, task.Error)
			}
			pngID := uploadFile(t, base, "p.png", "image/png", testPNG(t, 40, 20), nil)
			if task := runJob(t, base, `{"type": "process_image", "args": {"file_id": "`+pngID+`", "user_id": "42"}}`, nil, 30*time.Second); task.Status != stateSuccess {
				t.Fatalf("process_image: %s %q", task.Status, task.Error)
			}

			// The guide's route: POST /generate-report?user_id=42 answers at
			// once with a task id and "processing".
			var acc taskAccepted
			resp := apiCall(t, "POST", base+"/generate-report?user_id=42&email=ann@example.com", "", nil, &acc)
			if resp.StatusCode != http.StatusAccepted || acc.TaskID == "" || acc.Status != "processing" {
				t.Fatalf("POST /generate-report: %d %s, want 202 with a task_id and status processing", resp.StatusCode, resp.body)
			}
			var task taskJSON
			waitFor(t, 60*time.Second, "the report", func() bool {
				task = taskJSON{}
				apiCall(t, "GET", base+"/api/tasks/"+acc.TaskID, "", nil, &task)
				return stateRank(task.Status) == 2
			})
			if task.Status != stateSuccess || task.Result["sent_to"] != "ann@example.com" || task.Result["items"] != 5.0 || task.Result["tasks"] != 2.0 || task.Result["pages"] != 3.0 {
				t.Fatalf("report: %s %v (error %q), want SUCCESS: 5 items, 2 tasks, 3 pages, sent to ann@example.com", task.Status, task.Result, task.Error)
			}
			pdf, ctype := downloadFile(t, base, task.Result["report_url"].(string), nil)
			pages, text := pdfInfo(t, pdf)
			if ctype != "application/pdf" || pages != 3 {
				t.Errorf("report file: %s with %d pages, want a PDF of 3", ctype, pages)
			}
			for _, want := range []string{"Monthly report", "User 42", "Items created 5", "Tasks finished 2", "books 2", "garden 2", "tools 1",
				"import_csv_data 1 0 0 1", "process_image 1 0 0 1"} {
				if !strings.Contains(text, want) {
					t.Errorf("the report does not say %q; its text: %s", want, text)
				}
			}
			// The mail: a real MIME message with the PDF attached.
			waitFor(t, 10*time.Second, "the mail", func() bool {
				sink.mu.Lock()
				defer sink.mu.Unlock()
				return len(sink.messages) == 1
			})
			sink.mu.Lock()
			m := sink.messages[0]
			sink.mu.Unlock()
			body, filename, attachedType, attached := attachmentOf(t, m.data)
			mt, params, _ := mime.ParseMediaType(attachedType)
			if m.to != "<ann@example.com>" || !strings.Contains(body, "5 items and 2 tasks") || filename != "report-42-"+time.Now().UTC().Format("2006-01")+".pdf" ||
				mt != "application/pdf" || params["name"] != filename || !bytes.Equal(attached, pdf) {
				t.Errorf("mail to %s, text %q, attachment %q (%s, %d bytes); want the stored report attached", m.to, body, filename, attachedType, len(attached))
			}

			// A month without anything: a one-page report that says so.
			empty := runJob(t, base, `{"type": "generate_monthly_report", "args": {"user_id": 42, "month": "2020-01"}}`, nil, 30*time.Second)
			if empty.Status != stateSuccess || empty.Result["pages"] != 1.0 || empty.Result["sent_to"] != nil {
				t.Fatalf("empty month: %s %v %q, want SUCCESS with one page, not sent", empty.Status, empty.Result, empty.Error)
			}
			pdf, _ = downloadFile(t, base, empty.Result["report_url"].(string), nil)
			if pages, text := pdfInfo(t, pdf); pages != 1 || !strings.Contains(text, "no items and no tasks for user 42 in January 2020") {
				t.Errorf("empty month's report: %d pages saying %q", pages, text)
			}
			// Without a user_id the guide's route says what is missing.
			if resp := apiCall(t, "POST", base+"/generate-report", "", nil, nil); resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(resp.body, "user_id") {
				t.Errorf("POST /generate-report without user_id: %d %s, want 422 naming user_id", resp.StatusCode, resp.body)
			}
		})
	}
}
