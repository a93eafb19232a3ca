package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// pinger is a dependency that /health checks.
type pinger interface {
	ping(ctx context.Context) error
}

// pingAll pings every dependency at once, each with its own deadline,
// and returns each one's answer: nil when it answered.
func pingAll(ctx context.Context, deps map[string]pinger, timeout time.Duration) map[string]error {
	answers := make(map[string]error, len(deps))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, dep := range deps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			err := dep.ping(ctx)
			mu.Lock()
			answers[name] = err
			mu.Unlock()
		}()
	}
	wg.Wait()
	return answers
}

type healthResponse struct {
	Status    string            `json:"status"`
	Timestamp string            `json:"timestamp"`
	Services  map[string]string `json:"services"`
	Backends  string            `json:"backends"`
}

// handleHealth pings every dependency and answers 503 naming the ones that
// failed.
func handleHealth(deps map[string]pinger, backends string, timeout time.Duration, log *slog.Logger, now func() time.Time) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		resp := healthResponse{Status: "healthy", Services: map[string]string{}, Backends: backends}
		code := http.StatusOK
		for name, err := range pingAll(r.Context(), deps, timeout) {
			resp.Services[name] = "connected"
			if err != nil {
				resp.Services[name] = "disconnected"
				resp.Status, code = "unhealthy", http.StatusServiceUnavailable
				log.WarnContext(r.Context(), "health check failed", "service", name, "error", err, "request_id", requestID(r.Context()))
			}
		}
		resp.Timestamp = now().UTC().Format(isoMillis)
		writeJSON(w, code, resp)
		return nil
	}
}
