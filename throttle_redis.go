package main

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisThrottle keeps each type's next free start in Redis, in
// microseconds of Redis's own clock, so the workers' clocks need not
// agree. One script reads and moves it, so two processes never reserve
// the same slot.
type redisThrottle struct {
	client *redis.Client
	prefix string
}

// reserveSlot: KEYS[1] holds the next free start (µs); ARGV[1] is the
// interval (µs). It returns the wait (µs) for the slot it reserved. The
// key expires a second after the last slot it handed out.
var reserveSlot = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < now then slot = now end
local nextFree = slot + interval
redis.call('SET', KEYS[1], string.format('%.0f', nextFree), 'PX', string.format('%.0f', math.ceil((nextFree - now) / 1000) + 1000))
return slot - now
`)

func (r redisThrottle) reserve(ctx context.Context, taskType string, interval time.Duration) (time.Duration, error) {
	wait, err := reserveSlot.Run(ctx, r.client, []string{r.prefix + "rate:" + taskType}, interval.Microseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("redis: reserve a start of %s: %w", taskType, err)
	}
	return time.Duration(wait) * time.Microsecond, nil
}
