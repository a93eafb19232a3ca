package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisKeySlots keeps each scope's slots as a sorted set of holders
// scored by the end of their lease, in milliseconds of Redis's clock.
// Scripts read and change a set in one step, so two processes never take
// the last slot both; the set expires when no one has touched it for two
// leases.
type redisKeySlots struct {
	client *redis.Client
	prefix string
}

// Every script first drops the holders whose lease has ended.
const slotsNow = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
`

// acquireSlot: ARGV holder, limit, lease (ms). A holder that has a slot
// keeps it. The set lives as long as its longest lease, and more.
var acquireSlot = redis.NewScript(slotsNow + `
local lease = tonumber(ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + lease), ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease * 2 then redis.call('PEXPIRE', KEYS[1], lease * 2) end
return 1
`)

// renewSlot: ARGV holder, lease (ms). A lease that ended is not renewed:
// its slot may be someone else's by now.
var renewSlot = redis.NewScript(slotsNow + `
local lease = tonumber(ARGV[2])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + lease), ARGV[1])
if redis.call('PTTL', KEYS[1]) < lease * 2 then redis.call('PEXPIRE', KEYS[1], lease * 2) end
return 1
`)

var heldSlots = redis.NewScript(slotsNow + `
return redis.call('ZCARD', KEYS[1])
`)

func (s redisKeySlots) key(scope string) string { return s.prefix + "slots:" + scope }

func (s redisKeySlots) acquire(ctx context.Context, scope, holder string, limit int, lease time.Duration) (bool, error) {
	got, err := acquireSlot.Run(ctx, s.client, []string{s.key(scope)}, holder, limit, lease.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("redis: take a slot of %q: %w", scope, err)
	}
	return got == 1, nil
}

func (s redisKeySlots) renew(ctx context.Context, scope, holder string, lease time.Duration) (bool, error) {
	renewed, err := renewSlot.Run(ctx, s.client, []string{s.key(scope)}, holder, lease.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("redis: renew a slot of %q: %w", scope, err)
	}
	return renewed == 1, nil
}

func (s redisKeySlots) release(ctx context.Context, scope, holder string) error {
	if err := s.client.ZRem(ctx, s.key(scope), holder).Err(); err != nil {
		return fmt.Errorf("redis: release a slot of %q: %w", scope, err)
	}
	return nil
}

func (s redisKeySlots) held(ctx context.Context, scope string) (int, error) {
	n, err := heldSlots.Run(ctx, s.client, []string{s.key(scope)}).Int()
	if err != nil {
		return 0, fmt.Errorf("redis: count the slots of %q: %w", scope, err)
	}
	return n, nil
}
