package tasks

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"
)

// hostOf is the host:port of a test server's URL.
func hostOf(t *testing.T, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

func TestFetchRefusesInternalAddressesUnlessAllowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "fetched")
	}))
	defer srv.Close()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, srv.URL+"/a.txt", http.StatusFound)
	}))
	defer other.Close()

	read := func(f *Fetcher, rawURL string) (string, error) {
		in, err := f.fetch(context.Background(), rawURL)
		if err != nil {
			return "", err
		}
		defer in.body.Close()
		b, err := io.ReadAll(in.body)
		return string(b), err
	}
	for _, tc := range []struct {
		name  string
		allow []string
		url   string
		want  string // empty: refused
	}{
		{name: "loopback, nothing allowed", url: srv.URL + "/a.txt"},
		{name: "loopback by name, nothing allowed", url: strings.Replace(srv.URL, "127.0.0.1", "localhost", 1) + "/a.txt"},
		{name: "the host allowed", allow: []string{"127.0.0.1"}, url: srv.URL + "/a.txt", want: "fetched"},
		{name: "the host and port allowed", allow: []string{hostOf(t, srv.URL)}, url: srv.URL + "/a.txt", want: "fetched"},
		{name: "another port of the host allowed", allow: []string{hostOf(t, other.URL)}, url: srv.URL + "/a.txt"},
		{name: "a redirect from an allowed server to one that is not", allow: []string{hostOf(t, other.URL)}, url: other.URL + "/go"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := read(NewFetcher(FetchConfig{AllowHosts: tc.allow}), tc.url)
			if tc.want == "" {
				if !errors.Is(err, ErrForbiddenAddress) || Retryable(err) {
					t.Errorf("fetch %s: %q, %v; want a permanent refusal", tc.url, got, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("fetch %s: %q, %v; want %q", tc.url, got, err, tc.want)
			}
		})
	}
}

func TestInternalAddresses(t *testing.T) {
	for addr, internal := range map[string]bool{
		"127.0.0.1": true, "::1": true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true,
		"169.254.169.254": true, "fe80::1": true, "0.0.0.0": true, "::": true, "100.64.0.1": true,
		"::ffff:127.0.0.1": true, "fd00::1": true, "224.0.0.1": true,
		"93.184.216.34": false, "2606:2800:220:1::1": false, "8.8.8.8": false,
	} {
		if got := InternalAddr(netip.MustParseAddr(addr)); got != internal {
			t.Errorf("InternalAddr(%s) = %v, want %v", addr, got, internal)
		}
	}
}

func TestFetchFailuresAreRetriedOnlyWhenARetryCouldHelp(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/busy", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "busy", http.StatusServiceUnavailable) })
	mux.HandleFunc("/gone", func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/slow-body", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "start")
		w.(http.Flusher).Flush()
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("x", 5000)) })
	mux.HandleFunc("/big-chunked", func(w http.ResponseWriter, r *http.Request) {
		for range 5 {
			io.WriteString(w, strings.Repeat("x", 1000))
			w.(http.Flusher).Flush()
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	f := NewFetcher(FetchConfig{AllowHosts: []string{"127.0.0.1"}, Timeout: 300 * time.Millisecond, MaxBytes: 2048})
	for path, retryable := range map[string]bool{
		"/busy": true, "/slow": true, "/slow-body": true,
		"/gone": false, "/big": false, "/big-chunked": false,
	} {
		t.Run(path, func(t *testing.T) {
			in, err := f.fetch(context.Background(), srv.URL+path)
			if err == nil {
				_, err = io.ReadAll(in.body)
				in.body.Close()
			}
			if err == nil || Retryable(err) != retryable {
				t.Errorf("fetch %s: error %v, want one that is retryable: %v", path, err, retryable)
			}
		})
	}
}
