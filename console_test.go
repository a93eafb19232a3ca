package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
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
	if rec := f.browse(t, "POST", "/ui/tasks/"+other+"/cancel", url.Values{"csrf": {f.csrf(t)}}, nil); rec.Code != http.StatusNotFound {
		t.Errorf("key b's task cancelled by key a: %d, want 404", rec.Code)
	}

	// Behind TLS (nginx says so), the cookies are Secure.
	rec = f.browse(t, "POST", "/ui/login", url.Values{"key": {"key-a"}, "csrf": {f.csrf(t)}}, map[string]string{"X-Forwarded-Proto": "https"})
	for _, c := range rec.Result().Cookies() {
		if c.Name == sessionCookie && !c.Secure {
			t.Errorf("session cookie behind TLS is not Secure")
		}
	}

	rec = f.browse(t, "POST", "/ui/logout", url.Values{"csrf": {f.csrf(t)}}, nil)
	if rec.Code != http.StatusSeeOther {
		t.Fatalf("sign out: %d, want 303", rec.Code)
	}
	if rec := f.browse(t, "GET", "/ui/", nil, nil); rec.Code != http.StatusSeeOther {
		t.Errorf("after signing out: %d, want 303 to the sign-in page", rec.Code)
	}
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
	payload, mac, _ := strings.Cut(cookie.Value, ".")
	_, mac, _ = strings.Cut(mac, ".")
	forged := []struct{ name, value string }{
		{"another owner, same signature", otherOwner + "." + strings.SplitN(cookie.Value, ".", 3)[1] + "." + mac},
		{"a later expiry", payload + "." + "9999999999" + "." + mac},
		{"no signature", payload + "." + strings.SplitN(cookie.Value, ".", 3)[1]},
		{"a flipped signature", cookie.Value[:len(cookie.Value)-1] + map[bool]string{true: "A", false: "B"}[cookie.Value[len(cookie.Value)-1] != 'A']},
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
	for _, next := range []string{"//evil.example/", "https://evil.example/", "/ui//evil.example", "/api/tasks", "/ui/\\evil"} {
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
		{url.Values{"type": {"process_heavy_task"}, "arg.data": {"x"}, "countdown": {"soon"}}, "countdown", "must be a number of seconds"},
	} {
		tc.form.Set("csrf", f.csrf(t))
		rec := f.browse(t, "POST", "/ui/submit", tc.form, nil)
		body := rec.Body.String()
		if rec.Code != http.StatusUnprocessableEntity || !strings.Contains(body, tc.wantText) {
			t.Errorf("submit %v: %d, want 422 saying %q", tc.form, rec.Code, tc.wantText)
			continue
		}
		// The message sits in the field's own block, after its input.
		field := body[strings.Index(body, `id="arg-`+tc.wantField+`"`)+1:]
		if tc.wantField == "countdown" {
			field = body[strings.Index(body, `id="countdown"`):]
		}
		if !strings.Contains(field[:strings.Index(field, "</div>")], tc.wantText) {
			t.Errorf("submit %v: %q is not shown at %s", tc.form, tc.wantText, tc.wantField)
		}
	}
	if n, _ := f.broker.depth(); n != 0 {
		t.Errorf("%d tasks queued by refused forms, want none", n)
	}
}
