package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisKeyStore keeps each Idempotency-Key as a Redis string under the
// key prefix, with the key's expiry.
type redisKeyStore struct {
	client *redis.Client
	prefix string
}

var swapKeyScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  return redis.call('DEL', KEYS[1])
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
`)

func (s *redisKeyStore) storeKey(key string) string { return s.prefix + "idem:" + key }

func (s *redisKeyStore) reserveKey(ctx context.Context, key, value string, ttl time.Duration) (string, error) {
	// SET NX GET stores value only when the key is free and returns the
	// old value otherwise, in one atomic step, so concurrent requests on
	// different API processes agree on one task.
	old, err := s.client.SetArgs(ctx, s.storeKey(key), value, redis.SetArgs{Mode: "NX", Get: true, TTL: ttl}).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("redis: reserve idempotency key: %w", err)
	}
	return old, nil
}

func (s *redisKeyStore) swapKey(ctx context.Context, key, old, value string) (bool, error) {
	n, err := swapKeyScript.Run(ctx, s.client, []string{s.storeKey(key)}, old, value).Int()
	if err != nil {
		return false, fmt.Errorf("redis: swap idempotency key: %w", err)
	}
	return n == 1, nil
}

func (s *redisKeyStore) getKey(ctx context.Context, key string) (string, error) {
	v, err := s.client.Get(ctx, s.storeKey(key)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("redis: get idempotency key: %w", err)
	}
	return v, nil
}
