package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandlersMuxErrors(t *testing.T) {
	tests := []struct {
		method, path string
		wantStatus   int
		wantCode     string
		wantAllow    string
	}{
		{method: "GET", path: "/nope", wantStatus: 404, wantCode: "not_found"},
		{method: "GET", path: "/api/item", wantStatus: 404, wantCode: "not_found"},
		{method: "GET", path: "/api/async/status/", wantStatus: 404, wantCode: "not_found"},
		{method: "PATCH", path: "/api/items", wantStatus: 405, wantCode: "method_not_allowed", wantAllow: "GET, HEAD, POST"},
		{method: "PATCH", path: "/api/items/507f1f77bcf86cd799439011", wantStatus: 405, wantCode: "method_not_allowed", wantAllow: "DELETE, GET, HEAD, PUT"},
		{method: "GET", path: "/api/async/process", wantStatus: 405, wantCode: "method_not_allowed", wantAllow: "POST"},
		{method: "POST", path: "/health", wantStatus: 405, wantCode: "method_not_allowed", wantAllow: "GET, HEAD"},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			f := newHandlerFixture(t)
			rec := f.serve(t, tc.method, tc.path, "", nil)
			checkErrorAnswer(t, rec, tc.wantStatus, tc.wantCode, "")
			if got := rec.Header().Get("Allow"); got != tc.wantAllow {
				t.Errorf("Allow: got %q, want %q", got, tc.wantAllow)
			}
		})
	}
}

func TestHandlersWorkerOnly(t *testing.T) {
	f := newHandlerFixture(t, func(d *apiParts) { d.serveAPI = false })
	var h healthResponse
	decodeAnswer(t, f.serve(t, "GET", "/health", "", nil), http.StatusOK, &h)
	if h.Status != "healthy" {
		t.Errorf("health status: got %q, want healthy", h.Status)
	}
	for _, r := range []struct{ method, path, body string }{
		{"GET", "/api/items", ""},
		{"POST", "/api/items", `{"name": "x"}`},
		{"POST", "/api/async/process", `{"data": "d"}`},
		{"GET", "/api/async/status/6d1f1c2e-0000-4000-8000-000000000000", ""},
		{"POST", "/api/send-welcome-email?user_email=john@example.com&user_name=John", ""},
	} {
		t.Run(r.method+" "+r.path, func(t *testing.T) {
			checkErrorAnswer(t, f.serve(t, r.method, r.path, r.body, nil), http.StatusNotFound, "not_found", "")
		})
	}
	if ready, _ := f.broker.depth(); ready != 0 {
		t.Errorf("messages queued by a worker-only server: got %d, want 0", ready)
	}
}

// TestHandlersOverHTTP sends the guide's curl requests through a real
// connection, where bodies, lengths and headers are what a client sends.
func TestHandlersOverHTTP(t *testing.T) {
	f := newHandlerFixture(t)
	srv := httptest.NewServer(f.server)
	t.Cleanup(srv.Close)

	send := func(t *testing.T, method, path, contentType, body string, header map[string]string) (*http.Response, []byte) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, srv.URL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read answer: %v", err)
		}
		return resp, raw
	}

	tests := []struct {
		name, method, path, contentType, body string
		header                                map[string]string
		wantStatus                            int
	}{
		{name: "create the guide's item", method: "POST", path: "/api/items", contentType: "application/json",
			body: `{"name": "Test Item", "description": "My first item", "metadata": {"category": "test"}}`, wantStatus: 201},
		{name: "curl -d without a type", method: "POST", path: "/api/async/process", contentType: "application/x-www-form-urlencoded",
			body: `{"data": "heavy processing task", "iterations": 100, "priority": "high"}`, wantStatus: 202},
		{name: "the guide's welcome e-mail", method: "POST", path: "/api/send-welcome-email?user_email=john@example.com&user_name=John",
			contentType: "application/json", wantStatus: 202},
		{name: "body over MaxBodyBytes", method: "POST", path: "/api/items", contentType: "application/json",
			body: `{"name": "` + strings.Repeat("n", 2*handlerMaxBody) + `"}`, wantStatus: 413},
		{name: "request id echoed", method: "GET", path: "/health", header: map[string]string{"X-Request-ID": "trace-42"}, wantStatus: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, raw := send(t, tc.method, tc.path, tc.contentType, tc.body, tc.header)
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status: got %d, want %d (body %s)", resp.StatusCode, tc.wantStatus, raw)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type: got %q, want application/json", ct)
			}
			if !json.Valid(raw) {
				t.Errorf("body %s is not JSON", raw)
			}
			if want := tc.header["X-Request-ID"]; want != "" && resp.Header.Get("X-Request-ID") != want {
				t.Errorf("X-Request-ID: got %q, want %q", resp.Header.Get("X-Request-ID"), want)
			}
		})
	}
}
