package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestQueueTypeMismatchIsExplained(t *testing.T) {
	env := realStack(t)
	classic := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(classic.close)
	if err := classic.publish(context.Background(), taskMessage{ID: "first", Type: "t", Args: []byte(`{}`), EnqueuedAt: time.Now()}); err != nil {
		t.Fatalf("publish on a classic queue: %v", err)
	}
	quorum := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueQuorum, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(quorum.close)
	err := quorum.publish(context.Background(), taskMessage{ID: "second", Type: "t", Args: []byte(`{}`), EnqueuedAt: time.Now()})
	if err == nil || !strings.Contains(err.Error(), "set QUEUE_TYPE to match") {
		t.Fatalf("publishing as quorum onto a classic queue: got %v, want an error naming QUEUE_TYPE", err)
	}
}
