package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	amqp "github.com/rabbitmq/amqp091-go"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// The contract tests run one behavioural suite against each backend pair:
// the embedded in-process implementation and the real server's.

func TestStatusStoreContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) { statusStoreContract(t, newMemoryStatusStore()) })
	t.Run("redis", func(t *testing.T) {
		env := realStack(t)
		s := newRedisStatusStore(testRedis(t), env["REDIS_KEY_PREFIX"])
		t.Cleanup(s.close)
		statusStoreContract(t, s)
	})
}

func statusStoreContract(t *testing.T, s statusStore) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	put := func(id, state string, ttl time.Duration) {
		t.Helper()
		if err := s.put(ctx, taskStatus{TaskID: id, Status: state, UpdatedAt: now}, ttl); err != nil {
			t.Fatalf("put %s %s: %v", id, state, err)
		}
	}
	stateOf := func(id string) string {
		t.Helper()
		st, err := s.get(ctx, id)
		if errors.Is(err, errStatusNotFound) {
			return "absent"
		}
		if err != nil {
			t.Fatalf("get %s: %v", id, err)
		}
		return st.Status
	}

	if got := stateOf("unknown"); got != "absent" {
		t.Errorf("unknown task: got %s, want absent", got)
	}

	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{"pending", []string{statePending}, statePending},
		{"progress after pending", []string{statePending, stateProgress}, stateProgress},
		{"late pending never hides progress", []string{stateProgress, statePending}, stateProgress},
		{"late progress never hides success", []string{statePending, stateSuccess, stateProgress}, stateSuccess},
		{"late pending never hides failure", []string{stateFailure, statePending}, stateFailure},
		{"progress updates progress", []string{stateProgress, stateProgress}, stateProgress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := "contract-" + newRandomID(4)
			for _, w := range tt.writes {
				put(id, w, 0)
			}
			if got := stateOf(id); got != tt.want {
				t.Errorf("after %v: got %s, want %s", tt.writes, got, tt.want)
			}
		})
	}

	t.Run("status round trip", func(t *testing.T) {
		id := "contract-" + newRandomID(4)
		want := taskStatus{TaskID: id, Status: stateSuccess, TaskType: "process_heavy_task",
			Result: map[string]any{"total_processed": float64(3), "items": []any{"A"}}, UpdatedAt: now}
		if err := s.put(ctx, want, time.Minute); err != nil {
			t.Fatal(err)
		}
		got, err := s.get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("get (-want +got):\n%s", diff)
		}
	})

	t.Run("final status expires", func(t *testing.T) {
		id := "contract-" + newRandomID(4)
		put(id, stateSuccess, 50*time.Millisecond)
		deadline := time.Now().Add(5 * time.Second)
		for stateOf(id) != "absent" {
			if time.Now().After(deadline) {
				t.Fatalf("status with a 50ms ttl still there after 5s")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	t.Run("deletePending removes only pending", func(t *testing.T) {
		pending, running := "contract-"+newRandomID(4), "contract-"+newRandomID(4)
		put(pending, statePending, 0)
		put(running, stateProgress, 0)
		for _, id := range []string{pending, running} {
			if err := s.deletePending(ctx, id, ""); err != nil {
				t.Fatalf("deletePending %s: %v", id, err)
			}
		}
		if got := stateOf(pending); got != "absent" {
			t.Errorf("pending after deletePending: got %s, want absent", got)
		}
		if got := stateOf(running); got != stateProgress {
			t.Errorf("progress after deletePending: got %s, want %s", got, stateProgress)
		}
	})

	t.Run("concurrent reads each get their own", func(t *testing.T) {
		// Reads that overlap may share a round trip (the Redis store
		// pipelines them); each must still get its own task's status, and
		// a missing task among found ones must be not found.
		inParallel(t, 24, func(i int, fail func(error)) {
			id := fmt.Sprintf("contract-read-%d-%s", i, newRandomID(4))
			taskType := fmt.Sprintf("type-%d", i)
			if err := s.put(ctx, taskStatus{TaskID: id, Status: stateProgress, TaskType: taskType, UpdatedAt: now}, time.Minute); err != nil {
				fail(fmt.Errorf("put %s: %w", id, err))
				return
			}
			if got, err := s.get(ctx, id); err != nil || got.TaskID != id || got.TaskType != taskType {
				fail(fmt.Errorf("get %s: got %s/%s, %v", id, got.TaskID, got.TaskType, err))
			}
			if _, err := s.get(ctx, id+"-missing"); !errors.Is(err, errStatusNotFound) {
				fail(fmt.Errorf("get %s-missing: got %v, want not found", id, err))
			}
		})
	})

	t.Run("concurrent writers never move backwards", func(t *testing.T) {
		id := "contract-" + newRandomID(4)
		put(id, stateSuccess, 0)
		var wg sync.WaitGroup
		for i := range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				state := []string{statePending, stateProgress}[i%2]
				_ = s.put(ctx, taskStatus{TaskID: id, Status: state}, 0)
			}()
		}
		wg.Wait()
		if got := stateOf(id); got != stateSuccess {
			t.Errorf("after racing PENDING/PROGRESS writes: got %s, want SUCCESS", got)
		}
	})

	t.Run("unfinished tasks are listed newest first, page by page", func(t *testing.T) {
		owner := "lister-" + newRandomID(4)
		base := now.Add(-time.Hour)
		states := []string{statePending, stateProgress, stateScheduled, stateRetry, stateProgress, statePending, stateProgress, statePending}
		var want []string // newest first
		for i, state := range states {
			created := base.Add(time.Duration(i) * time.Second)
			if i >= 5 {
				created = base.Add(5 * time.Second) // three tasks of one millisecond
			}
			id := fmt.Sprintf("list-%d-%s", i, newRandomID(3))
			if err := s.put(ctx, taskStatus{TaskID: id, Status: state, TaskType: []string{"a", "b"}[i%2], Owner: owner, CreatedAt: &created, UpdatedAt: now}, 0); err != nil {
				t.Fatal(err)
			}
			want = append(want, id)
		}
		slices.SortFunc(want, func(a, b string) int { return -compareListed(states, a, b) })
		// Not listed: another owner's task, and a finished one.
		other := base.Add(time.Minute)
		if err := s.put(ctx, taskStatus{TaskID: "list-other-" + newRandomID(3), Status: statePending, Owner: owner + "-x", CreatedAt: &other, UpdatedAt: now}, 0); err != nil {
			t.Fatal(err)
		}
		done := "list-done-" + newRandomID(3)
		if err := s.put(ctx, taskStatus{TaskID: done, Status: statePending, Owner: owner, CreatedAt: &other, UpdatedAt: now}, 0); err != nil {
			t.Fatal(err)
		}
		if err := s.put(ctx, taskStatus{TaskID: done, Status: stateSuccess, Owner: owner, CreatedAt: &other, UpdatedAt: now}, time.Minute); err != nil {
			t.Fatal(err)
		}

		var got []string
		q := taskQuery{owner: owner, limit: 3}
		for pages := 0; ; pages++ {
			if pages > len(states) {
				t.Fatalf("listing did not end after %d pages: %v", pages, got)
			}
			page, err := s.listLive(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range page.tasks {
				got = append(got, st.TaskID)
			}
			if page.reached == nil {
				break
			}
			q.after = page.reached
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("listed ids (-want +got):\n%s", diff)
		}

		page, err := s.listLive(ctx, taskQuery{owner: owner, status: stateProgress, taskType: "a", limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(page.tasks); n != 2 {
			t.Errorf("PROGRESS tasks of type a: got %d, want 2 (%+v)", n, page.tasks)
		}
		page, err = s.listLive(ctx, taskQuery{owner: owner, since: base.Add(4 * time.Second), limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(page.tasks); n != 4 {
			t.Errorf("tasks since the fifth: got %d, want 4", n)
		}
		// A task that finishes, or whose submit is undone, leaves the list.
		if err := s.put(ctx, taskStatus{TaskID: want[0], Status: stateFailure, Owner: owner, UpdatedAt: now}, time.Minute); err != nil {
			t.Fatal(err)
		}
		pendingID := want[len(want)-1] // created first: PENDING
		if err := s.deletePending(ctx, pendingID, owner); err != nil {
			t.Fatal(err)
		}
		page, err = s.listLive(ctx, taskQuery{owner: owner, limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		for _, st := range page.tasks {
			if st.TaskID == want[0] || st.TaskID == pendingID {
				t.Errorf("%s (%s) still listed after it finished or was undone", st.TaskID, st.Status)
			}
		}
		if n := len(page.tasks); n != len(want)-2 {
			t.Errorf("listed after the changes: got %d, want %d", n, len(want)-2)
		}
	})
}

// compareListed orders the contract's listed ids as a listing must: by
// creation time (the test's ids embed their index; indexes 5 to 7 share
// one millisecond), then by id.
func compareListed(_ []string, a, b string) int {
	index := func(id string) int {
		var i int
		fmt.Sscanf(id, "list-%d-", &i)
		return min(i, 5)
	}
	if ia, ib := index(a), index(b); ia != ib {
		return ia - ib
	}
	return strings.Compare(a, b)
}

// finIndex is the creation order of a listed finished task of the
// contract (ids embed their index; indexes 3 to 5 share a millisecond).
func finIndex(id string) int {
	var i int
	fmt.Sscanf(id, "fin-%d-", &i)
	return min(i, 3)
}

func TestKeyStoreContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) { keyStoreContract(t, newMemoryKeyStore()) })
	t.Run("redis", func(t *testing.T) {
		env := realStack(t)
		keyStoreContract(t, &redisKeyStore{client: testRedis(t), prefix: env["REDIS_KEY_PREFIX"]})
	})
}

func keyStoreContract(t *testing.T, s keyStore) {
	ctx := context.Background()
	newKey := func() string { return "contract-" + newRandomID(4) }
	valueOf := func(t *testing.T, key string) string {
		t.Helper()
		v, err := s.getKey(ctx, key)
		if err != nil {
			t.Fatalf("getKey %s: %v", key, err)
		}
		return v
	}
	reserve := func(t *testing.T, key, value string, ttl time.Duration) string {
		t.Helper()
		existing, err := s.reserveKey(ctx, key, value, ttl)
		if err != nil {
			t.Fatalf("reserveKey %s %s: %v", key, value, err)
		}
		return existing
	}
	swap := func(t *testing.T, key, old, value string) bool {
		t.Helper()
		swapped, err := s.swapKey(ctx, key, old, value)
		if err != nil {
			t.Fatalf("swapKey %s %q to %q: %v", key, old, value, err)
		}
		return swapped
	}
	waitUntilGone := func(t *testing.T, key, what string) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() bool { return valueOf(t, key) == "" })
	}

	t.Run("an unknown key has no value", func(t *testing.T) {
		if got := valueOf(t, newKey()); got != "" {
			t.Errorf("getKey of an unknown key: got %q, want none", got)
		}
	})

	t.Run("reserve stores on a free key and returns the value of a taken one", func(t *testing.T) {
		key := newKey()
		if got := reserve(t, key, "first", time.Minute); got != "" {
			t.Errorf("reserve of a free key: got %q, want \"\" (stored)", got)
		}
		if got := valueOf(t, key); got != "first" {
			t.Errorf("value after the reserve: got %q, want first", got)
		}
		if got := reserve(t, key, "second", time.Minute); got != "first" {
			t.Errorf("reserve of a taken key: got %q, want its value first", got)
		}
		if got := valueOf(t, key); got != "first" {
			t.Errorf("value after a reserve of the taken key: got %q, want first kept", got)
		}
	})

	t.Run("swap only when the old value matches", func(t *testing.T) {
		key := newKey()
		reserve(t, key, "first", time.Minute)
		if swap(t, key, "other", "second") {
			t.Errorf("swap with an old value the key does not hold: got true, want false")
		}
		if got := valueOf(t, key); got != "first" {
			t.Errorf("value after a refused swap: got %q, want first", got)
		}
		if !swap(t, key, "first", "second") {
			t.Errorf("swap with the value the key holds: got false, want true")
		}
		if got := valueOf(t, key); got != "second" {
			t.Errorf("value after the swap: got %q, want second", got)
		}
	})

	t.Run("swap to an empty value deletes, and nothing brings the key back", func(t *testing.T) {
		key := newKey()
		reserve(t, key, "first", time.Minute)
		if !swap(t, key, "first", "") {
			t.Errorf("swap to an empty value: got false, want true")
		}
		if got := valueOf(t, key); got != "" {
			t.Errorf("value after the swap to empty: got %q, want none", got)
		}
		if swap(t, key, "first", "again") {
			t.Errorf("swap of a deleted key: got true, want false")
		}
		if got := valueOf(t, key); got != "" {
			t.Errorf("value after a swap of the deleted key: got %q, want none", got)
		}
		if got := reserve(t, key, "next", time.Minute); got != "" {
			t.Errorf("reserve of the deleted key: got %q, want \"\" (free again)", got)
		}
		if got := valueOf(t, key); got != "next" {
			t.Errorf("value after the reserve of the deleted key: got %q, want next", got)
		}
	})

	t.Run("swap keeps the expiry", func(t *testing.T) {
		key := newKey()
		reserve(t, key, "first", 2*time.Second)
		if !swap(t, key, "first", "second") {
			t.Fatalf("swap with the value the key holds: got false, want true")
		}
		if got := valueOf(t, key); got != "second" {
			t.Errorf("value after the swap: got %q, want second", got)
		}
		waitUntilGone(t, key, "the swapped key to expire at the reservation's expiry")
	})

	t.Run("a reservation expires after its ttl", func(t *testing.T) {
		key := newKey()
		const ttl = 300 * time.Millisecond
		start := time.Now()
		reserve(t, key, "first", ttl)
		waitUntilGone(t, key, "the reservation to expire")
		if took := time.Since(start); took < ttl {
			t.Errorf("reservation gone after %v, want it kept for its ttl of %v", took, ttl)
		}
		if got := reserve(t, key, "second", time.Minute); got != "" {
			t.Errorf("reserve of the expired key: got %q, want \"\" (free again)", got)
		}
	})

	t.Run("concurrent reserves of one key: exactly one stores", func(t *testing.T) {
		// API processes race to reserve a client's Idempotency-Key: all
		// must agree on the one value stored.
		key := newKey()
		const racers = 16
		existing := make([]string, racers)
		inParallel(t, racers, func(i int, fail func(error)) {
			var err error
			if existing[i], err = s.reserveKey(ctx, key, fmt.Sprint("racer-", i), time.Minute); err != nil {
				fail(fmt.Errorf("reserveKey by racer %d: %w", i, err))
			}
		})
		winner := valueOf(t, key)
		var stored []int
		for i, got := range existing {
			switch {
			case got == "":
				stored = append(stored, i)
			case got != winner:
				t.Errorf("racer %d: reserve returned %q, want the stored value %q", i, got, winner)
			}
		}
		if len(stored) != 1 {
			t.Fatalf("racers %v of %d stored their value, want exactly 1", stored, racers)
		}
		if want := fmt.Sprint("racer-", stored[0]); winner != want {
			t.Errorf("racer %d stored its value, but the key holds %q", stored[0], winner)
		}
	})
}

// inParallel runs f for i in [0, n) on n goroutines at once and, once all
// are done, fails the test with every error they passed to fail.
func inParallel(t *testing.T, n int, f func(i int, fail func(error))) {
	t.Helper()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(i, fail)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		t.Error(err)
	}
}

func TestDocumentStoreContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) { documentStoreContract(t, newMemoryStore()) })
	t.Run("mongodb", func(t *testing.T) {
		store := connectTestMongo(t)
		// The first ping that reaches the server inspects it: errand's
		// first look at its dependencies at start, or a later health
		// check if the server came up after errand.
		if err := store.ping(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !store.inspected.Load() {
			t.Error("a ping that reached the server did not inspect it")
		}
		if services.embeddedFerretDB && !store.oneByOne.Load() {
			t.Error("FerretDB not recognised: item creates, reads and deletes would be batched, which costs it more than it saves")
		}
		documentStoreContract(t, store)
	})
	t.Run("mongodb, batched", func(t *testing.T) {
		// MongoDB's path, item creates batched by InsertMany and reads
		// and deletes by _id $in, on whatever server the tests have:
		// FerretDB answers them rightly, only at a higher cost.
		store := connectTestMongo(t)
		store.inspected.Store(true) // so no ping changes the mode
		store.oneByOne.Store(false)
		documentStoreContract(t, store)
	})
}

func connectTestMongo(t *testing.T) *mongoStore {
	t.Helper()
	return connectTestMongoWith(t, mongoClientOptions(services.mongoURI))
}

// connectTestMongoWith is connectTestMongo with client options of the
// test's own (mongoClientOptions and a monitor, say).
func connectTestMongoWith(t *testing.T, opts *options.ClientOptions) *mongoStore {
	t.Helper()
	env := realStack(t)
	store, err := connectMongo(opts, env["MONGODB_DATABASE"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.close(context.Background()) })
	return store
}

func documentStoreContract(t *testing.T, s documentStore) {
	ctx := context.Background()
	base := time.Date(2026, 1, 2, 3, 4, 5, 678_901_234, time.UTC)
	desc := "first"

	var created []item
	for i := range 5 {
		it, err := s.createItem(ctx, item{Name: "item", Description: &desc,
			Metadata:  map[string]any{"i": int64(i), "nested": map[string]any{"tags": []any{"a", "b"}}},
			CreatedAt: base, UpdatedAt: base})
		if err != nil {
			t.Fatalf("create item %d: %v", i, err)
		}
		if len(it.ID) != 24 || !it.CreatedAt.Equal(base.Truncate(time.Millisecond)) {
			t.Errorf("created item %+v: want a 24-hex id and created_at truncated to ms", it)
		}
		created = append(created, it)
	}

	t.Run("get returns what create returned", func(t *testing.T) {
		got, err := s.getItem(ctx, "", created[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		want := created[0]
		want.Metadata = normalizeNumbers(want.Metadata).(map[string]any)
		got.Metadata = normalizeNumbers(got.Metadata).(map[string]any)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("get (-want +got):\n%s", diff)
		}
	})

	t.Run("list is newest first and pages", func(t *testing.T) {
		page, err := s.listItems(ctx, "", 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, it := range page {
			got = append(got, it.ID)
		}
		want := []string{created[3].ID, created[2].ID}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("list skip 1 limit 2 (-want +got):\n%s", diff)
		}
		past, err := s.listItems(ctx, "", 10, 5)
		if err != nil || len(past) != 0 {
			t.Errorf("list past the end: %d items, err %v; want none", len(past), err)
		}
	})

	t.Run("update sets only the given fields", func(t *testing.T) {
		name := "renamed"
		later := base.Add(time.Hour)
		got, err := s.updateItem(ctx, "", created[1].ID, itemUpdate{Name: &name}, later)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "renamed" || got.Description == nil || *got.Description != "first" || !got.CreatedAt.Equal(created[1].CreatedAt) ||
			!got.UpdatedAt.Equal(later.Truncate(time.Millisecond)) || got.Metadata["i"] == nil {
			t.Errorf("updated item = %+v", got)
		}
	})

	t.Run("missing and malformed ids", func(t *testing.T) {
		missing := bson.NewObjectID().Hex()
		if _, err := s.getItem(ctx, "", missing); !errors.Is(err, errNotFound) {
			t.Errorf("get missing: %v, want errNotFound", err)
		}
		if _, err := s.updateItem(ctx, "", missing, itemUpdate{}, base); !errors.Is(err, errNotFound) {
			t.Errorf("update missing: %v, want errNotFound", err)
		}
		if err := s.deleteItem(ctx, "", missing); !errors.Is(err, errNotFound) {
			t.Errorf("delete missing: %v, want errNotFound", err)
		}
		if _, err := s.getItem(ctx, "", "not-an-id"); !errors.Is(err, errInvalidID) {
			t.Errorf("get malformed: %v, want errInvalidID", err)
		}
	})

	t.Run("delete", func(t *testing.T) {
		if err := s.deleteItem(ctx, "", created[4].ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.getItem(ctx, "", created[4].ID); !errors.Is(err, errNotFound) {
			t.Errorf("get deleted: %v, want errNotFound", err)
		}
	})

	t.Run("first result wins", func(t *testing.T) {
		id := "result-" + newRandomID(4)
		first := taskRecord{TaskID: id, TaskType: "process_heavy_task", Status: stateSuccess,
			Result: map[string]any{"status": "completed"}, CompletedAt: base}
		second := taskRecord{TaskID: id, TaskType: "process_heavy_task", Status: stateFailure, Error: "late duplicate", CompletedAt: base.Add(time.Minute)}
		if _, err := s.getResult(ctx, id); !errors.Is(err, errNotFound) {
			t.Fatalf("result before save: %v, want errNotFound", err)
		}
		saved1, err := s.saveResult(ctx, first)
		if err != nil {
			t.Fatal(err)
		}
		saved2, err := s.saveResult(ctx, second)
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.getResult(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		first.CompletedAt = first.CompletedAt.Truncate(time.Millisecond)
		for name, r := range map[string]taskRecord{"first save": saved1, "second save": saved2, "get": got} {
			if diff := cmp.Diff(first, r); diff != "" {
				t.Errorf("%s (-want +got):\n%s", name, diff)
			}
		}
	})

	t.Run("concurrent creates and reads each get their own", func(t *testing.T) {
		// Creates and reads that overlap may share a round trip (the
		// MongoDB store batches them); each must still get its own item,
		// and a missing id among found ones must be not found.
		inParallel(t, 24, func(i int, fail func(error)) {
			name := fmt.Sprintf("concurrent-%d", i)
			it, err := s.createItem(ctx, item{Name: name, Metadata: map[string]any{"i": int64(i)}, CreatedAt: base, UpdatedAt: base})
			if err != nil {
				fail(fmt.Errorf("create %s: %w", name, err))
				return
			}
			got, err := s.getItem(ctx, "", it.ID)
			if err != nil || got.ID != it.ID || got.Name != name {
				fail(fmt.Errorf("get %s (%s): got %s %q, %v", it.ID, name, got.ID, got.Name, err))
			}
			missing := fmt.Sprintf("%024x", i)
			if _, err := s.getItem(ctx, "", missing); !errors.Is(err, errNotFound) {
				fail(fmt.Errorf("get missing %s: got %v, want not found", missing, err))
			}
			if err := s.deleteItem(ctx, "", it.ID); err != nil {
				fail(fmt.Errorf("delete %s: %w", it.ID, err))
			}
		})
	})

	t.Run("concurrent deletes of one item: exactly one deletes it", func(t *testing.T) {
		// Deletes that overlap may share a round trip (the MongoDB store
		// batches them, and one batch may ask for an item twice): of
		// three deletes of one item exactly one succeeds, the others and
		// deletes of missing ids among them find nothing.
		const items, racers = 8, 3
		ids := make([]string, items)
		for k := range ids {
			it, err := s.createItem(ctx, item{Name: fmt.Sprintf("doomed-%d", k), CreatedAt: base, UpdatedAt: base})
			if err != nil {
				t.Fatal(err)
			}
			ids[k] = it.ID
		}
		var deleted [items]atomic.Int32
		inParallel(t, items*racers, func(i int, fail func(error)) {
			k := i % items
			switch err := s.deleteItem(ctx, "", ids[k]); {
			case err == nil:
				deleted[k].Add(1)
			case !errors.Is(err, errNotFound):
				fail(fmt.Errorf("delete %s: %w", ids[k], err))
			}
			missing := fmt.Sprintf("%024x", 1000+i)
			if err := s.deleteItem(ctx, "", missing); !errors.Is(err, errNotFound) {
				fail(fmt.Errorf("delete missing %s: got %v, want not found", missing, err))
			}
		})
		for k, id := range ids {
			if n := deleted[k].Load(); n != 1 {
				t.Errorf("item %s: %d of %d deletes succeeded, want exactly 1", id, n, racers)
			}
			if _, err := s.getItem(ctx, "", id); !errors.Is(err, errNotFound) {
				t.Errorf("get %s after its deletes: got %v, want not found", id, err)
			}
		}
	})

	t.Run("an owner sees and changes only its own items", func(t *testing.T) {
		create := func(name, owner string) item {
			t.Helper()
			it, err := s.createItem(ctx, item{Name: name, Owner: owner, CreatedAt: base, UpdatedAt: base})
			if err != nil {
				t.Fatal(err)
			}
			if it.Owner != owner {
				t.Errorf("created item's owner: got %q, want %q", it.Owner, owner)
			}
			return it
		}
		mine, theirs := create("mine", "owner-a"), create("theirs", "owner-b")
		for _, tc := range []struct {
			owner string
			id    string
			want  error
		}{
			{"owner-a", mine.ID, nil}, {"", mine.ID, nil}, {"owner-b", mine.ID, errNotFound}, {"owner-a", theirs.ID, errNotFound},
		} {
			if _, err := s.getItem(ctx, tc.owner, tc.id); !errors.Is(err, tc.want) {
				t.Errorf("get %s as %q: got %v, want %v", tc.id, tc.owner, err, tc.want)
			}
		}
		name := "renamed"
		if _, err := s.updateItem(ctx, "owner-b", mine.ID, itemUpdate{Name: &name}, base); !errors.Is(err, errNotFound) {
			t.Errorf("update another's item: got %v, want not found", err)
		}
		if got, err := s.getItem(ctx, "owner-a", mine.ID); err != nil || got.Name != "mine" {
			t.Errorf("after another's update: %+v, %v; want it unchanged", got, err)
		}
		if got, err := s.updateItem(ctx, "owner-a", mine.ID, itemUpdate{Name: &name}, base); err != nil || got.Name != name {
			t.Errorf("update one's own item: %+v, %v", got, err)
		}
		for owner, want := range map[string]string{"owner-a": mine.ID, "owner-b": theirs.ID} {
			list, err := s.listItems(ctx, owner, 0, 100)
			if err != nil || len(list) != 1 || list[0].ID != want {
				t.Errorf("list as %s: %+v, %v; want only %s", owner, list, err, want)
			}
		}
		// Racing deletes, some by another owner: that owner's never find
		// the item, and exactly one of its owner's deletes it.
		var deleted atomic.Int32
		inParallel(t, 16, func(i int, fail func(error)) {
			owner := []string{"owner-a", "owner-b"}[i%2]
			switch err := s.deleteItem(ctx, owner, mine.ID); {
			case err == nil && owner == "owner-a":
				deleted.Add(1)
			case err == nil:
				fail(fmt.Errorf("%s deleted owner-a's item", owner))
			case !errors.Is(err, errNotFound):
				fail(fmt.Errorf("delete as %s: %w", owner, err))
			}
		})
		if n := deleted.Load(); n != 1 {
			t.Errorf("%d of owner-a's 8 deletes succeeded, want 1", n)
		}
		if _, err := s.getItem(ctx, "owner-b", theirs.ID); err != nil {
			t.Errorf("owner-b's item after the race: %v, want it there", err)
		}
	})

	t.Run("finished tasks are listed newest first, page by page", func(t *testing.T) {
		owner := "finisher-" + newRandomID(4)
		states := []string{stateSuccess, stateFailure, stateRevoked, stateSuccess, stateSuccess, stateFailure}
		var want []string
		for i, state := range states {
			created := base.Add(time.Duration(min(i, 3)) * time.Second) // the last three share a millisecond
			id := fmt.Sprintf("fin-%d-%s", i, newRandomID(3))
			if _, err := s.saveResult(ctx, taskRecord{TaskID: id, TaskType: []string{"a", "b"}[i%2], Status: state, Owner: owner,
				CreatedAt: created, CompletedAt: created.Add(time.Minute)}); err != nil {
				t.Fatal(err)
			}
			want = append(want, id)
		}
		slices.SortFunc(want, func(a, b string) int {
			ia, ib := finIndex(a), finIndex(b)
			if ia != ib {
				return ib - ia
			}
			return strings.Compare(b, a)
		})
		if _, err := s.saveResult(ctx, taskRecord{TaskID: "fin-other-" + newRandomID(3), TaskType: "a", Status: stateSuccess,
			Owner: owner + "-x", CreatedAt: base, CompletedAt: base}); err != nil {
			t.Fatal(err)
		}
		var got []string
		q := taskQuery{owner: owner, limit: 2}
		for pages := 0; ; pages++ {
			if pages > len(states) {
				t.Fatalf("listing did not end after %d pages: %v", pages, got)
			}
			page, err := s.listFinished(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			for _, st := range page.tasks {
				got = append(got, st.TaskID)
				if st.CreatedAt == nil {
					t.Errorf("%s listed without created_at", st.TaskID)
				}
			}
			if page.reached == nil {
				break
			}
			q.after = page.reached
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("listed ids (-want +got):\n%s", diff)
		}
		for _, tc := range []struct {
			q    taskQuery
			want int
		}{
			{taskQuery{owner: owner, status: stateSuccess, limit: 10}, 3},
			{taskQuery{owner: owner, status: stateFailure, taskType: "b", limit: 10}, 2},
			{taskQuery{owner: owner, since: base.Add(2 * time.Second), limit: 10}, 4},
		} {
			page, err := s.listFinished(ctx, tc.q)
			if err != nil {
				t.Fatal(err)
			}
			if len(page.tasks) != tc.want || page.reached != nil {
				t.Errorf("list %+v: got %d (reached %v), want %d and the end", tc.q, len(page.tasks), page.reached, tc.want)
			}
		}
	})

	t.Run("concurrent saves agree", func(t *testing.T) {
		id := "result-" + newRandomID(4)
		var wg sync.WaitGroup
		got := make([]taskRecord, 8)
		errs := make([]error, 8)
		for i := range got {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got[i], errs[i] = s.saveResult(ctx, taskRecord{TaskID: id, Status: stateSuccess,
					Result: map[string]any{"writer": float64(i)}, CompletedAt: base})
			}()
		}
		wg.Wait()
		for i := range got {
			if errs[i] != nil {
				t.Fatalf("save %d: %v", i, errs[i])
			}
			if !cmp.Equal(got[i], got[0]) {
				t.Errorf("save %d returned %v, save 0 returned %v: want one winner", i, got[i].Result, got[0].Result)
			}
		}
	})

	t.Run("an import's first time is kept, and its items are stored once", func(t *testing.T) {
		source := "sha256:" + newRandomID(8)
		first, err := s.importBase(ctx, "importer", source, base)
		if err != nil || !first.Equal(base.Truncate(time.Millisecond)) {
			t.Fatalf("first importBase: %v, %v; want %v", first, err, base)
		}
		again, err := s.importBase(ctx, "importer", source, base.Add(time.Hour))
		if err != nil || !again.Equal(first) {
			t.Errorf("importBase again: %v, %v; want the first time %v", again, err, first)
		}
		other, err := s.importBase(ctx, "someone else", source, base.Add(time.Hour))
		if err != nil || !other.Equal(base.Add(time.Hour).Truncate(time.Millisecond)) {
			t.Errorf("another owner's import of the same source: %v, %v; want its own time", other, err)
		}
		rows := func(from, to int) []item {
			var out []item
			for i := from; i < to; i++ {
				oid := bson.NewObjectIDFromTimestamp(base)
				oid[11] = byte(i) // distinct ids of one second
				oid[10] = 0xEE
				out = append(out, item{ID: oid.Hex(), Name: fmt.Sprintf("row %d", i), Owner: "importer",
					Metadata: map[string]any{"row": fmt.Sprint(i)}, CreatedAt: base, UpdatedAt: base})
			}
			return out
		}
		if added, err := s.importItems(ctx, rows(0, 3)); err != nil || added != 3 {
			t.Fatalf("import rows 0-2: %d added, %v; want 3", added, err)
		}
		// Rows 1 and 2 again, with 3 and 4: only the new ones are added,
		// and the stored ones keep what they had.
		overlap := rows(1, 5)
		overlap[0].Name = "changed"
		if added, err := s.importItems(ctx, overlap); err != nil || added != 2 {
			t.Fatalf("import rows 1-4: %d added, %v; want 2", added, err)
		}
		got, err := s.getItem(ctx, "importer", overlap[0].ID)
		if err != nil || got.Name != "row 1" || got.Metadata["row"] != "1" || got.Owner != "importer" {
			t.Errorf("row 1 after it was imported twice: %+v, %v; want the first import's", got, err)
		}
		if _, err := s.getItem(ctx, "someone else", overlap[0].ID); !errors.Is(err, errNotFound) {
			t.Errorf("another owner reads an imported row: %v, want errNotFound", err)
		}
	})
}

// normalizeNumbers makes int32/int64/float64 compare equal by value, as
// MongoDB may hand back a different integer width than was stored.
func normalizeNumbers(v any) any {
	switch v := v.(type) {
	case int32:
		return float64(v)
	case int64:
		return float64(v)
	case int:
		return float64(v)
	case map[string]any:
		out := map[string]any{}
		for k, c := range v {
			out[k] = normalizeNumbers(c)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, c := range v {
			out[i] = normalizeNumbers(c)
		}
		return out
	case bson.A:
		return normalizeNumbers([]any(v))
	case bson.M:
		return normalizeNumbers(map[string]any(v))
	default:
		return v
	}
}

// contractBroker is what the broker contract exercises, plus a way to
// count dead letters.
type contractBroker interface {
	taskPublisher
	consume(ctx context.Context, prefetch int, out chan<- delivery) error
}

func TestBrokerContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		b := newMemoryBroker()
		brokerContract(t, b, byPriority, func() int { _, dead := b.depth(); return dead })
	})
	t.Run("rabbitmq classic", func(t *testing.T) {
		env := realStack(t)
		b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueClassic, 5*time.Second, slog.New(slog.DiscardHandler))
		t.Cleanup(b.close)
		brokerContract(t, b, byPriority, func() int { return queueDepth(t, env["QUEUE_NAME"]+".dead") })
	})
	t.Run("rabbitmq quorum", func(t *testing.T) {
		env := realStack(t)
		b := newAMQPBroker(services.amqpURL, env["QUEUE_NAME"], queueQuorum, 5*time.Second, slog.New(slog.DiscardHandler))
		t.Cleanup(b.close)
		// RabbitMQ 3.x quorum queues know no priorities: arrival order.
		brokerContract(t, b, inArrivalOrder, func() int { return queueDepth(t, env["QUEUE_NAME"]+".dead") })
	})
}

// The order in which a broker hands out the contract's five messages
// (low-1, normal-1, low-2, high-1, normal-2), up to the return of the
// third, which is requeued.
var (
	byPriority     = []string{"high-1", "normal-1", "normal-2", "normal-2"}
	inArrivalOrder = []string{"low-1", "normal-1", "low-2", "high-1", "normal-2", "low-2"}
)

// testAMQPChannel opens a channel on a connection of its own to the test
// RabbitMQ; the returned function closes the connection.
func testAMQPChannel(t testing.TB) (*amqp.Channel, func()) {
	t.Helper()
	needsServices(t)
	conn, err := amqp.Dial(services.amqpURL)
	if err != nil {
		t.Fatalf("dial rabbitmq: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		conn.Close()
		t.Fatalf("open a channel: %v", err)
	}
	return ch, func() { conn.Close() }
}

// queueDepth is the number of ready messages in a RabbitMQ queue.
func queueDepth(t testing.TB, queue string) int {
	t.Helper()
	ch, closeChannel := testAMQPChannel(t)
	defer closeChannel()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect queue %s: %v", queue, err)
	}
	return q.Messages
}

func brokerContract(t *testing.T, b contractBroker, wantOrder []string, deadLetters func() int) {
	ctx := context.Background()
	publish := func(id, priority string) {
		t.Helper()
		if err := b.publish(ctx, taskMessage{ID: id, Type: "t", Args: []byte(`{}`), Priority: priority, EnqueuedAt: time.Now()}); err != nil {
			t.Fatalf("publish %s: %v", id, err)
		}
	}
	for _, m := range []struct{ id, priority string }{{"low-1", "low"}, {"normal-1", "normal"}, {"low-2", "low"}, {"high-1", "high"}, {"normal-2", "normal"}} {
		publish(m.id, m.priority)
	}

	consumeCtx, stop := context.WithCancel(ctx)
	out := make(chan delivery)
	consumed := make(chan error, 1)
	go func() { consumed <- b.consume(consumeCtx, 1, out) }()
	next := func() (delivery, taskMessage) {
		t.Helper()
		select {
		case d := <-out:
			m, err := decodeTaskMessage(d.body)
			if err != nil {
				t.Fatal(err)
			}
			return d, m
		case <-time.After(10 * time.Second):
			t.Fatal("no delivery within 10s")
			return delivery{}, taskMessage{}
		}
	}

	// Two acked, then one rejected with requeue: it must come back, marked
	// redelivered (at once on a classic queue, behind the rest on a
	// quorum queue), and is then rejected for good: a dead letter.
	var order []string
	for range 2 {
		d, m := next()
		order = append(order, m.ID)
		if err := d.ack(); err != nil {
			t.Fatalf("ack %s: %v", m.ID, err)
		}
	}
	d, requeued := next()
	order = append(order, requeued.ID)
	if err := d.reject(true); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		d, m := next()
		order = append(order, m.ID)
		if m.ID != requeued.ID {
			if err := d.ack(); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if !d.redelivered {
			t.Errorf("%s came back after a requeue not marked redelivered", m.ID)
		}
		if err := d.reject(false); err != nil {
			t.Fatal(err)
		}
		break
	}
	if diff := cmp.Diff(wantOrder, order); diff != "" {
		t.Errorf("delivery order (-want +got):\n%s", diff)
	}
	waitFor(t, 5*time.Second, "one dead letter", func() bool { return deadLetters() == 1 })

	// Stopping the consumer hands out nothing more; a message published
	// then stays queued for the next consumer.
	stop()
	if err := <-consumed; err != nil {
		t.Errorf("consume returned %v, want nil after its context ended", err)
	}
	publish("last", "high")
	out2 := make(chan delivery)
	ctx2, stop2 := context.WithCancel(ctx)
	defer stop2()
	go func() { _ = b.consume(ctx2, 1, out2) }()
	select {
	case d := <-out2:
		m, _ := decodeTaskMessage(d.body)
		if m.ID != "last" {
			t.Errorf("next consumer got %s, want last", m.ID)
		}
		_ = d.ack()
	case <-time.After(10 * time.Second):
		t.Fatal("the message left after stopping was not delivered to the next consumer")
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestScheduleStoreContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) { scheduleStoreContract(t, newMemorySchedules()) })
	t.Run("mongodb", func(t *testing.T) {
		env := realStack(t)
		scheduleStoreContract(t, newMongoSchedules(testMongo(t).Database(env["MONGODB_DATABASE"])))
	})
}

func scheduleStoreContract(t *testing.T, s scheduleStore) {
	ctx := context.Background()
	t0 := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	owner := "sched-" + newRandomID(3)
	mk := func(name string, next time.Duration) schedule {
		return schedule{Name: name, Owner: owner, Every: time.Minute, CreatedAt: t0, NextRun: t0.Add(next),
			Task: taskSpec{Type: "t", Args: []byte(`{"a":1}`), Priority: "high"}}
	}
	for _, sch := range []schedule{mk("b", time.Minute), mk("a", 2*time.Minute)} {
		if err := s.createSchedule(ctx, sch); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.createSchedule(ctx, mk("a", time.Minute)); !errors.Is(err, errScheduleExists) {
		t.Errorf("create a second schedule named a: %v, want errScheduleExists", err)
	}
	other := mk("a", time.Minute)
	other.Owner = owner + "-x"
	if err := s.createSchedule(ctx, other); err != nil {
		t.Errorf("another owner's schedule of the same name: %v", err)
	}
	got, err := s.getSchedule(ctx, owner, "a")
	if err != nil || got.Name != "a" || got.Every != time.Minute || string(got.Task.Args) != `{"a":1}` || got.Task.Priority != "high" || !got.NextRun.Equal(t0.Add(2*time.Minute)) {
		t.Errorf("get a: %+v, %v", got, err)
	}
	if _, err := s.getSchedule(ctx, owner, "c"); !errors.Is(err, errNotFound) {
		t.Errorf("get a missing schedule: %v, want not found", err)
	}
	list, err := s.listSchedules(ctx, owner)
	if err != nil || len(list) != 2 || list[0].Name != "a" || list[1].Name != "b" {
		t.Errorf("list: %+v, %v; want a and b, by name", list, err)
	}
	due, err := s.dueSchedules(ctx, t0.Add(90*time.Second))
	if err != nil || !slices.ContainsFunc(due, func(d schedule) bool { return d.Owner == owner && d.Name == "b" }) ||
		slices.ContainsFunc(due, func(d schedule) bool { return d.Owner == owner && d.Name == "a" }) {
		t.Errorf("due at 90 s: %+v, %v; want b and not a", due, err)
	}
	paused, err := s.setPaused(ctx, owner, "b", true, t0.Add(3*time.Minute))
	if err != nil || !paused.Paused || !paused.NextRun.Equal(t0.Add(3*time.Minute)) {
		t.Errorf("pause b: %+v, %v", paused, err)
	}
	due, _ = s.dueSchedules(ctx, t0.Add(time.Hour))
	if slices.ContainsFunc(due, func(d schedule) bool { return d.Owner == owner && d.Name == "b" }) {
		t.Errorf("a paused schedule is due")
	}
	if err := s.deleteSchedule(ctx, owner, "a"); err != nil {
		t.Errorf("delete a: %v", err)
	}
	if err := s.deleteSchedule(ctx, owner, "a"); !errors.Is(err, errNotFound) {
		t.Errorf("delete a again: %v, want not found", err)
	}
	if _, err := s.getSchedule(ctx, owner+"-x", "a"); err != nil {
		t.Errorf("the other owner's a after a's delete: %v, want it there", err)
	}
	// Of eight claims of one tick at once, one wins.
	var won atomic.Int32
	inParallel(t, 8, func(i int, fail func(error)) {
		ok, err := s.claimTick(ctx, scheduleID(owner+"-x", "a"), t0.Add(time.Minute), t0.Add(time.Minute), t0.Add(2*time.Minute), true, t0)
		if err != nil {
			fail(err)
		}
		if ok {
			won.Add(1)
		}
	})
	if n := won.Load(); n != 1 {
		t.Errorf("%d of 8 claims of one tick won, want 1", n)
	}
	if got, _ := s.getSchedule(ctx, owner+"-x", "a"); !got.NextRun.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("next run after the claims: %v, want %v", got.NextRun, t0.Add(2*time.Minute))
	}
	// A claim lost to a winner that died before moving the schedule on
	// still moves it on.
	if won, err := s.claimTick(ctx, scheduleID(owner+"-x", "a"), t0.Add(90*time.Second), t0.Add(time.Minute), t0.Add(3*time.Minute), true, t0); err != nil || won {
		t.Errorf("claim of a tick already claimed: %v, %v; want lost", won, err)
	}
	if got, _ := s.getSchedule(ctx, owner+"-x", "a"); !got.NextRun.Equal(t0.Add(2 * time.Minute)) {
		t.Errorf("a lost claim whose due time is not the schedule's moved it to %v", got.NextRun)
	}
	if _, err := s.claimTick(ctx, scheduleID(owner+"-x", "a"), t0.Add(2*time.Minute), t0.Add(time.Minute), t0.Add(3*time.Minute), true, t0); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.getSchedule(ctx, owner+"-x", "a"); !got.NextRun.Equal(t0.Add(3 * time.Minute)) {
		t.Errorf("a lost claim whose due time is the schedule's left it at %v, want it moved on to %v", got.NextRun, t0.Add(3*time.Minute))
	}
	// A claimed tick that is skipped after all is no longer waiting.
	if err := s.skipTick(ctx, scheduleID(owner+"-x", "a"), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if stuck, err := s.stuckTicks(ctx, t0.Add(time.Hour)); err != nil || slices.ContainsFunc(stuck, func(st stuckTick) bool { return st.schedule.Owner == owner+"-x" }) {
		t.Errorf("stuck ticks after the skip: %+v, %v; want none of this schedule", stuck, err)
	}
}
