package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// apiKeys checks API keys. Keys are compared as SHA-256 digests with
// subtle.ConstantTimeCompare against every configured key, so neither the
// comparison nor the loop leaks how much of a key matched.
type apiKeys struct {
	digests [][sha256.Size]byte
	// sessionSecrets sign the console's sessions, one per key (by owner),
	// derived from the key itself: every API process agrees on them, and
	// removing a key ends its sessions.
	sessionSecrets map[string][]byte
}

func newAPIKeys(list string) *apiKeys {
	k := &apiKeys{sessionSecrets: map[string][]byte{}}
	for _, key := range strings.Split(list, ",") {
		if key = strings.TrimSpace(key); key != "" {
			d := sha256.Sum256([]byte(key))
			k.digests = append(k.digests, d)
			secret := sha256.Sum256([]byte("errand console session\x00" + key))
			k.sessionSecrets[ownerOf(d)] = secret[:]
		}
	}
	return k
}

func ownerOf(digest [sha256.Size]byte) string { return hex.EncodeToString(digest[:8]) }

func (k *apiKeys) enabled() bool { return k != nil && len(k.digests) > 0 }

// owner returns the identity of a valid key: a short digest that is safe
// to store and log. ok is false for a missing or unknown key.
func (k *apiKeys) owner(key string) (owner string, ok bool) {
	if key == "" {
		return "", false
	}
	d := sha256.Sum256([]byte(key))
	match := 0
	for _, want := range k.digests {
		match |= subtle.ConstantTimeCompare(d[:], want[:])
	}
	if match != 1 {
		return "", false
	}
	return ownerOf(d), true
}

// presentedKey reads the key from X-API-Key or an Authorization bearer
// token.
func presentedKey(r *http.Request) string {
	if k := r.Header.Get("X-API-Key"); k != "" {
		return k
	}
	if auth := r.Header.Get("Authorization"); len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		return strings.TrimSpace(auth[7:])
	}
	return ""
}

type ownerKey struct{}

// taskOwner is the identity of the API key of the request, "" without keys.
func taskOwner(ctx context.Context) string {
	o, _ := ctx.Value(ownerKey{}).(string)
	return o
}

var errUnauthorized = &apiError{status: http.StatusUnauthorized, code: "unauthorized",
	message: "a valid API key is required: send it as X-API-Key or Authorization: Bearer"}

// requireAPIKey answers 401 to a request without a valid key when keys
// are configured, and puts the key's identity in the request context.
func requireAPIKey(keys *apiKeys, next http.Handler) http.Handler {
	if !keys.enabled() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		owner, ok := keys.owner(presentedKey(r))
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="errand"`)
			writeError(w, r, errUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), ownerKey{}, owner)))
	})
}

// rateLimiter gives each client (its API key, or its address without
// keys) a token bucket. Limits are per process: with N API replicas a
// client gets up to N times the rate.
type rateLimiter struct {
	perSecond rate.Limit
	burst     int

	mu      sync.Mutex
	clients map[string]*clientLimiter
	sweptAt time.Time
}

type clientLimiter struct {
	limiter  *rate.Limiter
	lastSeen time.Time
}

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	return &rateLimiter{perSecond: rate.Limit(perSecond), burst: burst, clients: map[string]*clientLimiter{}}
}

// reserve takes a token for client, or says how long until one is free.
func (l *rateLimiter) reserve(client string, now time.Time) (ok bool, retryAfter time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.sweptAt) > time.Minute {
		// Forget clients idle long enough for their bucket to be full
		// again, so the map does not grow with every address ever seen.
		for k, c := range l.clients {
			if now.Sub(c.lastSeen) > time.Minute {
				delete(l.clients, k)
			}
		}
		l.sweptAt = now
	}
	c, found := l.clients[client]
	if !found {
		c = &clientLimiter{limiter: rate.NewLimiter(l.perSecond, l.burst)}
		l.clients[client] = c
	}
	c.lastSeen = now
	res := c.limiter.ReserveN(now, 1)
	if delay := res.DelayFrom(now); delay > 0 {
		res.CancelAt(now)
		return false, delay
	}
	return true, 0
}

// limitRate answers 429 with Retry-After to a client over its rate.
func limitRate(l *rateLimiter, next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := taskOwner(r.Context())
		if client == "" {
			client, _, _ = net.SplitHostPort(r.RemoteAddr)
		}
		if ok, wait := l.reserve(client, time.Now()); !ok {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
			writeError(w, r, &apiError{status: http.StatusTooManyRequests, code: "rate_limited",
				message: fmt.Sprintf("too many requests: the limit is %g per second with bursts of %d", float64(l.perSecond), l.burst)})
			return
		}
		next.ServeHTTP(w, r)
	})
}
