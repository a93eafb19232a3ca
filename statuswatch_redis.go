package main

import (
	"context"
	"log/slog"
	"sync"

	"github.com/redis/go-redis/v9"
)

// redisStatusWatcher follows status writes through Redis: the status
// script publishes every status it writes on the task's channel, and one
// subscription per process carries the channels of every task watched
// here, subscribed while the first watcher of a task watches and
// unsubscribed when the last one leaves.
type redisStatusWatcher struct {
	client *redis.Client
	prefix string
	log    *slog.Logger
	tasks  watchers

	// subscribing orders the changes of the subscription's channels with
	// the watchers they are for: a channel dropped for the last watcher
	// of a task cannot overtake its subscription for the next.
	subscribing sync.Mutex

	mu      sync.Mutex
	sub     *redis.PubSub // opened by the first watch
	closed  bool
	stopped chan struct{} // closed when the dispatcher has ended
}

func newRedisStatusWatcher(client *redis.Client, prefix string, log *slog.Logger) *redisStatusWatcher {
	return &redisStatusWatcher{client: client, prefix: prefix, log: log, stopped: make(chan struct{})}
}

// statusChannel is the channel a task's statuses are published on.
func statusChannel(prefix, id string) string { return prefix + "status:" + id }

// subscription is the process's subscription, opened with its dispatcher
// on first use; nil once closed.
func (w *redisStatusWatcher) subscription() *redis.PubSub {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sub != nil || w.closed {
		return w.sub
	}
	// The subscription outlives every request; go-redis redials it and
	// resubscribes its channels after a lost connection.
	w.sub = w.client.Subscribe(context.Background())
	msgs := w.sub.Channel()
	go func() {
		defer close(w.stopped)
		for m := range msgs {
			st, err := decodeStatus([]byte(m.Payload))
			if err != nil || m.Channel != statusChannel(w.prefix, st.TaskID) {
				w.log.Warn("undecodable status on a status channel", "channel", m.Channel, "error", err)
				continue
			}
			w.tasks.offer(st)
		}
	}()
	return w.sub
}

func (w *redisStatusWatcher) watch(ctx context.Context, id string) *statusUpdates {
	u := newStatusUpdates()
	sub := w.subscription()
	if sub == nil {
		return u // closed: nothing more will come
	}
	w.subscribing.Lock()
	if w.tasks.add(id, u) {
		if err := sub.Subscribe(ctx, statusChannel(w.prefix, id)); err != nil {
			w.log.WarnContext(ctx, "status channel not subscribed; the stream falls back to reading the status", "task_id", id, "error", err)
		}
	}
	w.subscribing.Unlock()
	go func() {
		<-ctx.Done()
		w.subscribing.Lock()
		defer w.subscribing.Unlock()
		if w.tasks.remove(id, u) {
			_ = sub.Unsubscribe(context.Background(), statusChannel(w.prefix, id))
		}
	}()
	return u
}

// close ends the subscription; watches after it get nothing.
func (w *redisStatusWatcher) close() {
	w.mu.Lock()
	sub := w.sub
	w.closed = true
	w.mu.Unlock()
	if sub != nil {
		_ = sub.Close()
		<-w.stopped
	}
}
