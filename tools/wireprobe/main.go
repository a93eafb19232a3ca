// Command wireprobe drives a MongoDB-wire server straight from Go with the
// operations errand's items endpoints make (insert one item, find it by
// _id, delete it by _id), from a fixed number of goroutines for a fixed
// time, and prints one line:
//
//	wire-direct items_rps=… iterations=… errors=… p50_ms=… p99_ms=…
//
// items_rps counts operations per second, all three kinds together, as
// the bench harness counts HTTP requests. scripts/sidebyside runs it in the
// same round as the harness, so errand's items path is compared with what
// the server itself sustains at that moment. Only loopback servers are
// accepted. Each iteration deletes the document it inserted, so the
// collection is left as it was found.
//
// It lives in its own Go module so that its flags and dependencies stay
// out of errand's binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "wireprobe:", err)
		os.Exit(1)
	}
}

type probeConfig struct {
	uri, database, collection string
	workers                   int
	duration                  time.Duration
}

func run(args []string) error {
	fs := flag.NewFlagSet("wireprobe", flag.ContinueOnError)
	var cfg probeConfig
	fs.StringVar(&cfg.uri, "uri", "mongodb://127.0.0.1:27017", "MongoDB `URI` (loopback only)")
	fs.StringVar(&cfg.database, "db", "errand_bench", "`database` to use")
	fs.StringVar(&cfg.collection, "collection", "wireprobe_items", "`collection` to use, in errand's database by default; it is kept between runs, so over a side-by-side set it ages as errand's items collection does (on FerretDB without autovacuum, deleted rows stay behind and slow later lookups)")
	fs.IntVar(&cfg.workers, "workers", 32, "concurrent goroutines")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to drive the server")
	drop := fs.String("drop", "", "comma-separated `databases` to drop, then exit without probing: a side-by-side starts every system on fresh collections (start the systems after it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkLoopback(cfg.uri); err != nil {
		return err
	}
	if *drop != "" {
		return dropDatabases(context.Background(), cfg.uri, strings.Split(*drop, ","))
	}
	if cfg.workers < 1 || cfg.duration <= 0 {
		return errors.New("-workers must be at least 1 and -duration positive")
	}
	res, err := probe(context.Background(), cfg)
	if err != nil {
		return err
	}
	fmt.Println(res.line())
	return nil
}

// dropDatabases drops each named database.
func dropDatabases(ctx context.Context, uri string, names []string) error {
	client, err := mongo.Connect(options.Client().ApplyURI(uri).SetServerSelectionTimeout(5 * time.Second).SetTimeout(time.Minute))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer client.Disconnect(context.Background())
	for _, name := range names {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if err := client.Database(name).Drop(ctx); err != nil {
			return fmt.Errorf("drop database %s: %w", name, err)
		}
		fmt.Fprintf(os.Stderr, "wireprobe: dropped database %s\n", name)
	}
	return nil
}

// checkLoopback refuses any server that is not on this machine.
func checkLoopback(uri string) error {
	u, err := url.Parse(uri)
	if err != nil {
		return fmt.Errorf("-uri: %w", err)
	}
	for _, host := range strings.Split(u.Host, ",") {
		h := host
		if i := strings.LastIndex(h, ":"); i > 0 && !strings.HasSuffix(h, "]") {
			h = h[:i]
		}
		h = strings.Trim(h, "[]")
		if h != "localhost" && h != "::1" && !strings.HasPrefix(h, "127.") {
			return fmt.Errorf("-uri: %s is not a loopback address", host)
		}
	}
	return nil
}

type probeResult struct {
	ops, iterations, errors int
	elapsed                 time.Duration
	latencies               []time.Duration // one per operation
}

func (r probeResult) line() string {
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	pct := func(p float64) float64 {
		if len(r.latencies) == 0 {
			return 0
		}
		return float64(r.latencies[int(p*float64(len(r.latencies)-1))].Microseconds()) / 1000
	}
	return fmt.Sprintf("wire-direct items_rps=%.1f iterations=%d errors=%d p50_ms=%.2f p99_ms=%.2f",
		float64(r.ops)/r.elapsed.Seconds(), r.iterations, r.errors, pct(0.50), pct(0.99))
}

// item is the document errand's POST /api/items stores.
type item struct {
	ID          bson.ObjectID  `bson:"_id"`
	Name        string         `bson:"name"`
	Description string         `bson:"description"`
	Metadata    map[string]any `bson:"metadata"`
	CreatedAt   time.Time      `bson:"created_at"`
	UpdatedAt   time.Time      `bson:"updated_at"`
}

func probe(ctx context.Context, cfg probeConfig) (probeResult, error) {
	client, err := mongo.Connect(options.Client().ApplyURI(cfg.uri).SetServerSelectionTimeout(5 * time.Second).SetTimeout(10 * time.Second))
	if err != nil {
		return probeResult{}, fmt.Errorf("connect: %w", err)
	}
	defer client.Disconnect(context.Background())
	coll := client.Database(cfg.database).Collection(cfg.collection)
	if err := client.Ping(ctx, nil); err != nil {
		return probeResult{}, fmt.Errorf("ping %s: %w", cfg.uri, err)
	}

	var (
		mu    sync.Mutex
		total probeResult
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(cfg.duration)
	for w := range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine probeResult
			for i := 0; time.Now().Before(deadline); i++ {
				ok := iteration(ctx, coll, w, i, &mine)
				mine.iterations++
				if !ok {
					mine.errors++
				}
			}
			mu.Lock()
			total.ops += mine.ops
			total.iterations += mine.iterations
			total.errors += mine.errors
			total.latencies = append(total.latencies, mine.latencies...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	total.elapsed = time.Since(start)
	return total, nil
}

// iteration inserts, finds and deletes one item, as one k6 items
// iteration does over HTTP, and reports whether all three succeeded.
func iteration(ctx context.Context, coll *mongo.Collection, worker, i int, r *probeResult) bool {
	now := time.Now().UTC().Truncate(time.Millisecond)
	doc := item{ID: bson.NewObjectID(), Name: fmt.Sprintf("bench-item-%d-%d", worker, i), Description: "wireprobe bench item",
		Metadata: map[string]any{"vu": worker, "iter": i, "category": "bench"}, CreatedAt: now, UpdatedAt: now}
	timed := func(op func() error) bool {
		t0 := time.Now()
		err := op()
		r.latencies = append(r.latencies, time.Since(t0))
		if err == nil {
			r.ops++
		}
		return err == nil
	}
	if !timed(func() error { _, err := coll.InsertOne(ctx, doc); return err }) {
		return false
	}
	found := timed(func() error {
		var got item
		return coll.FindOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}).Decode(&got)
	})
	deleted := timed(func() error {
		res, err := coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: doc.ID}})
		if err == nil && res.DeletedCount != 1 {
			err = errors.New("nothing deleted")
		}
		return err
	})
	return found && deleted
}
