package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// consoleFixture is the API with two keys, and a browser's cookie jar.
type consoleFixture struct {
	*handlerFixture
	cookies map[string]*http.Cookie
}

func newConsoleFixture(t *testing.T, keys string) *consoleFixture {
	f := newHandlerFixture(t, func(p *apiParts) { p.apiKeys = newAPIKeys(keys) })
	return &consoleFixture{handlerFixture: f, cookies: map[string]*http.Cookie{}}
}

// browse sends a request as a browser on errand's own pages would: with
// its cookies and Sec-Fetch-Site same-origin, a form body for a POST.
func (f *consoleFixture) browse(t *testing.T, method, target string, form url.Values, header map[string]string) *httptest.ResponseRecorder {
	t.Helper()
	var r *http.Request
	if form != nil {
		r = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	r.Header.Set("Sec-Fetch-Site", "same-origin")
	for _, c := range f.cookies {
		r.AddCookie(c)
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	f.server.ServeHTTP(rec, r)
	for _, c := range rec.Result().Cookies() {
		if c.MaxAge < 0 {
			delete(f.cookies, c.Name)
			continue
		}
		f.cookies[c.Name] = c
	}
	return rec
}

// csrf is the token the console's forms carry.
func (f *consoleFixture) csrf(t *testing.T) string {
	t.Helper()
	if c, ok := f.cookies[csrfCookie]; ok {
		return c.Value
	}
	// The sign-in page with API_KEYS, any page without.
	for _, page := range []string{"/ui/login", "/ui/"} {
		if _, ok := f.cookies[csrfCookie]; !ok {
			f.browse(t, "GET", page, nil, nil)
		}
	}
	c, ok := f.cookies[csrfCookie]
	if !ok {
		t.Fatal("the sign-in page set no CSRF cookie")
	}
	return c.Value
}

func (f *consoleFixture) signIn(t *testing.T, key string) {
	t.Helper()
	rec := f.browse(t, "POST", "/ui/login", url.Values{"key": {key}, "csrf": {f.csrf(t)}, "next": {"/ui/tasks"}}, nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/tasks" {
		t.Fatalf("sign in: %d to %q, want 303 to /ui/tasks (body %s)", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
}

func submitAs(t *testing.T, f *consoleFixture, key string) string {
	t.Helper()
	var acc taskAccepted
	decodeAnswer(t, f.serve(t, "POST", "/api/tasks", `{"type": "process_heavy_task", "args": {"data": "x"}}`, map[string]string{"X-API-Key": key}), http.StatusAccepted, &acc)
	return acc.TaskID
}

func TestConsoleSignIn(t *testing.T) {
	f := newConsoleFixture(t, "key-a,key-b")
	own, other := submitAs(t, f, "key-a"), submitAs(t, f, "key-b")
	decodeAnswer(t, f.serve(t, "POST", "/api/schedules", `{"name": "nightly-b", "cron": "0 3 * * *", "task": {"type": "process_heavy_task", "args": {"data": "x"}}}`,
		map[string]string{"X-API-Key": "key-b"}), http.StatusCreated, &scheduleJSON{})

	rec := f.browse(t, "GET", "/ui/tasks?status=PENDING", nil, nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/login?next=%2Fui%2Ftasks%3Fstatus%3DPENDING" {
		t.Fatalf("no session: %d to %q, want 303 to the sign-in page", rec.Code, rec.Header().Get("Location"))
	}
	rec = f.browse(t, "POST", "/ui/login", url.Values{"key": {"key-c"}, "csrf": {f.csrf(t)}}, nil)
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), "not one of errand&#39;s API keys") {
		t.Errorf("a wrong key: %d, want 401 saying so (body %s)", rec.Code, rec.Body)
	}
	if _, ok := f.cookies[sessionCookie]; ok {
		t.Fatal("a wrong key got a session")
	}

	f.signIn(t, "key-a")
	session := f.cookies[sessionCookie]
	if !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Path != "/ui/" || session.Secure {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, path /ui/, not Secure over plain HTTP", session)
	}
	if strings.Contains(session.Value, "key-a") {
		t.Errorf("the session cookie %q holds the key", session.Value)
	}
	rec = f.browse(t, "GET", "/ui/tasks", nil, nil)
	if body := rec.Body.String(); rec.Code != http.StatusOK || !strings.Contains(body, own) || strings.Contains(body, other) {
		t.Errorf("key a's task list: %d, has own %v, has key b's %v; want only its own", rec.Code, strings.Contains(body, own), strings.Contains(body, other))
	}
	if rec := f.browse(t, "GET", "/ui/tasks/"+other, nil, nil); rec.Code != http.StatusNotFound {
		t.Errorf("key b's task seen by key a: %d, want 404", rec.Code)
	}
	for _, tc := range []struct{ method, path string }{
		{"POST", "/ui/tasks/" + other + "/cancel"}, {"POST", "/ui/tasks/" + other + "/retry"},
		{"GET", "/ui/tasks/" + other + "/events"}, {"POST", "/ui/dead-letters/" + other + "/requeue"},
		{"POST", "/ui/schedules/nightly-b/pause"}, {"POST", "/ui/schedules/nightly-b/delete"},
	} {
		var form url.Values
		if tc.method == "POST" {
			form = url.Values{"csrf": {f.csrf(t)}}
		}
		if rec := f.browse(t, tc.method, tc.path, form, nil); rec.Code != http.StatusNotFound {
			t.Errorf("key a: %s %s of key b's: %d, want 404", tc.method, tc.path, rec.Code)
		}
	}
	if s, err := f.schedules.getSchedule(t.Context(), mustOwner(t, "key-b"), "nightly-b"); err != nil || s.Paused {
		t.Errorf("key b's schedule after key a's tries: %+v %v, want it there and running", s, err)
	}
	if rev, _ := f.revocations.revoked(t.Context(), other); rev != nil {
		t.Errorf("key a cancelled key b's task")
	}

	// Behind TLS (nginx says so), the cookies are Secure.
	rec = f.browse(t, "POST", "/ui/login", url.Values{"key": {"key-a"}, "csrf": {f.csrf(t)}}, map[string]string{"X-Forwarded-Proto": "https"})
	secure := slices.ContainsFunc(rec.Result().Cookies(), func(c *http.Cookie) bool { return c.Name == sessionCookie && c.Secure })
	if rec.Code != http.StatusSeeOther || !secure {
		t.Errorf("sign in behind TLS: %d, Secure session cookie %v; want 303 with one", rec.Code, secure)
	}

	rec = f.browse(t, "POST", "/ui/logout", url.Values{"csrf": {f.csrf(t)}}, nil)
	cleared := slices.ContainsFunc(rec.Result().Cookies(), func(c *http.Cookie) bool { return c.Name == sessionCookie && c.MaxAge < 0 })
	if rec.Code != http.StatusSeeOther || !cleared {
		t.Fatalf("sign out: %d, session cookie cleared %v; want 303 clearing it", rec.Code, cleared)
	}
	if rec := f.browse(t, "GET", "/ui/", nil, nil); rec.Code != http.StatusSeeOther {
		t.Errorf("after signing out: %d, want 303 to the sign-in page", rec.Code)
	}
}

// flipChar changes the character at i of s to another base64url one.
func flipChar(s string, i int) string {
	c := byte('A')
	if s[i] == 'A' {
		c = 'B'
	}
	return s[:i] + string(c) + s[i+1:]
}

// flipLowBits sets the unused low bits of the last character of an
// unpadded base64url value: a lax decoder reads the same bytes.
func flipLowBits(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return s[:len(s)-1] + string(alphabet[i|3])
}

func TestConsoleSessionsCannotBeForged(t *testing.T) {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s := consoleSessions{keys: newAPIKeys("key-a,key-b"), now: clock}
	rec := httptest.NewRecorder()
	if !s.signIn(rec, httptest.NewRequest("POST", "/ui/login", nil), "key-a") {
		t.Fatal("key-a did not sign in")
	}
	cookie := rec.Result().Cookies()[0]
	withCookie := func(value string) *http.Request {
		r := httptest.NewRequest("GET", "/ui/", nil)
		r.AddCookie(&http.Cookie{Name: sessionCookie, Value: value})
		return r
	}
	wantOwner, _ := s.keys.owner("key-a")
	if owner, ok := s.owner(withCookie(cookie.Value)); !ok || owner != wantOwner {
		t.Fatalf("session of key-a: %q %v, want %q", owner, ok, wantOwner)
	}
	otherOwner, _ := s.keys.owner("key-b")
	parts := strings.SplitN(cookie.Value, ".", 3) // owner, expiry, signature
	forged := []struct{ name, value string }{
		{"another owner, same signature", otherOwner + "." + parts[1] + "." + parts[2]},
		{"a later expiry", parts[0] + ".9999999999." + parts[2]},
		{"no signature", parts[0] + "." + parts[1]},
		{"a flipped signature", flipChar(cookie.Value, len(cookie.Value)-10)},
		{"the signature's spare bits set", flipLowBits(cookie.Value)},
		{"empty", ""},
	}
	for _, tc := range forged {
		if owner, ok := s.owner(withCookie(tc.value)); ok {
			t.Errorf("%s (%q): accepted as %q", tc.name, tc.value, owner)
		}
	}
	later := consoleSessions{keys: s.keys, now: func() time.Time { return now.Add(sessionLifetime + time.Second) }}
	if _, ok := later.owner(withCookie(cookie.Value)); ok {
		t.Error("an expired session was accepted")
	}
	rotated := consoleSessions{keys: newAPIKeys("key-b"), now: clock}
	if _, ok := rotated.owner(withCookie(cookie.Value)); ok {
		t.Error("a session of a key no longer in API_KEYS was accepted")
	}
}

func TestConsoleRefusesForgedPosts(t *testing.T) {
	f := newConsoleFixture(t, "")
	id := submitAs(t, f, "")
	token := f.csrf(t)
	cases := []struct {
		name   string
		form   url.Values
		header map[string]string
	}{
		{"no token", url.Values{}, nil},
		{"a wrong token", url.Values{"csrf": {strings.Repeat("x", 43)}}, nil},
		{"another site", url.Values{"csrf": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"another origin", url.Values{"csrf": {token}}, map[string]string{"Sec-Fetch-Site": "", "Origin": "https://evil.example"}},
	}
	for _, tc := range cases {
		rec := f.browse(t, "POST", "/ui/tasks/"+id+"/cancel", tc.form, tc.header)
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.name, rec.Code)
		}
	}
	if rev, _ := f.revocations.revoked(t.Context(), id); rev != nil {
		t.Fatal("a forged post cancelled the task")
	}
	rec := f.browse(t, "POST", "/ui/tasks/"+id+"/cancel", url.Values{"csrf": {token}}, nil)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("the console's own cancel: %d, want 303 (body %s)", rec.Code, rec.Body)
	}
	if rev, _ := f.revocations.revoked(t.Context(), id); rev == nil {
		t.Error("the console's own cancel recorded no cancel")
	}
}

func TestConsolePagesAreLockedDown(t *testing.T) {
	f := newConsoleFixture(t, "")
	id := submitAs(t, f, "")
	for _, page := range []string{"/ui/", "/ui/tasks", "/ui/tasks/" + id, "/ui/submit?type=import_csv_data", "/ui/schedules", "/ui/dead-letters", "/ui/no-such-page"} {
		rec := f.browse(t, "GET", page, nil, nil)
		if page != "/ui/no-such-page" && rec.Code != http.StatusOK {
			t.Errorf("%s: %d, want 200 (body %s)", page, rec.Code, rec.Body)
		}
		h := rec.Header()
		if h.Get("Content-Security-Policy") != consolePolicy || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: headers %v, want the console's policy, nosniff and no-store", page, h)
		}
		if body := rec.Body.String(); !strings.Contains(body, "Open console.") {
			t.Errorf("%s: no open-console banner without API_KEYS", page)
		}
	}
	if rec := f.browse(t, "GET", "/ui/no-such-page", nil, nil); rec.Code != http.StatusNotFound {
		t.Errorf("/ui/no-such-page: %d, want 404", rec.Code)
	}
	if rec := f.browse(t, "POST", "/ui/dead-letters/purge", url.Values{"csrf": {f.csrf(t)}}, nil); rec.Code != http.StatusUnprocessableEntity {
		t.Errorf("a purge without its box ticked: %d, want 422", rec.Code)
	}
	if rec := f.browse(t, "GET", "/ui/tasks?since=1y", nil, nil); rec.Code != http.StatusUnprocessableEntity {
		t.Errorf("a time filter the console does not offer: %d, want 422", rec.Code)
	}
	if rec := f.browse(t, "GET", "/ui/tasks?id=no-such-task", nil, nil); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "No task has the id") {
		t.Errorf("search for an unknown id: %d, want the list saying so", rec.Code)
	}
	if rec := f.browse(t, "GET", "/ui/tasks?id="+id, nil, nil); rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/tasks/"+id {
		t.Errorf("search for a task's id: %d to %q, want its page", rec.Code, rec.Header().Get("Location"))
	}
	for _, next := range []string{"//evil.example/", "https://evil.example/", "/ui//evil.example", "/api/tasks", "/ui/\\evil", "/ui/../api/tasks", "/ui/%2e%2e/api/tasks"} {
		if got := safeNext(next); got != "/ui/" {
			t.Errorf("safeNext(%q) = %q, want /ui/", next, got)
		}
	}
	if got := safeNext("/ui/tasks?status=FAILURE"); got != "/ui/tasks?status=FAILURE" {
		t.Errorf("safeNext of a console page: %q", got)
	}
}

// TestConsoleSubmitForm draws the form from the registry's schemas and
// sends what a person typed as the arguments' JSON types.
func TestConsoleSubmitForm(t *testing.T) {
	f := newConsoleFixture(t, "")
	rec := f.browse(t, "GET", "/ui/submit?type=import_csv_data", nil, nil)
	body := rec.Body.String()
	for _, want := range []string{`name="arg.file_id"`, `name="arg.delimiter" value=","`, `name="arg.has_header" value="true" checked`, `name="arg.user_id"`} {
		if !strings.Contains(body, want) {
			t.Errorf("import_csv_data's form lacks %s", want)
		}
	}
	rec = f.browse(t, "GET", "/ui/submit?type=process_image", nil, nil)
	if !strings.Contains(rec.Body.String(), `<option selected>jpeg</option><option>png</option>`) {
		t.Errorf("process_image's format is not a choice of jpeg (the default) and png:\n%s", rec.Body)
	}

	form := url.Values{"csrf": {f.csrf(t)}, "type": {"import_csv_data"}, "priority": {"high"}, "countdown": {""},
		"arg.file_id": {"abc"}, "arg.delimiter": {";"}, "arg.user_id": {"42"}}
	rec = f.browse(t, "POST", "/ui/submit", form, nil)
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(rec.Header().Get("Location"), "/ui/tasks/") {
		t.Fatalf("submit: %d to %q, want 303 to the task (body %s)", rec.Code, rec.Header().Get("Location"), rec.Body)
	}
	msg := f.nextTaskMessage(t)
	var args map[string]any
	if err := json.Unmarshal(msg.Args, &args); err != nil {
		t.Fatal(err)
	}
	if args["user_id"] != "42" || args["has_header"] != false || args["delimiter"] != ";" || msg.Priority != "high" {
		t.Errorf("submitted %s at %s, want user_id 42, has_header false (unchecked), delimiter ; at high", msg.Args, msg.Priority)
	}
	form = url.Values{"csrf": {f.csrf(t)}, "type": {"process_heavy_task"}, "priority": {"normal"}, "arg.data": {"x"}, "arg.iterations": {"3"}}
	if rec := f.browse(t, "POST", "/ui/submit", form, nil); rec.Code != http.StatusSeeOther {
		t.Fatalf("submit with iterations 3: %d, want 303 (body %s)", rec.Code, rec.Body)
	}
	if msg := f.nextTaskMessage(t); string(msg.Args) != `{"data":"x","iterations":3}` {
		t.Errorf("submitted %s, want iterations as the number 3", msg.Args)
	}

	for _, tc := range []struct {
		form      url.Values
		wantField string
		wantText  string
	}{
		{url.Values{"type": {"process_heavy_task"}, "arg.data": {"x"}, "arg.iterations": {"5000"}}, "iterations", "must be at most 1000"},
		{url.Values{"type": {"process_heavy_task"}, "arg.data": {"x"}, "arg.iterations": {"ten"}}, "iterations", "must be a number"},
		{url.Values{"type": {"process_heavy_task"}, "arg.iterations": {"3"}}, "data", "is required"},
		{url.Values{"type": {"process_heavy_task"}, "arg.data": {"x"}, "arg.iterations": {"true"}}, "iterations", "must be a number"},
		{url.Values{"type": {"process_heavy_task"}, "arg.data": {"x"}, "countdown": {"soon"}}, "countdown", "must be a number of seconds"},
		{url.Values{"type": {"process_heavy_task"}, "arg.data": {"x"}, "countdown": {"NaN"}}, "countdown", "must be a number of seconds"},
		{url.Values{"type": {"process_image"}, "arg.file_id": {"x"}, "arg.format": {"gif"}}, "format", "must be one of jpeg, png"},
	} {
		tc.form.Set("csrf", f.csrf(t))
		rec := f.browse(t, "POST", "/ui/submit", tc.form, nil)
		body := rec.Body.String()
		if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body, tc.wantText) {
			t.Errorf("submit %v: %d, want 422 saying %q", tc.form, rec.Code, tc.wantText)
			continue
		}
		// The message sits in the field's own block, after its input.
		id := `id="arg-` + tc.wantField + `"`
		if tc.wantField == "countdown" {
			id = `id="countdown"`
		}
		at := strings.Index(body, id)
		if at < 0 {
			t.Errorf("submit %v: no input %s on the form", tc.form, id)
			continue
		}
		field := body[at:]
		if !strings.Contains(field[:strings.Index(field, "</div>")], tc.wantText) {
			t.Errorf("submit %v: %q is not shown at %s", tc.form, tc.wantText, tc.wantField)
		}
	}
	if n, _ := f.broker.depth(); n != 0 {
		t.Errorf("%d tasks queued by refused forms, want none", n)
	}
}

func TestConsoleLimits(t *testing.T) {
	f := newConsoleFixture(t, "key-a")
	for i := range signInBurst + 1 {
		rec := f.browse(t, "POST", "/ui/login", url.Values{"key": {"wrong"}, "csrf": {f.csrf(t)}}, nil)
		if want := http.StatusUnauthorized; i == signInBurst {
			if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") == "" {
				t.Errorf("sign-in attempt %d: %d, want 429 with Retry-After", i+1, rec.Code)
			}
		} else if rec.Code != want {
			t.Errorf("sign-in attempt %d: %d, want %d", i+1, rec.Code, want)
		}
	}

	g := newHandlerFixture(t, func(p *apiParts) { p.rateLimiter = newRateLimiter(0.001, 2) })
	open := &consoleFixture{handlerFixture: g, cookies: map[string]*http.Cookie{}}
	codes := []int{}
	for range 3 {
		codes = append(codes, open.browse(t, "GET", "/ui/tasks", nil, nil).Code)
	}
	if !slices.Equal(codes, []int{http.StatusOK, http.StatusOK, http.StatusTooManyRequests}) {
		t.Errorf("three pages at a rate of 2 in a burst: %v, want 200, 200, 429", codes)
	}

	h := newConsoleFixture(t, "")
	token := h.csrf(t)
	big := url.Values{"csrf": {token}, "type": {"process_heavy_task"}, "arg.data": {strings.Repeat("x", consoleFormMaxBytes)}}
	if rec := h.browse(t, "POST", "/ui/submit", big, nil); rec.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("a form over %d bytes: %d, want 413", consoleFormMaxBytes, rec.Code)
	}
	if rec := h.browse(t, "POST", "/ui/logout", nil, map[string]string{"Content-Type": "multipart/form-data; boundary=x"}); rec.Code != http.StatusUnsupportedMediaType {
		t.Errorf("a multipart POST: %d, want 415", rec.Code)
	}
	if rec := h.browse(t, "POST", "/ui/no-such-action", url.Values{"csrf": {token}}, nil); rec.Code != http.StatusNotFound || !strings.Contains(rec.Body.String(), "<h1>404") {
		t.Errorf("POST to no console page: %d, want the console's 404 page", rec.Code)
	}
}

// TestConsoleFormReadsSchemaTypes: a field that takes an integer or a
// string (user_id) sends a number as a number, anything else as a string.
func TestConsoleFormReadsSchemaTypes(t *testing.T) {
	reg := newHandlerFixture(t)
	var schema []taskTypeJSON
	decodeAnswer(t, reg.serve(t, "GET", "/api/task-types", "", nil), http.StatusOK, &schema)
	i := slices.IndexFunc(schema, func(tt taskTypeJSON) bool { return tt.Name == "import_csv_data" })
	fields, err := formFields(schema[i].ArgsSchema)
	if err != nil {
		t.Fatal(err)
	}
	for value, want := range map[string]any{"42": json.Number("42"), "u-42": "u-42"} {
		r := httptest.NewRequest("POST", "/ui/submit", strings.NewReader(url.Values{"arg.user_id": {value}}.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		args, ok := readArgs(r, slices.Clone(fields))
		if !ok || args["user_id"] != want {
			t.Errorf("user_id %q read as %#v (ok %v), want %#v", value, args["user_id"], ok, want)
		}
	}
}

// TestConsoleWorkflowPage: a workflow's page draws its steps, each linked
// to its task, shows only the key's own workflows, and cancels with the
// session's CSRF token.
func TestConsoleWorkflowPage(t *testing.T) {
	f := newConsoleFixture(t, "key-a,key-b")
	submit := func(key string) workflowAccepted {
		var acc workflowAccepted
		decodeAnswer(t, f.serve(t, "POST", "/api/workflows", `{"chain": [`+heavy+`, {"group": [`+heavy+`, `+heavy+`], "then": `+heavy+`}]}`,
			map[string]string{"X-API-Key": key}), http.StatusAccepted, &acc)
		return acc
	}
	own, other := submit("key-a"), submit("key-b")
	f.signIn(t, "key-a")
	rec := f.browse(t, "GET", "/ui/workflows/"+own.WorkflowID, nil, nil)
	body := rec.Body.String()
	if rec.Code != http.StatusOK {
		t.Fatalf("workflow page: %d", rec.Code)
	}
	for _, s := range own.Steps {
		if !strings.Contains(body, `href="/ui/tasks/`+s.TaskID+`"`) || !strings.Contains(body, s.Path) {
			t.Errorf("the page does not draw step %s linked to its task", s.Path)
		}
	}
	if !strings.Contains(body, `class="flow-group"`) || !strings.Contains(body, "flow-then") || !strings.Contains(body, "data-reload") {
		t.Error("the page does not draw the group and its then step, or does not follow the running workflow")
	}
	if rec := f.browse(t, "GET", "/ui/workflows/"+other.WorkflowID, nil, nil); rec.Code != http.StatusNotFound {
		t.Errorf("key b's workflow seen by key a: %d, want 404", rec.Code)
	}
	if rec := f.browse(t, "POST", "/ui/workflows/"+own.WorkflowID+"/cancel", url.Values{"csrf": {"forged"}}, nil); rec.Code != http.StatusForbidden {
		t.Errorf("cancel with a forged token: %d, want 403", rec.Code)
	}
	rec = f.browse(t, "POST", "/ui/workflows/"+own.WorkflowID+"/cancel", url.Values{"csrf": {f.csrf(t)}}, nil)
	if rec.Code != http.StatusSeeOther || rec.Header().Get("Location") != "/ui/workflows/"+own.WorkflowID+"?done=cancel" {
		t.Fatalf("cancel: %d to %q", rec.Code, rec.Header().Get("Location"))
	}
	body = f.browse(t, "GET", "/ui/workflows/"+own.WorkflowID+"?done=cancel", nil, nil).Body.String()
	if strings.Count(body, ">REVOKED<") != len(own.Steps)+1 || strings.Contains(body, "data-reload") {
		t.Errorf("after the cancel the page shows %d REVOKED (want the workflow and its %d steps) and follows it still: %v",
			strings.Count(body, ">REVOKED<"), len(own.Steps), strings.Contains(body, "data-reload"))
	}
	task := f.browse(t, "GET", "/ui/tasks/"+own.Steps[0].TaskID, nil, nil).Body.String()
	if !strings.Contains(task, `href="/ui/workflows/`+own.WorkflowID+`"`) {
		t.Error("a step's task page does not link to its workflow")
	}
}

// unconfirmingPublisher takes every task but never confirms one in time.
type unconfirmingPublisher struct{ taskPublisher }

func (unconfirmingPublisher) publish(context.Context, taskMessage) error {
	return fmt.Errorf("%w: %w: wait for confirm: deadline exceeded", errBrokerUnavailable, errPublishUnconfirmed)
}

// TestConsoleOpensAnUnconfirmedTask: a submit from the form whose publish
// was not confirmed opens the task it named, saying it may run, rather
// than an error page.
func TestConsoleOpensAnUnconfirmedTask(t *testing.T) {
	f := newHandlerFixture(t, func(p *apiParts) { p.publisher = unconfirmingPublisher{p.publisher} })
	cf := &consoleFixture{handlerFixture: f, cookies: map[string]*http.Cookie{}}
	form := url.Values{"csrf": {cf.csrf(t)}, "type": {"process_heavy_task"}, "priority": {"normal"}, "arg.data": {"x"}, "arg.iterations": {"1"}}
	rec := cf.browse(t, "POST", "/ui/submit", form, nil)
	loc := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(loc, "/ui/tasks/") || !strings.HasSuffix(loc, "?done=unconfirmed") {
		t.Fatalf("unconfirmed submit from the form: %d to %q, want 303 to the task it named (body %s)", rec.Code, loc, rec.Body)
	}
	page := cf.browse(t, "GET", loc, nil, nil).Body.String()
	if !strings.Contains(page, `class="notice warn"`) || !strings.Contains(page, "may run") || !strings.Contains(page, ">PENDING<") {
		t.Errorf("the task's page does not say it may run, PENDING:\n%s", page)
	}
}
