package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisRevocations keeps each cancel as a Redis string with an expiry past
// the furthest time a task may be scheduled for, and announces it on a
// channel that every worker process subscribes to.
type redisRevocations struct {
	client *redis.Client
	prefix string
	ttl    time.Duration
	reader *batcher[string, []byte]
}

func newRedisRevocations(client *redis.Client, prefix string, ttl time.Duration) *redisRevocations {
	r := &redisRevocations{client: client, prefix: prefix, ttl: ttl}
	// Every task a worker starts asks; concurrent asks share a pipeline.
	r.reader = newBatcher(statusReaders, maxStatusBatch, r.readRevocations)
	return r
}

func (r *redisRevocations) close() { r.reader.close() }

func (r *redisRevocations) key(id string) string { return r.prefix + "revoked:" + id }

func (r *redisRevocations) channel() string { return r.prefix + "revocations" }

func (r *redisRevocations) revoke(ctx context.Context, id string, rev revocation) error {
	doc, err := json.Marshal(rev)
	if err != nil {
		return fmt.Errorf("encode revocation of %s: %w", id, err)
	}
	pipe := r.client.TxPipeline()
	pipe.Set(ctx, r.key(id), doc, r.ttl)
	pipe.Publish(ctx, r.channel(), id)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("redis: revoke %s: %w", id, err)
	}
	return nil
}

func (r *redisRevocations) revoked(ctx context.Context, id string) (*revocation, error) {
	doc, err := r.reader.do(ctx, r.key(id))
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("redis: read revocation of %s: %w", id, err)
	}
	var rev revocation
	if err := json.Unmarshal(doc, &rev); err != nil {
		return nil, fmt.Errorf("decode revocation of %s: %w", id, err)
	}
	return &rev, nil
}

// readRevocations reads a batch of revocations in one pipeline.
func (r *redisRevocations) readRevocations(ctx context.Context, keys []string) []batchOutcome[[]byte] {
	ctx, cancel := context.WithTimeout(ctx, statusOpTimeout)
	defer cancel()
	pipe := r.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(keys))
	for i, key := range keys {
		cmds[i] = pipe.Get(ctx, key)
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	out := make([]batchOutcome[[]byte], len(keys))
	for i, cmd := range cmds {
		out[i].resp, out[i].err = cmd.Bytes()
	}
	return out
}

// watch subscribes to the revocations channel. go-redis resubscribes
// after a lost connection by itself; what was published meanwhile is
// missed, and the worker then finds it only when it next asks revoked.
func (r *redisRevocations) watch(ctx context.Context) <-chan string {
	sub := r.client.Subscribe(ctx, r.channel())
	out := make(chan string, 64)
	go func() {
		defer close(out)
		defer sub.Close()
		msgs := sub.Channel()
		for {
			select {
			case <-ctx.Done():
				return
			case m, ok := <-msgs:
				if !ok {
					return
				}
				select {
				case out <- m.Payload:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}
