package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
)

// documentedRoutes lists the METHOD /path of every operation of doc.
func documentedRoutes(t *testing.T, doc []byte) []string {
	t.Helper()
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		t.Fatal(err)
	}
	var out []string
	for path, ops := range d.Paths {
		for method := range ops {
			out = append(out, strings.ToUpper(method)+" "+path)
		}
	}
	sort.Strings(out)
	return out
}

// TestOpenAPIDocumentsEveryRoute checks both ways that the document and
// the server agree: every route of the table is an operation, every
// operation a route the running server serves (its mux does not answer
// "no route" or "method not allowed").
func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	base := startErrand(t, map[string]string{})
	doc := []byte(apiCall(t, "GET", base+"/openapi.json", "", nil, nil).body)
	documented := documentedRoutes(t, doc)
	var table []string
	for _, rt := range routeTable(serverDeps{log: slog.New(slog.DiscardHandler), metrics: testMetrics()}) {
		table = append(table, rt.pattern)
	}
	sort.Strings(table)
	if !slices.Equal(documented, table) {
		t.Errorf("documented operations:\n%s\nroute table:\n%s", strings.Join(documented, "\n"), strings.Join(table, "\n"))
	}
	for _, op := range documented {
		method, path, _ := strings.Cut(op, " ")
		path = pathParam.ReplaceAllString(path, "x")
		var e errorBody
		resp := apiCall(t, method, base+path, "", nil, nil)
		_ = json.Unmarshal([]byte(resp.body), &e)
		if e.Error == "method_not_allowed" || e.Error == "not_found" && strings.HasPrefix(e.Detail, "no route") {
			t.Errorf("%s: the server answers %d %s: the documented operation is not served", op, resp.StatusCode, resp.body)
		}
	}
}

// openAPIChecker validates requests and the answers to them against the
// document errand serves.
type openAPIChecker struct {
	t         *testing.T
	validator validator.Validator
	mu        sync.Mutex
	checked   map[string]bool // METHOD path-pattern status, seen
}

func newOpenAPIChecker(t *testing.T, doc []byte) *openAPIChecker {
	t.Helper()
	document, err := libopenapi.NewDocument(doc)
	if err != nil {
		t.Fatalf("libopenapi reads the document: %v", err)
	}
	v, errs := validator.NewValidator(document)
	if len(errs) > 0 {
		t.Fatalf("the validator takes the document: %v", errs)
	}
	if ok, problems := v.ValidateDocument(); !ok {
		for _, p := range problems {
			t.Errorf("the document is not valid OpenAPI: %s: %s", p.Message, p.Reason)
		}
		t.FailNow()
	}
	return &openAPIChecker{t: t, validator: v, checked: map[string]bool{}}
}

// call sends a request and validates it and its answer.
func (c *openAPIChecker) call(method, url, contentType string, body []byte, headers map[string]string) apiAnswer {
	c.t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, url, err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		c.t.Fatal(err)
	}
	// The validator reads both bodies: give it fresh copies.
	checkReq, _ := http.NewRequest(method, url, bytes.NewReader(body))
	checkReq.Header = req.Header.Clone()
	checkResp := &http.Response{StatusCode: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(raw)), Request: checkReq}
	// A request errand refused need not match the document (the tests
	// send bad ones on purpose); its answer must.
	validate := c.validator.ValidateHttpResponse
	if resp.StatusCode < 400 {
		validate = c.validator.ValidateHttpRequestResponse
	}
	if ok, problems := validate(checkReq, checkResp); !ok {
		for _, p := range problems {
			var details []string
			for _, f := range p.SchemaValidationErrors {
				details = append(details, f.FieldPath+": "+f.Reason)
			}
			c.t.Errorf("%s %s → %d %s\n  does not match the document: %s: %s %v", method, req.URL.Path, resp.StatusCode, truncate(raw, 300), p.Message, p.Reason, details)
		}
	}
	return apiAnswer{Response: resp, body: string(raw)}
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// TestOpenAPIDescribesRealAnswers validates the document with a kept
// validator (libopenapi-validator), then a user's session against it:
// every request and every answer, successes and errors, on both backends.
func TestOpenAPIDescribesRealAnswers(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			base := startErrand(t, withEnv(env(t), "HEAVY_TASK_DELAY", "1ms"))
			c := newOpenAPIChecker(t, []byte(apiCall(t, "GET", base+"/openapi.json", "", nil, nil).body))
			js := "application/json"
			decode := func(a apiAnswer, v any) {
				t.Helper()
				if err := json.Unmarshal([]byte(a.body), v); err != nil {
					t.Fatalf("decode %s: %v", a.body, err)
				}
			}

			c.call("GET", base+"/health", "", nil, nil)
			c.call("GET", base+"/api/task-types", "", nil, nil)

			var acc taskAccepted
			decode(c.call("POST", base+"/api/tasks", js, []byte(`{"type": "process_heavy_task", "args": {"data": "doc", "iterations": 2}, "priority": "high"}`), nil), &acc)
			waitFor(t, 20*time.Second, "the task to end", func() bool {
				var st taskStatus
				decode(c.call("GET", base+"/api/async/status/"+acc.TaskID, "", nil, nil), &st)
				return st.final()
			})
			c.call("GET", base+"/api/tasks/"+acc.TaskID, "", nil, nil)
			c.call("GET", base+"/api/tasks?limit=5", "", nil, nil)
			c.call("GET", base+"/api/tasks?status=SUCCESS&type=process_heavy_task", "", nil, nil)
			c.call("POST", base+"/api/tasks/"+acc.TaskID+"/cancel", "", nil, nil) // 409: it has ended
			c.call("POST", base+"/api/tasks/"+acc.TaskID+"/retry", "", nil, nil)  // 409: it succeeded
			var later taskAccepted
			decode(c.call("POST", base+"/api/tasks", js, []byte(`{"type": "send_welcome_email", "args": {"user_email": "a@example.com", "user_name": "A"}, "countdown": 600}`), nil), &later)
			c.call("GET", base+"/api/tasks/"+later.TaskID, "", nil, nil)
			c.call("POST", base+"/api/tasks/"+later.TaskID+"/cancel", "", nil, nil)
			c.call("POST", base+"/api/tasks/"+later.TaskID+"/retry", "", nil, nil)
			c.call("POST", base+"/api/tasks/batch", js, []byte(`{"tasks": [{"type": "process_heavy_task", "args": {"data": "b", "iterations": 1}}, {"type": "process_heavy_task", "args": {"data": "c", "iterations": 1}}]}`), nil)
			c.call("POST", base+"/api/async/process", js, []byte(`{"data": "guide", "iterations": 1}`), nil)
			c.call("POST", base+"/api/send-welcome-email?user_email=b@example.com&user_name=B", "", nil, nil)
			c.call("POST", base+"/generate-report?user_id=42", "", nil, nil)
			// Errors: each in errand's error shape.
			c.call("POST", base+"/api/tasks", js, []byte(`{"type": "nope"}`), nil)
			c.call("POST", base+"/api/tasks", js, []byte(`{"type": "process_heavy_task", "args": {"iterations": 0}}`), nil)
			c.call("GET", base+"/api/tasks/no-such-task", "", nil, nil)
			c.call("GET", base+"/api/async/status/no-such-task", "", nil, nil)

			var it itemResponse
			decode(c.call("POST", base+"/api/items", js, []byte(`{"name": "lamp", "metadata": {"user_id": 42}}`), nil), &it)
			c.call("POST", base+"/api/items", js, []byte(`{"name": "no description"}`), nil)
			c.call("GET", base+"/api/items?limit=5", "", nil, nil)
			c.call("GET", base+"/api/items/"+it.ID, "", nil, nil)
			c.call("PUT", base+"/api/items/"+it.ID, js, []byte(`{"description": "a desk lamp"}`), nil)
			c.call("DELETE", base+"/api/items/"+it.ID, "", nil, nil)
			c.call("GET", base+"/api/items/"+it.ID, "", nil, nil)
			c.call("POST", base+"/api/items", js, []byte(`{"name": ""}`), nil)

			var f fileJSON
			decode(c.call("POST", base+"/api/files?filename=p.png", "image/png", testPNG(t, 8, 8), nil), &f)
			c.call("GET", base+"/api/files", "", nil, nil)
			c.call("GET", base+f.URL, "", nil, nil)
			c.call("GET", base+f.URL, "", nil, map[string]string{"Range": "bytes=0-3"})
			c.call("DELETE", base+f.URL, "", nil, nil)
			c.call("GET", base+f.URL, "", nil, nil)

			c.call("POST", base+"/api/schedules", js, []byte(`{"name": "nightly", "cron": "0 3 * * *", "task": {"type": "process_heavy_task", "args": {"data": "n"}}}`), nil)
			c.call("POST", base+"/api/schedules", js, []byte(`{"name": "often", "every": "1h", "task": {"type": "process_heavy_task", "args": {"data": "o"}}}`), nil)
			c.call("GET", base+"/api/schedules", "", nil, nil)
			c.call("GET", base+"/api/schedules/nightly", "", nil, nil)
			c.call("POST", base+"/api/schedules/nightly/pause", "", nil, nil)
			c.call("POST", base+"/api/schedules/nightly/resume", "", nil, nil)
			c.call("DELETE", base+"/api/schedules/nightly", "", nil, nil)
			c.call("GET", base+"/api/schedules/nightly", "", nil, nil)
			c.call("POST", base+"/api/schedules", js, []byte(`{"name": "bad", "cron": "not cron", "task": {"type": "process_heavy_task", "args": {"data": "x"}}}`), nil)

			var wf workflowAccepted
			step := `{"type": "process_heavy_task", "args": {"data": "w", "iterations": 1}}`
			decode(c.call("POST", base+"/api/workflows", js, []byte(`{"chain": [`+step+`, {"group": [`+step+`, `+step+`], "then": `+step+`, "then_on_failure": true}]}`), nil), &wf)
			waitFor(t, 20*time.Second, "the workflow to end", func() bool {
				var got workflowJSON
				decode(c.call("GET", base+"/api/workflows/"+wf.WorkflowID, "", nil, nil), &got)
				return got.Status == stateSuccess
			})
			c.call("POST", base+"/api/workflows/"+wf.WorkflowID+"/cancel", "", nil, nil) // 409: it has ended
			var slow workflowAccepted
			decode(c.call("POST", base+"/api/workflows", js, []byte(`{"group": [{"type": "send_welcome_email", "args": {"user_email": "a@example.com", "user_name": "A"}}]}`), nil), &slow)
			c.call("POST", base+"/api/workflows/"+slow.WorkflowID+"/cancel", "", nil, nil)
			c.call("POST", base+"/api/workflows", js, []byte(`{"chain": [{"type": "nope"}]}`), nil)
			c.call("GET", base+"/api/workflows/no-such-workflow", "", nil, nil)
		})
	}
}

// TestDocsPageIsSelfContained: /docs and its assets come from errand
// alone, under a policy that lets the page load nothing else.
func TestDocsPageIsSelfContained(t *testing.T) {
	f := newHandlerFixture(t)
	page := f.serve(t, "GET", "/docs", "", nil)
	if page.Code != http.StatusOK || page.Header().Get("Content-Type") != "text/html; charset=utf-8" || page.Header().Get("Content-Security-Policy") != docsPolicy {
		t.Fatalf("GET /docs: %d %s, policy %q", page.Code, page.Header().Get("Content-Type"), page.Header().Get("Content-Security-Policy"))
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page.Body.String(), -1)
	if len(refs) != 3 {
		t.Errorf("the page loads %v, want its style sheet and two scripts", refs)
	}
	for _, ref := range refs {
		if !strings.HasPrefix(ref[1], "/docs/") {
			t.Errorf("the page loads %s, which is not errand's own", ref[1])
			continue
		}
		asset := f.serve(t, "GET", ref[1], "", nil)
		if asset.Code != http.StatusOK || asset.Body.Len() == 0 || asset.Header().Get("Content-Security-Policy") != docsPolicy {
			t.Errorf("GET %s: %d, %d bytes", ref[1], asset.Code, asset.Body.Len())
		}
	}
	script := f.serve(t, "GET", "/docs/docs.js", "", nil).Body.String()
	if !strings.Contains(script, `url: "/openapi.json"`) {
		t.Errorf("docs.js does not read errand's own document:\n%s", script)
	}
	if code := f.serve(t, "GET", "/docs/../go.mod", "", nil).Code; code == http.StatusOK {
		t.Errorf("GET /docs/../go.mod: %d; only the listed assets are served", code)
	}
	checkErrorAnswer(t, f.serve(t, "GET", "/docs/index.html", "", nil), http.StatusNotFound, "not_found", "")
}
