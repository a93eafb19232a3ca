package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// FetchConfig says what a task may fetch from a URL.
type FetchConfig struct {
	// AllowHosts are hosts ("files.internal", "127.0.0.1", or with a port,
	// "127.0.0.1:9000") that may be fetched even though they resolve to a
	// loopback, private or link-local address, which are refused
	// otherwise: a URL in a task must not reach what only errand can.
	AllowHosts []string
	// Timeout bounds a fetch, the reading of its body included.
	Timeout time.Duration
	// MaxBytes is the largest body a fetch reads.
	MaxBytes int64
}

// Fetcher fetches the URLs that tasks take instead of a file_id.
type Fetcher struct {
	client   *http.Client
	timeout  time.Duration
	maxBytes int64
}

// Defaults of a fetch when FetchConfig leaves them out.
const (
	defaultFetchTimeout  = 30 * time.Second
	defaultFetchMaxBytes = 32 << 20
)

// ErrForbiddenAddress: a URL resolved to an address errand may not reach
// for a client: loopback, private or link-local, unless its host is
// allowed.
var ErrForbiddenAddress = errors.New("refused: the address is loopback, private or link-local")

// NewFetcher returns a fetcher that keeps to cfg.
func NewFetcher(cfg FetchConfig) *Fetcher {
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultFetchTimeout
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = defaultFetchMaxBytes
	}
	transport := GuardedTransport(cfg.AllowHosts, "FETCH_ALLOW_HOSTS")
	transport.ResponseHeaderTimeout = cfg.Timeout
	return &Fetcher{
		client: &http.Client{
			Transport: transport,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if len(via) >= 5 {
					return errors.New("more than 5 redirects")
				}
				if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
					return fmt.Errorf("redirect to a %s URL", req.URL.Scheme)
				}
				return nil
			},
		},
		timeout:  cfg.Timeout,
		maxBytes: cfg.MaxBytes,
	}
}

// GuardedTransport is an HTTP transport that connects to no loopback,
// private or link-local address, whatever a name resolves to, except for
// allowHosts (hosts, or host:port); allowVar names the setting that lists
// them, for the error.
func GuardedTransport(allowHosts []string, allowVar string) *http.Transport {
	allowed := map[string]bool{}
	for _, h := range allowHosts {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			allowed[h] = true
		}
	}
	open := &net.Dialer{Timeout: 10 * time.Second}
	guarded := &net.Dialer{Timeout: 10 * time.Second, Control: refuseInternal}
	return &http.Transport{
		// No proxy from the environment: the guard checks the address
		// errand connects to, and through a proxy that is the proxy's.
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, fmt.Errorf("dial %s: %w", addr, err)
			}
			if allowed[strings.ToLower(addr)] || allowed[strings.ToLower(host)] {
				return open.DialContext(ctx, network, addr)
			}
			conn, err := guarded.DialContext(ctx, network, addr)
			if errors.Is(err, ErrForbiddenAddress) {
				err = fmt.Errorf("%w (%s can allow %s)", err, allowVar, host)
			}
			return conn, err
		},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConns:        16,
		IdleConnTimeout:     30 * time.Second,
	}
}

// refuseInternal refuses a connection to an address a task may not reach.
// It runs after name resolution, on the address actually dialled, so a
// name that resolves to an internal address is refused too.
func refuseInternal(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%s: %w", address, ErrForbiddenAddress)
	}
	if InternalAddr(ap.Addr()) {
		return fmt.Errorf("%s: %w", ap.Addr(), ErrForbiddenAddress)
	}
	return nil
}

// sharedAddressSpace is 100.64.0.0/10, carrier-grade NAT: private in
// practice, though not in net's IsPrivate.
var sharedAddressSpace = netip.MustParsePrefix("100.64.0.0/10")

// InternalAddr reports whether a is loopback, private, link-local,
// multicast, unspecified or carrier-grade NAT: an address inside.
func InternalAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() || sharedAddressSpace.Contains(a)
}

// checkFetchURL is the rule a submit's URL argument keeps: an absolute
// http or https URL with a host.
func checkFetchURL(field, raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return &FieldError{Field: field, Reason: "must be an http or https URL"}
	}
	return nil
}

// fetch GETs rawURL. A refused address, a client error and a body over
// the limit are permanent failures; a timeout, a connection that failed
// and a server error (5xx, 429) may succeed on a retry.
func (f *Fetcher) fetch(ctx context.Context, rawURL string) (input, error) {
	if err := checkFetchURL("url", rawURL); err != nil {
		return input{}, Permanent(err)
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		cancel()
		return input{}, Permanent(fmt.Errorf("fetch %s: %w", rawURL, err))
	}
	req.Header.Set("User-Agent", "errand")
	resp, err := f.client.Do(req)
	if err != nil {
		cancel()
		if errors.Is(err, ErrForbiddenAddress) {
			return input{}, Permanent(fmt.Errorf("fetch %s: %w", rawURL, err))
		}
		return input{}, fmt.Errorf("fetch %s: %w", rawURL, err)
	}
	fail := func(err error) (input, error) {
		resp.Body.Close()
		cancel()
		return input{}, err
	}
	switch {
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return fail(fmt.Errorf("fetch %s: the server answered %s", rawURL, resp.Status))
	case resp.StatusCode != http.StatusOK:
		return fail(Permanent(fmt.Errorf("fetch %s: the server answered %s", rawURL, resp.Status)))
	case resp.ContentLength > f.maxBytes:
		return fail(Permanent(fmt.Errorf("fetch %s: %d bytes, more than the limit of %d", rawURL, resp.ContentLength, f.maxBytes)))
	}
	name := ""
	if i := strings.LastIndexByte(resp.Request.URL.Path, '/'); i >= 0 {
		name = resp.Request.URL.Path[i+1:]
	}
	return input{
		name:        name,
		contentType: resp.Header.Get("Content-Type"),
		size:        resp.ContentLength,
		body:        &fetchedBody{body: resp.Body, max: f.maxBytes, left: f.maxBytes, url: rawURL, cancel: cancel},
	}, nil
}

// fetchedBody is a fetched body that fails permanently past the size
// limit and ends the fetch's time limit when closed.
type fetchedBody struct {
	body   io.ReadCloser
	max    int64
	left   int64
	url    string
	cancel context.CancelFunc
}

func (b *fetchedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.body.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return n, Permanent(fmt.Errorf("fetch %s: more than the limit of %d bytes", b.url, b.max))
	}
	return n, err
}

func (b *fetchedBody) Close() error {
	defer b.cancel()
	return b.body.Close()
}
