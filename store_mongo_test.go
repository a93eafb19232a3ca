package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/event"
	"go.mongodb.org/mongo-driver/v2/mongo"
)

// TestMongoPoolIsBounded: errand's client opens at most mongoMaxPoolSize
// connections to a server however many operations are in flight, unless
// the URI sets its own maxPoolSize.
func TestMongoPoolIsBounded(t *testing.T) {
	if got := mongoClientOptions("mongodb://127.0.0.1:27017/?maxPoolSize=50").MaxPoolSize; got == nil || *got != 50 {
		t.Errorf("maxPoolSize=50 in the URI gave a pool of %v, want 50", got)
	}
	env := realStack(t)
	var opened atomic.Int64
	opts := mongoClientOptions(services.mongoURI).SetPoolMonitor(&event.PoolMonitor{Event: func(e *event.PoolEvent) {
		if e.Type == event.ConnectionCreated {
			opened.Add(1)
		}
	}})
	client, err := mongo.Connect(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Disconnect(context.Background()) })
	coll := client.Database(env["MONGODB_DATABASE"]).Collection("pool_probe")
	inParallel(t, 4*mongoMaxPoolSize, func(i int, fail func(error)) {
		if _, err := coll.InsertOne(context.Background(), bson.D{{Key: "n", Value: i}}); err != nil {
			fail(err)
		}
	})
	if n := opened.Load(); n == 0 || n > mongoMaxPoolSize {
		t.Errorf("%d connections opened for %d concurrent inserts, want 1 to %d", n, 4*mongoMaxPoolSize, mongoMaxPoolSize)
	}
}

// TestMongoItemsOneByOne: in FerretDB's mode, concurrent item creates,
// reads and deletes reach the server as one command each (one document
// per insert, _id equality in every find and delete), never as a batch,
// whatever the server.
func TestMongoItemsOneByOne(t *testing.T) {
	needsServices(t)
	var mu sync.Mutex
	commands := map[string][]bson.Raw{}
	monitor := &event.CommandMonitor{Started: func(_ context.Context, e *event.CommandStartedEvent) {
		if coll, _ := e.Command.Lookup(e.CommandName).StringValueOK(); coll != "items" {
			return
		}
		mu.Lock()
		commands[e.CommandName] = append(commands[e.CommandName], e.Command)
		mu.Unlock()
	}}
	ctx := context.Background()
	store := connectTestMongoWith(t, mongoClientOptions(services.mongoURI).SetMonitor(monitor))
	store.inspected.Store(true) // so no ping changes the mode
	store.oneByOne.Store(true)

	const n = 32
	inParallel(t, n, func(i int, fail func(error)) {
		it, err := store.createItem(ctx, item{Name: fmt.Sprintf("one by one %d", i), CreatedAt: time.Now(), UpdatedAt: time.Now()})
		if err != nil {
			fail(fmt.Errorf("create %d: %w", i, err))
			return
		}
		if _, err := store.getItem(ctx, "", it.ID); err != nil {
			fail(fmt.Errorf("get %d: %w", i, err))
		}
		if err := store.deleteItem(ctx, "", it.ID); err != nil {
			fail(fmt.Errorf("delete %d: %w", i, err))
		}
		if _, err := store.getItem(ctx, "", it.ID); !errors.Is(err, errNotFound) {
			fail(fmt.Errorf("get %d after its delete: %v, want errNotFound", i, err))
		}
	})

	mu.Lock()
	defer mu.Unlock()
	for name, want := range map[string]int{"insert": n, "find": 2 * n, "delete": n} {
		if got := len(commands[name]); got != want {
			t.Errorf("%d %s commands on items for %d concurrent items, want %d", got, name, n, want)
		}
	}
	for _, cmd := range commands["insert"] {
		if docs, _ := cmd.Lookup("documents").Array().Values(); len(docs) != 1 {
			t.Errorf("an insert of %d documents, want 1: %s", len(docs), cmd)
		}
	}
	for _, cmd := range commands["find"] {
		if cmd.Lookup("filter", "_id").Type != bson.TypeObjectID {
			t.Errorf("a find not by _id equality: %s", cmd)
		}
	}
	for _, cmd := range commands["delete"] {
		deletes, _ := cmd.Lookup("deletes").Array().Values()
		if len(deletes) != 1 || deletes[0].Document().Lookup("q", "_id").Type != bson.TypeObjectID {
			t.Errorf("a delete not of one item by _id equality: %s", cmd)
		}
	}
}

// TestMongoIndexes: the indexes listings and monthly reports read by are
// made, on the MongoDB-wire server of the tests too, and the one earlier
// versions made that another replaces is dropped, every time (the second
// call finds it gone).
func TestMongoIndexes(t *testing.T) {
	store := connectTestMongo(t)
	ctx := context.Background()
	_, err := store.results.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "status", Value: 1}, {Key: "completed_at", Value: -1}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := store.ensureIndexes(ctx); err != nil {
			t.Fatal(err)
		}
	}
	names := func(coll *mongo.Collection) []string {
		specs, err := coll.Indexes().ListSpecifications(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, s := range specs {
			out = append(out, s.Name)
		}
		return out
	}
	for coll, want := range map[*mongo.Collection][]string{
		store.items:   {"owner_1__id_-1", "metadata.user_id_1_created_at_1"},
		store.results: {"owner_1_created_at_-1__id_-1", "owner_1_status_1_created_at_-1__id_-1", "args.user_id_1_created_at_1"},
	} {
		got := names(coll)
		for _, name := range want {
			if !slices.Contains(got, name) {
				t.Errorf("%s has indexes %v, want %s among them", coll.Name(), got, name)
			}
		}
	}
	if got := names(store.results); slices.Contains(got, "status_1_completed_at_-1") {
		t.Errorf("task_results has indexes %v, want the replaced status_1_completed_at_-1 dropped", got)
	}
}
