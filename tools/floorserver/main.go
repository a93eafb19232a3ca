// Command floorserver answers the guide's POST /api/async/process as
// cheaply as errand's stack can, to measure the floor under errand's API
// cost per submit on a given machine:
//
//	-mode bare      decode the body and answer 202 with a new id, nothing else
//	-mode promises  also keep errand's two promises before the 202: the
//	                task's PENDING status written to Redis, and the task
//	                published to RabbitMQ as a persistent message and
//	                confirmed, both batched across concurrent requests as
//	                errand batches them (two loops each; a batch of
//	                publishes is one message)
//	-mode worker    serve nothing: consume the queue -mode promises fills
//	                and keep a worker's promises for each task, its result
//	                stored in MongoDB and its final status written to
//	                Redis before its message is acked, batched as errand
//	                batches them
//
// It has none of errand's other work: no argument check, no access log,
// no metrics, no tracing, no idempotency keys, no index of a user's
// tasks, no check for a cancel. scripts/floor drives it with the bench
// harness's k6 submit script and reads its CPU from /proc. Only loopback
// addresses are accepted.
//
// It lives in its own Go module so that it stays out of errand's binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "floorserver:", err)
		os.Exit(1)
	}
}

type config struct {
	addr, mode, amqpURL, redisURL, queue string
	mongoURI, mongoDatabase              string
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("floorserver", flag.ContinueOnError)
	var cfg config
	fs.StringVar(&cfg.addr, "addr", "127.0.0.1:8090", "`address` to listen on (loopback only)")
	fs.StringVar(&cfg.mode, "mode", "promises", "bare, promises or worker")
	fs.StringVar(&cfg.amqpURL, "amqp", "amqp://guest:guest@127.0.0.1:5672/", "RabbitMQ `URL` (promises, worker)")
	fs.StringVar(&cfg.redisURL, "redis", "redis://127.0.0.1:6379/2", "Redis `URL` (promises, worker)")
	fs.StringVar(&cfg.queue, "queue", "errand.floor", "durable priority `queue` to publish to (promises) or consume (worker)")
	fs.StringVar(&cfg.mongoURI, "mongo", "mongodb://127.0.0.1:27017", "MongoDB `URI` (worker)")
	fs.StringVar(&cfg.mongoDatabase, "mongo-db", "floor_bench", "MongoDB `database` for the results (worker)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for _, u := range []string{"http://" + cfg.addr, cfg.amqpURL, cfg.redisURL, cfg.mongoURI} {
		if err := checkLoopback(u); err != nil {
			return err
		}
	}
	if cfg.mode == "worker" {
		return work(ctx, cfg)
	}
	if cfg.mode != "bare" && cfg.mode != "promises" {
		return fmt.Errorf("-mode %q: want bare, promises or worker", cfg.mode)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	return serve(ctx, ln, cfg, stdout)
}

// shutdownTimeout outlasts a batch's own timeout, so the handlers waiting
// on one are done before the connections close under them.
const shutdownTimeout = opTimeout + 5*time.Second

// serve answers on ln until ctx ends. It closes ln.
func serve(ctx context.Context, ln net.Listener, cfg config, stdout io.Writer) error {
	var accept acceptFunc
	if cfg.mode == "promises" {
		p, err := openPromises(ctx, cfg.amqpURL, cfg.redisURL, cfg.queue)
		if err != nil {
			ln.Close()
			return err
		}
		defer p.close()
		accept = p.accept
	}
	srv := &http.Server{Handler: newHandler(accept), ReadHeaderTimeout: 5 * time.Second}
	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	stopped := make(chan error, 1)
	go func() {
		<-serveCtx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		stopped <- srv.Shutdown(shutdownCtx)
	}()
	fmt.Fprintf(stdout, "floorserver: %s on http://%s\n", cfg.mode, ln.Addr())
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	if err := <-stopped; err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}

// checkLoopback refuses a URL whose host is not a loopback address: load
// tests stay on this machine. The error names the host only, never the
// URL's credentials.
func checkLoopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("parse a URL given: not a valid URL")
	}
	h := u.Hostname()
	if ip := net.ParseIP(h); h != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("%s is not a loopback address", u.Host)
	}
	return nil
}
