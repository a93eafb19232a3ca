package main

import (
	"context"
	"errors"
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
	b.preferred.Store(0) // the dead node first, whatever newAMQPBroker picked
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

// TestBrokerLeavesANodeThatDoesNotConfirm: a publish to a node that does
// not confirm it within PUBLISH_TIMEOUT (here a Toxiproxy holds the
// connection's traffic both ways; a node cut off from its cluster takes
// the publish and does not confirm it until it notices) answers
// unconfirmed, and the next publish goes to the next node in AMQP_URL.
func TestBrokerLeavesANodeThatDoesNotConfirm(t *testing.T) {
	env := realStack(t)
	network := newToxicNetwork(t)
	silent := network.via(t, env)["AMQP_URL"]
	b := newAMQPBroker(silent+","+services.amqpURL, env["QUEUE_NAME"], queueQuorum, 3*time.Second, slog.New(slog.DiscardHandler))
	t.Cleanup(b.close)
	b.preferred.Store(0) // the node behind the proxy first, whatever newAMQPBroker picked
	ctx := context.Background()
	if err := b.publish(ctx, taskMessage{ID: "first", Type: "t", Args: []byte(`{}`), EnqueuedAt: time.Now()}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	restore := network.add(t, "rabbitmq", "timeout", `{"timeout": 0}`)
	defer restore()
	err := b.publish(ctx, taskMessage{ID: "held", Type: "t", Args: []byte(`{}`), EnqueuedAt: time.Now()})
	if !errors.Is(err, errPublishUnconfirmed) {
		t.Fatalf("publish through a node that never confirms: %v, want unconfirmed", err)
	}
	if err := b.publish(ctx, taskMessage{ID: "after", Type: "t", Args: []byte(`{}`), EnqueuedAt: time.Now()}); err != nil {
		t.Fatalf("the publish after an unconfirmed one: %v, want it confirmed by the other node", err)
	}
	if got := b.preferred.Load(); got != 1 {
		t.Errorf("preferred node = %d, want 1", got)
	}
}

// TestBrokerWithOneNodeKeepsItsPublisher: with one node in AMQP_URL, or
// while the broker blocks publishers (an alarm holds every node's), a
// missing confirm leaves the publisher where it is: there is nowhere
// better to go.
func TestBrokerWithOneNodeKeepsItsPublisher(t *testing.T) {
	for name, tc := range map[string]struct {
		urls    string
		blocked bool
	}{
		"one node":         {urls: "amqp://a/"},
		"blocked, 2 nodes": {urls: "amqp://a/,amqp://b/", blocked: true},
	} {
		b := newAMQPBroker(tc.urls, "q", queueQuorum, time.Second, slog.New(slog.DiscardHandler))
		b.preferred.Store(0)
		p := &amqpPublisher{opened: time.Now().Add(-time.Minute)}
		p.blocked.Store(tc.blocked)
		b.pub = p
		b.leaveSilentNode(p)
		if b.pub != p || b.preferred.Load() != 0 {
			t.Errorf("%s: publisher kept %v, preferred node %d; want it kept, node 0", name, b.pub == p, b.preferred.Load())
		}
	}
}
