package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

// TestHTTPServerLimits: errand's server refuses oversized headers and
// drops a client that never finishes its headers (ReadHeaderTimeout), so
// a slow or hostile client cannot hold a connection for ever; and Go's
// profiles, with PPROF_ADDR set, are served there and not on ADDR.
func TestHTTPServerLimits(t *testing.T) {
	pprofAddr := freeAddr(t)
	base := startErrand(t, map[string]string{"PPROF_ADDR": pprofAddr})

	t.Run("oversized header", func(t *testing.T) {
		padding := map[string]string{"X-Padding": strings.Repeat("a", 100<<10)}
		if code := apiCall(t, "GET", base+"/health", "", padding, nil).StatusCode; code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("100 KB header: status %d, want 431", code)
		}
	})

	t.Run("headers never finished", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /health HTTP/1.1\r\nHost: errand\r\n"); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err = io.ReadAll(conn) // returns when the server closes the connection
		if err != nil {
			t.Fatalf("server did not close a connection whose headers never ended: %v", err)
		}
		if took := time.Since(start); took < 4*time.Second {
			t.Errorf("connection closed after %v, want it kept for the 5 s header timeout first", took)
		}
	})

	t.Run("pprof on its own address", func(t *testing.T) {
		if code := apiCall(t, "GET", "http://"+pprofAddr+"/debug/pprof/cmdline", "", nil, nil).StatusCode; code != http.StatusOK {
			t.Errorf("GET /debug/pprof/cmdline on PPROF_ADDR: %d, want 200", code)
		}
		var body errorBody
		if code := apiCall(t, "GET", base+"/debug/pprof/cmdline", "", nil, &body).StatusCode; code != http.StatusNotFound || body.Error != "not_found" {
			t.Errorf("GET /debug/pprof/cmdline on ADDR: %d %+v, want a JSON 404", code, body)
		}
	})
}

// slowWriter is an output whose every write takes a while, as a slow
// terminal or a full pipe does.
type slowWriter struct{ lockedBuffer }

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(20 * time.Millisecond)
	return w.lockedBuffer.Write(p)
}

// TestRunTunesGCAndFlushesItsLog: with GOGC unset errand runs the
// collector at 300 %, and with GOGC set it leaves the collector to the
// runtime; and every log line, the last included, is written by the time
// run returns, although lines share writes in between and the output is
// slow.
func TestRunTunesGCAndFlushesItsLog(t *testing.T) {
	before := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(before) })
	for _, tc := range []struct {
		gogc string
		want int
	}{{"", 300}, {"50", 100}} {
		debug.SetGCPercent(100)
		addr := freeAddr(t)
		env := map[string]string{"ADDR": addr, "GOGC": tc.gogc}
		var out slowWriter
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- run(ctx, []string{"errand"}, func(k string) string { return env[k] }, &out, &out) }()
		waitForHTTP(t, "http://"+addr+"/health", done)
		if got := debug.SetGCPercent(100); got != tc.want {
			t.Errorf("GOGC=%q: collector at %d %%, want %d %%", tc.gogc, got, tc.want)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatalf("run returned %v, want nil", err)
		}
		if logged := out.String(); !strings.Contains(logged, `"msg":"errand stopped"`) {
			t.Fatalf("GOGC=%q: the last log line is missing once run returned; got:\n%s", tc.gogc, logged)
		}
	}
}
