package main

import (
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// consoleFiles are the console's templates, style sheet and script, in
// the binary: the console needs nothing from the network.
//
//go:embed web/console
var consoleFiles embed.FS

// consolePolicy lets console pages load errand's own files and nothing
// else, run no inline script, and post forms only to errand.
const consolePolicy = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// consolePages are the console's page templates, each drawn inside
// web/console/layout.html.
var consolePages = []string{"overview", "tasks", "task", "submit", "schedules", "deadletters", "login", "error"}

// console is errand's web console at /ui/: server-rendered pages over
// errand's own API.
type console struct {
	api      consoleAPI
	sessions consoleSessions
	queues   queueDepthReader
	limiter  *rateLimiter // login attempts; nil: no limit
	pages    map[string]*template.Template
	log      *slog.Logger
	now      func() time.Time
}

func newConsole(api consoleAPI, sessions consoleSessions, queues queueDepthReader, limiter *rateLimiter,
	log *slog.Logger, now func() time.Time) *console {
	c := &console{api: api, sessions: sessions, queues: queues, limiter: limiter, log: log, now: now, pages: map[string]*template.Template{}}
	funcs := consoleTemplateFuncs(now)
	for _, name := range consolePages {
		// The templates are in the binary: one that does not parse is a
		// bug of the build, which every test of the console finds.
		c.pages[name] = template.Must(template.New("layout.html").Funcs(funcs).ParseFS(consoleFiles,
			"web/console/layout.html", "web/console/tasktable.html", "web/console/"+name+".html"))
	}
	return c
}

// consoleRoutes are the console's routes. They are pages for people, not
// API operations, so they are not in the route table (and not in
// /openapi.json).
func (c *console) routes() map[string]http.Handler {
	signedIn := func(h consoleHandler) http.Handler { return c.guard(h, true) }
	return map[string]http.Handler{
		"GET /ui":                                 http.RedirectHandler("/ui/", http.StatusMovedPermanently),
		"GET /ui/{$}":                             signedIn(c.overview),
		"GET /ui/tasks":                           signedIn(c.taskList),
		"GET /ui/tasks/{task_id}":                 signedIn(c.showTask),
		"GET /ui/tasks/{task_id}/events":          signedIn(c.taskEvents),
		"POST /ui/tasks/{task_id}/cancel":         signedIn(c.cancelTask),
		"POST /ui/tasks/{task_id}/retry":          signedIn(c.retryTask),
		"GET /ui/submit":                          signedIn(c.submitForm),
		"POST /ui/submit":                         signedIn(c.submitTask),
		"GET /ui/schedules":                       signedIn(c.scheduleList),
		"POST /ui/schedules/{name}/{action}":      signedIn(c.scheduleAction),
		"GET /ui/dead-letters":                    signedIn(c.deadLetterList),
		"POST /ui/dead-letters/{task_id}/requeue": signedIn(c.requeueDeadLetter),
		"POST /ui/dead-letters/purge":             signedIn(c.purgeDeadLetters),
		"GET /ui/files/{id}":                      signedIn(c.file),
		"GET /ui/login":                           c.guard(c.loginForm, false),
		"POST /ui/login":                          limitRate(c.limiter, c.guard(c.login, false)),
		"POST /ui/logout":                         c.guard(c.logout, false),
		"GET /ui/assets/{file}":                   http.HandlerFunc(c.asset),
		"GET /ui/{path...}":                       c.guard(c.notFound, false),
	}
}

// consoleHandler is a console page or action. It returns an error to be
// shown as an error page with the error's status.
type consoleHandler func(w http.ResponseWriter, r *http.Request) error

// guard sets the console's security headers, checks the session (when
// signedIn and API_KEYS is set) and, for a POST, the CSRF token, and
// shows a failure as an error page.
func (c *console) guard(h consoleHandler, signedIn bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", consolePolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		if signedIn && !c.sessions.open() {
			owner, ok := c.sessions.owner(r)
			if !ok {
				if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/events") && !strings.HasPrefix(r.URL.Path, "/ui/files/") {
					http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				c.fail(w, r, &apiError{status: http.StatusUnauthorized, code: "unauthorized", message: "Your session has ended: sign in again."})
				return
			}
			r = r.WithContext(withConsoleOwner(r.Context(), owner))
		}
		if r.Method == http.MethodPost && !validCSRF(r) {
			c.fail(w, r, &apiError{status: http.StatusForbidden, code: "csrf",
				message: "This form is out of date or did not come from errand's console. Go back, reload the page and try again."})
			return
		}
		if err := h(w, r); err != nil {
			c.fail(w, r, err)
		}
	})
}

// fail shows err as an error page: an API error with its status and
// message, anything else as a 500 whose details go to the log only.
func (c *console) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, message := http.StatusInternalServerError, apiMessage(err)
	var ae *apiError
	if errors.As(err, &ae) {
		status = ae.status
	} else {
		c.log.ErrorContext(r.Context(), "console request failed", "request_id", requestID(r.Context()), "method", r.Method,
			"path", r.URL.Path, "error", err.Error())
	}
	c.render(w, r, status, "error", "Something went wrong", errorPage{Status: status, StatusText: http.StatusText(status), Message: message})
}

type errorPage struct {
	Status     int
	StatusText string
	Message    string
}

// layoutData is what layout.html draws around every page.
type layoutData struct {
	Title    string
	Section  string // the page's name, to mark the current link
	Open     bool   // no API_KEYS: anyone who reaches the console may use it
	SignedIn bool
	CSRF     string
	Page     any
}

// render draws page inside the layout.
func (c *console) render(w http.ResponseWriter, r *http.Request, status int, page, title string, data any) {
	t, ok := c.pages[page]
	if !ok {
		panic("no console page " + page) // a programming error: every page is parsed at start
	}
	_, signedIn := c.sessions.owner(r)
	d := layoutData{Title: title, Section: page, Open: c.sessions.open(), SignedIn: signedIn, CSRF: csrfToken(w, r), Page: data}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := t.Execute(w, d); err != nil {
		// Part of the page may have gone out: there is no clean error
		// left to send, only the log to tell.
		c.log.ErrorContext(r.Context(), "render console page", "page", page, "error", err)
	}
}

// consoleAssets are the files GET /ui/assets/{file} serves.
var consoleAssets = map[string]string{"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}

func (c *console) asset(w http.ResponseWriter, r *http.Request) {
	file := r.PathValue("file")
	contentType, ok := consoleAssets[file]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-cache")
	http.ServeFileFS(w, r, consoleFiles, path.Join("web/console", file))
}
