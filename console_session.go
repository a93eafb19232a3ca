package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"math"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"
)

// The console's cookies. The session names the signed-in key's owner
// (never the key) with an expiry, signed with a secret derived from the
// key; the CSRF cookie holds a random token that every form repeats.
// Both are HttpOnly and SameSite=Strict, and Secure behind TLS.
const (
	sessionCookie   = "errand_session"
	csrfCookie      = "errand_csrf"
	csrfField       = "csrf"
	sessionLifetime = 12 * time.Hour
	// A client address may try a key once a second, in bursts of 10:
	// enough for a person, far too slow to guess a key.
	signInsPerSecond = 1
	signInBurst      = 10
)

// consoleSessions signs people in to the console with an API key and
// checks their sessions and CSRF tokens.
type consoleSessions struct {
	keys *apiKeys
	now  func() time.Time
}

// open reports whether the console needs no key (API_KEYS is not set).
func (s consoleSessions) open() bool { return !s.keys.enabled() }

// signIn sets the session cookie of the owner of key, or reports that the
// key is not one of API_KEYS.
func (s consoleSessions) signIn(w http.ResponseWriter, r *http.Request, key string) bool {
	owner, ok := s.keys.owner(key)
	if !ok {
		return false
	}
	expires := s.now().Add(sessionLifetime)
	payload := owner + "." + strconv.FormatInt(expires.Unix(), 10)
	value := payload + "." + base64.RawURLEncoding.EncodeToString(s.sign(owner, payload))
	http.SetCookie(w, consoleCookie(r, sessionCookie, value, expires))
	return true
}

// signOut ends the session in this browser.
func (s consoleSessions) signOut(w http.ResponseWriter, r *http.Request) {
	c := consoleCookie(r, sessionCookie, "", time.Unix(0, 0))
	c.MaxAge = -1
	http.SetCookie(w, c)
}

// owner is the owner of the request's valid session.
func (s consoleSessions) owner(r *http.Request) (string, bool) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || s.open() {
		return "", false
	}
	i := strings.LastIndexByte(c.Value, '.')
	if i < 0 {
		return "", false
	}
	payload, mac := c.Value[:i], c.Value[i+1:]
	owner, expiry, ok := strings.Cut(payload, ".")
	if !ok {
		return "", false
	}
	unix, err := strconv.ParseInt(expiry, 10, 64)
	if err != nil || !s.now().Before(time.Unix(unix, 0)) {
		return "", false
	}
	got, err := base64.RawURLEncoding.Strict().DecodeString(mac)
	want := s.sign(owner, payload)
	if err != nil || want == nil || !hmac.Equal(got, want) {
		return "", false
	}
	return owner, true
}

// sign is the MAC of payload with owner's session secret; nil for an
// owner that is no longer a key.
func (s consoleSessions) sign(owner, payload string) []byte {
	secret, ok := s.keys.sessionSecrets[owner]
	if !ok {
		return nil
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// csrfToken is the request's CSRF token, set as a cookie when the browser
// has none yet. Forms carry it back in a hidden field.
func csrfToken(w http.ResponseWriter, r *http.Request) string {
	if c, err := r.Cookie(csrfCookie); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	token := base64.RawURLEncoding.EncodeToString(b)
	http.SetCookie(w, consoleCookie(r, csrfCookie, token, time.Time{}))
	return token
}

// validCSRF reports whether a form's token matches the browser's cookie:
// a page of another site can make the browser post a form, but cannot
// read the cookie to put it in the form.
func validCSRF(r *http.Request) bool {
	c, err := r.Cookie(csrfCookie)
	if err != nil || c.Value == "" {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(c.Value), []byte(r.PostFormValue(csrfField))) == 1
}

// consoleCookie is a cookie of the console's: for /ui only, out of reach
// of scripts and of other sites' requests, and only over HTTPS when the
// console is reached over HTTPS.
func consoleCookie(r *http.Request, name, value string, expires time.Time) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: "/ui/", Expires: expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https",
	}
}

// withConsoleOwner is ctx as the API sees a request of owner.
func withConsoleOwner(ctx context.Context, owner string) context.Context {
	return context.WithValue(ctx, ownerKey{}, owner)
}

type loginPage struct {
	Next  string
	Error string
}

func (c *console) loginForm(w http.ResponseWriter, r *http.Request) error {
	if c.sessions.open() {
		http.Redirect(w, r, "/ui/", http.StatusSeeOther)
		return nil
	}
	c.render(w, r, http.StatusOK, "login", "Sign in", loginPage{Next: safeNext(r.URL.Query().Get("next"))})
	return nil
}

// login signs in with an API key and goes on to the page that asked for
// it.
func (c *console) login(w http.ResponseWriter, r *http.Request) error {
	next := safeNext(r.PostFormValue("next"))
	if c.sessions.open() {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return nil
	}
	addr, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ok, wait := c.signIns.reserve(addr, c.now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
		c.render(w, r, http.StatusTooManyRequests, "login", "Sign in", loginPage{Next: next, Error: "Too many attempts from here: wait a moment and try again."})
		return nil
	}
	if !c.sessions.signIn(w, r, strings.TrimSpace(r.PostFormValue("key"))) {
		c.render(w, r, http.StatusUnauthorized, "login", "Sign in", loginPage{Next: next, Error: "That is not one of errand's API keys."})
		return nil
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (c *console) logout(w http.ResponseWriter, r *http.Request) error {
	c.sessions.signOut(w, r)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
	return nil
}

// safeNext is where to go after signing in: a console page, never
// another site.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.Opaque != "" || strings.ContainsAny(next, "\\\r\n\t") {
		return "/ui/"
	}
	// Only a clean path under /ui/: no "..", no "//" that a browser would
	// read as another host.
	clean := path.Clean(u.Path)
	if clean != u.Path && clean+"/" != u.Path || !strings.HasPrefix(clean+"/", "/ui/") {
		return "/ui/"
	}
	return next
}
