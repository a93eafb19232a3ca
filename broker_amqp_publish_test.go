package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"errand/tasks"
)

// TestUnroutablePublishIsRefused: a message the broker cannot route (its
// queue was deleted under the publisher) is an error, not a silent loss.
func TestUnroutablePublishIsRefused(t *testing.T) {
	env := realStack(t)
	b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	msg := taskMessage{ID: "first", Type: tasks.HeavyTaskName, Args: []byte(`{}`), Priority: "normal"}
	if err := b.publish(context.Background(), msg); err != nil {
		t.Fatalf("publish to the declared queue: %v", err)
	}
	ch, closeChannel := testAMQPChannel(t)
	defer closeChannel()
	if _, err := ch.QueueDelete(env["QUEUE_NAME"], false, false, false); err != nil {
		t.Fatal(err)
	}
	msg.ID = "second"
	if err := b.publish(context.Background(), msg); err == nil {
		t.Fatal("publish to a deleted queue succeeded, want an unroutable error")
	}
}
