// Command errand is a task-queue service: an HTTP API that accepts work and
// answers at once with a task id, RabbitMQ to carry it, a worker pool to run
// it, Redis for live status and MongoDB for results and items.
//
// errand rebuilds in Go the system of "Complete Beginner's Guide to
// Queue-Based Microservices", a FastAPI + Celery + RabbitMQ + Redis +
// MongoDB + nginx tutorial. The comments call that tutorial "the guide";
// errand keeps its API contract (paths, JSON shapes, status names), so a
// client written for the guide's system works against errand unchanged.
// docs/architecture.md maps the files.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "errand:", err)
		os.Exit(1)
	}
}
