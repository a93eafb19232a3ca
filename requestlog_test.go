package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// requestIDFormat is what a request id errand makes looks like.
var requestIDFormat = regexp.MustCompile(`^[0-9a-f]{16}$`)

func TestHandlersRequestID(t *testing.T) {
	tests := []struct {
		name string
		sent string
		kept bool
	}{
		{name: "sane id kept", sent: "req-123_ABC.x:y", kept: true},
		{name: "128 characters kept", sent: strings.Repeat("r", 128), kept: true},
		{name: "129 characters replaced", sent: strings.Repeat("r", 129)},
		{name: "spaces replaced", sent: "req 123"},
		{name: "tab replaced", sent: "req\t123"},
		{name: "non-ASCII replaced", sent: "réq"},
		{name: "none sent", sent: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newHandlerFixture(t)
			// An error answer, so the body's request_id is checked too.
			rec := f.serve(t, "GET", "/api/items/not-an-id", "", map[string]string{"X-Request-ID": tc.sent})
			checkErrorAnswer(t, rec, http.StatusBadRequest, "invalid_id", "")
			got := rec.Header().Get("X-Request-ID")
			switch {
			case tc.kept && got != tc.sent:
				t.Errorf("X-Request-ID: got %q, want %q echoed", got, tc.sent)
			case !tc.kept && !requestIDFormat.MatchString(got):
				t.Errorf("X-Request-ID: got %q, want a fresh 16-digit hexadecimal id", got)
			}
		})
	}
	t.Run("fresh ids differ", func(t *testing.T) {
		f := newHandlerFixture(t)
		a := f.serve(t, "GET", "/health", "", nil).Header().Get("X-Request-ID")
		b := f.serve(t, "GET", "/health", "", nil).Header().Get("X-Request-ID")
		if a == b {
			t.Errorf("two requests got the same id %q, want different ones", a)
		}
	})
}
