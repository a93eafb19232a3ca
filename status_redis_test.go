package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// testRedisStatusStore is a status store on the real Redis, and its client.
func testRedisStatusStore(t *testing.T) (*redisStatusStore, *redis.Client) {
	t.Helper()
	env := realStack(t)
	rdb := testRedis(t)
	s := newRedisStatusStore(rdb, env["REDIS_KEY_PREFIX"])
	t.Cleanup(s.close)
	return s, rdb
}

// TestRedisStatusWritesSurviveScriptFlush: a restarted Redis has forgotten
// errand's scripts; the pipelined writes load them again by themselves.
func TestRedisStatusWritesSurviveScriptFlush(t *testing.T) {
	s, rdb := testRedisStatusStore(t)
	ctx := context.Background()
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- s.put(ctx, taskStatus{TaskID: fmt.Sprint("flushed-", i), Status: stateProgress}, 0)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("put after SCRIPT FLUSH: %v", err)
		}
	}
	for i := range 50 {
		if st, err := s.get(ctx, fmt.Sprint("flushed-", i)); err != nil || st.Status != stateProgress {
			t.Fatalf("status %d after SCRIPT FLUSH: %+v, %v", i, st, err)
		}
	}
}

// TestRedisListingForgetsVanishedStatuses: an index entry whose status is
// gone (expired, or deleted by hand) is dropped from the index by the
// listing that finds it, so the index does not grow with dead entries.
func TestRedisListingForgetsVanishedStatuses(t *testing.T) {
	s, rdb := testRedisStatusStore(t)
	ctx := context.Background()
	owner := fmt.Sprint("vanish-", time.Now().UnixNano())
	now := time.Now().UTC()
	for _, id := range []string{"vanish-kept", "vanish-gone"} {
		if err := s.put(ctx, taskStatus{TaskID: owner + id, Owner: owner, Status: statePending, CreatedAt: &now, UpdatedAt: now}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { rdb.Del(context.Background(), s.indexKey(owner), s.key(owner+"vanish-kept")) })
	if err := rdb.Del(ctx, s.key(owner+"vanish-gone")).Err(); err != nil {
		t.Fatal(err)
	}
	page, err := s.listLive(ctx, taskQuery{owner: owner, limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.tasks) != 1 || page.tasks[0].TaskID != owner+"vanish-kept" {
		t.Errorf("listed %+v, want only the task whose status is there", page.tasks)
	}
	left, err := rdb.ZRange(ctx, s.indexKey(owner), 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0] != owner+"vanish-kept" {
		t.Errorf("index after the listing: %v, want only %s", left, owner+"vanish-kept")
	}
}
