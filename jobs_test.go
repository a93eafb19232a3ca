package main

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The tests of the guide's Part 6 jobs (process_image, import_csv_data,
// generate_monthly_report) as a user runs them: files uploaded through
// /api/files, tasks through /api/tasks, outputs read back through
// /api/files, on the embedded backends and on the real servers.

// runJob submits body to /api/tasks and waits for the task to end.
func runJob(t *testing.T, base, body string, headers map[string]string, timeout time.Duration) taskJSON {
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
func uploadFile(t *testing.T, base, filename, contentType string, data []byte, headers map[string]string) string {
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
func downloadFile(t *testing.T, base, url string, headers map[string]string) ([]byte, string) {
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
