package main

import (
	"embed"
	"html/template"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
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
var consolePages = []string{"overview", "tasks", "task", "workflow", "submit", "schedules", "deadletters", "login", "error"}

// console is errand's web console at /ui/: server-rendered pages over
// errand's own API.
type console struct {
	api      consoleAPI
	sessions consoleSessions
	queues   queueDepthReader
	limiter  *rateLimiter // the API's (RATE_LIMIT); nil: none
	signIns  *rateLimiter // sign-in attempts per client address
	pages    map[string]*template.Template
	log      *slog.Logger
	now      func() time.Time
}

func newConsole(api consoleAPI, sessions consoleSessions, queues queueDepthReader, limiter *rateLimiter,
	log *slog.Logger, now func() time.Time) *console {
	c := &console{api: api, sessions: sessions, queues: queues, limiter: limiter, log: log, now: now, pages: map[string]*template.Template{},
		signIns: newRateLimiter(signInsPerSecond, signInBurst)}
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
		"GET /ui/workflows/{workflow_id}":         signedIn(c.showWorkflow),
		"POST /ui/workflows/{workflow_id}/cancel": signedIn(c.cancelWorkflow),
		"GET /ui/submit":                          signedIn(c.submitForm),
		"POST /ui/submit":                         signedIn(c.submitTask),
		"GET /ui/schedules":                       signedIn(c.scheduleList),
		"POST /ui/schedules/{name}/{action}":      signedIn(c.scheduleAction),
		"GET /ui/dead-letters":                    signedIn(c.deadLetterList),
		"POST /ui/dead-letters/{task_id}/requeue": signedIn(c.requeueDeadLetter),
		"POST /ui/dead-letters/purge":             signedIn(c.purgeDeadLetters),
		"GET /ui/files/{id}":                      signedIn(c.file),
		"GET /ui/login":                           c.guard(c.loginForm, false),
		"POST /ui/login":                          c.guard(c.login, false),
		"POST /ui/logout":                         c.guard(c.logout, false),
		"GET /ui/assets/{file}":                   http.HandlerFunc(c.asset),
		"GET /ui/{path...}":                       c.guard(c.notFound, false),
		"POST /ui/{path...}":                      c.guard(c.notFound, false),
	}
}

// consoleHandler is a console page or action. It returns an error to be
// shown as an error page with the error's status.
type consoleHandler func(w http.ResponseWriter, r *http.Request) error

// consoleFormMaxBytes bounds a console form's body: a few fields, the
// largest a task's arguments.
const consoleFormMaxBytes = 256 << 10

// guard sets the console's security headers; checks the session (when
// signedIn and API_KEYS is set), the client's rate and, for a POST, the
// form and its CSRF token; and shows a failure as an error page.
func (c *console) guard(h consoleHandler, signedIn bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", consolePolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		owner := ""
		if signedIn && !c.sessions.open() {
			var ok bool
			if owner, ok = c.sessions.owner(r); !ok {
				if r.Method == http.MethodGet && !strings.HasSuffix(r.URL.Path, "/events") && !strings.HasPrefix(r.URL.Path, "/ui/files/") {
					http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
					return
				}
				c.fail(w, r, &apiError{status: http.StatusUnauthorized, code: "unauthorized", message: "Your session has ended: sign in again."})
				return
			}
			r = r.WithContext(withConsoleOwner(r.Context(), owner))
		}
		if signedIn && c.limiter != nil {
			// The console's pages and actions spend the client's API rate
			// budget, as the API calls they make would.
			client := owner
			if client == "" {
				client, _, _ = net.SplitHostPort(r.RemoteAddr)
			}
			if ok, wait := c.limiter.reserve(client, c.now()); !ok {
				hd.Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				c.fail(w, r, &apiError{status: http.StatusTooManyRequests, code: "rate_limited", message: "Too many requests: wait a moment and try again."})
				return
			}
		}
		if r.Method == http.MethodPost {
			if err := readConsoleForm(w, r); err != nil {
				c.fail(w, r, err)
				return
			}
			if !validCSRF(r) {
				c.fail(w, r, &apiError{status: http.StatusForbidden, code: "csrf",
					message: "This form is out of date or did not come from errand's console. Go back, reload the page and try again."})
				return
			}
		}
		if err := h(w, r); err != nil {
			c.fail(w, r, err)
		}
	})
}

// readConsoleForm reads a POST's form: URL-encoded, as the console's forms
// send it, and small.
func readConsoleForm(w http.ResponseWriter, r *http.Request) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/x-www-form-urlencoded" {
		return &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", message: "The console takes its own forms only."}
	}
	r.Body = http.MaxBytesReader(w, r.Body, consoleFormMaxBytes)
	if err := r.ParseForm(); err != nil {
		return &apiError{status: http.StatusRequestEntityTooLarge, code: "body_too_large", message: "This form is larger than the console takes."}
	}
	return nil
}

// fail shows err as an error page with the status and message the API
// would answer (errorStatus), and the request id to find it in the log.
func (c *console) fail(w http.ResponseWriter, r *http.Request, err error) {
	status, body := errorStatus(err)
	if status >= http.StatusInternalServerError {
		c.log.ErrorContext(r.Context(), "console request failed", "request_id", requestID(r.Context()), "method", r.Method,
			"path", r.URL.Path, "status", status, "error", err.Error())
	}
	c.render(w, r, status, "error", "Something went wrong",
		errorPage{Status: status, StatusText: http.StatusText(status), Message: body.Detail, RequestID: requestID(r.Context())})
}

type errorPage struct {
	Status     int
	StatusText string
	Message    string
	RequestID  string
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
