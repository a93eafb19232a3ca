// Command floorserver answers the guide's POST /api/async/process as
// cheaply as a server can, to measure the floor under errand's API cost
// per submit on a given machine:
//
//	-mode bare      decode the body and answer 202 with a new id, nothing else
//	-mode promises  also keep errand's two promises before the 202: the
//	                task's PENDING status written to Redis, and the task
//	                published to RabbitMQ as a persistent message and
//	                confirmed, both batched across concurrent requests as
//	                errand batches them (two loops each; a batch of
//	                publishes is one message)
//
// It has none of errand's other work: no argument check, no access log,
// no metrics, no tracing, no idempotency keys, and no worker consumes
// what it publishes. scripts/floor drives it with the bench harness's k6
// submit script and reads its CPU from /proc. Only loopback addresses are
// accepted.
//
// It lives in its own Go module so that it stays out of errand's binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "floorserver:", err)
		os.Exit(1)
	}
}

type config struct {
	addr, mode, amqpURL, redisURL, queue string
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("floorserver", flag.ContinueOnError)
	var cfg config
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8090", "`address` to listen on (loopback only)")
	fs.StringVar(&cfg.mode, "mode", "promises", "bare or promises")
	fs.StringVar(&cfg.amqpURL, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ `URL` (promises)")
	fs.StringVar(&cfg.redisURL, "redis", "redis://127.0.0.1:6379/2", "Redis `URL` (promises)")
	fs.StringVar(&cfg.queue, "queue", "errand.floor", "durable `queue` to publish to (promises); nothing consumes it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, u := range []string{"http://" + cfg.addr, cfg.amqpURL, cfg.redisURL} {
		if err := checkLoopback(u); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	return serve(ctx, ln, cfg)
}

// serve answers on ln until ctx ends.
func serve(ctx context.Context, ln net.Listener, cfg config) error {
	var accept acceptFunc
	switch cfg.mode {
	case "bare":
	case "promises":
		p, err := openPromises(ctx, cfg.amqpURL, cfg.redisURL, cfg.queue)
		if err != nil {
			return err
		}
		defer p.close()
		accept = p.accept
	default:
		ln.Close()
		return fmt.Errorf("-mode %q: want bare or promises", cfg.mode)
	}
	srv := &http.Server{Handler: newHandler(accept), ReadHeaderTimeout: 5 * time.Second}
	stopped := make(chan error, 1)
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		stopped <- srv.Shutdown(shutdownCtx)
	}()
	fmt.Printf("floorserver: %s on http://%s\n", cfg.mode, ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return <-stopped
}

// checkLoopback refuses a URL whose host is not a loopback address: load
// tests stay on this machine.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q: %w", raw, err)
	}
	h := u.Hostname()
	if h != "localhost" && h != "::1" && !strings.HasPrefix(h, "127.") {
		return fmt.Errorf("%s is not a loopback address", u.Host)
	}
	return nil
}
