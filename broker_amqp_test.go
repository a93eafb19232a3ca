package main

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestBrokerFailsOverToAnotherNode: with several nodes in AMQP_URL, a
// node that does not answer is skipped, and errand stays on the one that
// did.
func TestBrokerFailsOverToAnotherNode(t *testing.T) {
	env := realStack(t)
	dead := "amqp://guest:guest@" + freeAddr(t) + "/"
	b := newAMQPBroker(dead+", "+services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	if err := b.publish(context.Background(), taskMessage{ID: "via-second-node", Type: "t", Args: []byte(`{}`), EnqueuedAt: time.Now()}); err != nil {
		t.Fatalf("publish with the first node down: %v", err)
	}
	if got := b.preferred.Load(); got != 1 {
		t.Errorf("preferred node = %d, want 1 (the one that answered)", got)
	}
	if n := queueDepth(t, env["QUEUE_NAME"]); n != 1 {
		t.Errorf("work queue holds %d messages, want 1", n)
	}
	// All nodes down: the error names each.
	none := newAMQPBroker(dead+","+"amqp://guest:guest@"+freeAddr(t)+"/", env["QUEUE_NAME"], queueClassic, time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(none.close)
	err := none.publish(context.Background(), taskMessage{ID: "nowhere", Type: "t", Args: []byte(`{}`), EnqueuedAt: time.Now()})
	if err == nil || strings.Count(err.Error(), "amqp://guest:xxxxx@127.0.0.1:") != 2 {
		t.Errorf("publish with every node down: %v, want an error naming both nodes", err)
	}
}
