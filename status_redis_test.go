package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestRedisStatusWritesSurviveScriptFlush: a restarted Redis has forgotten
// errand's scripts; the pipelined writes load them again by themselves.
func TestRedisStatusWritesSurviveScriptFlush(t *testing.T) {
	env := realStack(t)
	rdb := testRedis(t)
	s := newRedisStatusStore(rdb, env["REDIS_KEY_PREFIX"])
	t.Cleanup(s.close)
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
