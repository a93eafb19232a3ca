// Command mongowire runs an embedded FerretDB so errand's tests can talk to a
// MongoDB-wire server on machines where mongod cannot be installed.
//
// It prints exactly one line to stdout, the MongoDB URI to connect to, once
// the server accepts TCP connections, and then runs until SIGINT or SIGTERM.
//
// It lives in its own Go module so that FerretDB's large dependency tree never
// reaches errand's root go.mod.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/FerretDB/FerretDB/ferretdb"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	os.Exit(run())
}

func run() int {
	addr := flag.String("addr", "127.0.0.1:0", "loopback TCP `address` to listen on; port 0 picks a free port")
	pgURL := flag.String("postgres", "", "PostgreSQL `URL`; when set, FerretDB's postgresql handler is used")
	sqliteDir := flag.String("sqlite-dir", "", "`directory` for FerretDB's sqlite handler; used when -postgres is empty")
	logLevel := flag.String("log-level", "error", "log `level` for stderr: debug, info, warn or error")
	flag.Parse()

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "mongowire: bad -log-level %q: %v\n", *logLevel, err)
		return 2
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if err := checkLoopback(*addr); err != nil {
		fmt.Fprintf(os.Stderr, "mongowire: %v\n", err)
		return 2
	}

	conf := &ferretdb.Config{
		Listener: ferretdb.ListenerConfig{TCP: *addr},
		Logger:   logger,
	}

	switch {
	case *pgURL != "":
		conf.Handler = "postgresql"
		conf.PostgreSQLURL = *pgURL
	case *sqliteDir != "":
		// FerretDB insists on an existing directory and a URI whose path ends in "/".
		dir := filepath.Clean(*sqliteDir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			fmt.Fprintf(os.Stderr, "mongowire: %v\n", err)
			return 1
		}
		conf.Handler = "sqlite"
		conf.SQLiteURL = "file:" + dir + "/"
	default:
		fmt.Fprintln(os.Stderr, "mongowire: one of -postgres or -sqlite-dir is required")
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// ferretdb.New already binds the listener, so a port 0 address resolves to a
	// real port here and MongoDBURI reports it; no need to pre-pick a port.
	f, err := ferretdb.New(conf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mongowire: %v\n", err)
		return 1
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Run(ctx); err != nil {
			logger.Error("ferretdb stopped", "error", err)
		}
	}()

	uri := f.MongoDBURI()

	// Callers read the URI line as "ready", so only print it once a TCP dial
	// to the listener actually succeeds.
	if err := waitDialable(ctx, done, uri); err != nil {
		fmt.Fprintf(os.Stderr, "mongowire: %v\n", err)
		stop()
		<-done
		return 1
	}

	fmt.Println(uri)

	if *pgURL != "" {
		go ginTwins(ctx, *pgURL)
	}

	select {
	case <-done:
		if ctx.Err() == nil {
			fmt.Fprintln(os.Stderr, "mongowire: ferretdb stopped unexpectedly")
			return 1
		}
		return 0
	case <-ctx.Done():
	}

	// Run closes the listener at once but waits for client connections to end;
	// do not let a client that never hangs up keep us from exiting.
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		fmt.Fprintln(os.Stderr, "mongowire: connections still open after 5s, exiting anyway")
	}

	return 0
}

// checkLoopback refuses non-loopback listen addresses: this tool serves local
// tests only and must never be reachable from other hosts.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("bad -addr %q: %v", addr, err)
	}

	if host == "localhost" {
		return nil
	}

	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q is not a loopback address", addr)
	}

	return nil
}

// waitDialable dials the host in uri until it answers, ctx ends, FerretDB stops
// or 30 seconds pass.
func waitDialable(ctx context.Context, done <-chan struct{}, uri string) error {
	host := strings.TrimSuffix(strings.TrimPrefix(uri, "mongodb://"), "/")
	deadline := time.Now().Add(30 * time.Second)

	for {
		c, err := net.DialTimeout("tcp", host, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			return nil
		}

		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections: %v", host, err)
		}

		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-done:
			return errors.New("ferretdb stopped before accepting connections")
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// FerretDB 1.24's postgresql handler pushes an equality filter down as
// `_jsonb -> 'f' @> '"v"'`, but the indexes it creates for MongoDB indexes are
// btree indexes on `(_jsonb -> 'f')`, and btree cannot answer @>: every
// lookup, _id included, becomes a sequential scan. A GIN index on the same
// expression can, so ginTwins keeps one next to each such btree index.
//
// FerretDB never learns about these extra indexes (its catalogue lives in its
// own metadata table), so they do not show up in listIndexes; they go away
// with the table when the collection or database is dropped.

// pgMaxIdent is PostgreSQL's limit on identifier length (NAMEDATALEN - 1);
// longer names are silently truncated by the server, which would make the
// "does the twin exist" check below miss.
const pgMaxIdent = 63

// btreeJSONB matches a one-column btree index on a top-level field of the
// _jsonb column, as pg_indexes renders it, for example
//
//	... USING btree (((_jsonb -> 'v'::text)))
//	... USING btree (((_jsonb -> 'it''s'::text)) DESC)
//
// and captures the expression `(_jsonb -> 'v'::text)`, which is valid SQL
// quoted by PostgreSQL itself and so can be reused as is.
//
// Left alone on purpose:
//   - compound indexes: errand's tests only need single-field lookups fast;
//   - dotted fields ("a.b", rendered as `(_jsonb -> 'a') -> 'b'`): embedded
//     FerretDB never pushes dotted filters down to SQL (EnableNestedPushdown
//     is a test-only option it leaves off), so a GIN index there would only
//     slow writes.
var btreeJSONB = regexp.MustCompile(`USING btree \(\((\(_jsonb -> '(?:[^']|'')*'::text\))\)(?: DESC)?\)$`)

// ginTwins runs syncGINTwins every second until ctx ends. It is best-effort:
// errors are logged and the next round tries again.
func ginTwins(ctx context.Context, pgURL string) {
	cfg, err := pgxpool.ParseConfig(pgURL)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mongowire: gin twins disabled: %v\n", err)
		return
	}

	// One connection is plenty for a catalogue query and the odd CREATE INDEX,
	// and keeps us from eating into the server's connection limit.
	cfg.MaxConns = 1

	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mongowire: gin twins disabled: %v\n", err)
		return
	}
	defer pool.Close()

	t := time.NewTicker(time.Second)
	defer t.Stop()

	// While PostgreSQL is down the same error comes back every second; say it
	// once rather than flooding the test's stderr.
	var last string

	for {
		err := syncGINTwins(ctx, pool)
		switch {
		case ctx.Err() != nil:
		case err == nil:
			last = ""
		case err.Error() != last:
			last = err.Error()
			fmt.Fprintf(os.Stderr, "mongowire: gin twins: %v\n", err)
		}

		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// syncGINTwins creates the missing GIN twins in one pass over pg_indexes.
func syncGINTwins(ctx context.Context, pool *pgxpool.Pool) error {
	rows, err := pool.Query(ctx, `
		SELECT schemaname, tablename, indexname, indexdef
		FROM pg_indexes
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema')`)
	if err != nil {
		return err
	}

	type index struct{ schema, table, name, def string }

	idx, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (index, error) {
		var i index
		err := r.Scan(&i.schema, &i.table, &i.name, &i.def)
		return i, err
	})
	if err != nil {
		return err
	}

	// Index names are unique per schema, and that is what CREATE INDEX checks.
	have := make(map[[2]string]bool, len(idx))
	for _, i := range idx {
		have[[2]string{i.schema, i.name}] = true
	}

	var errs []error

	for _, i := range idx {
		// FerretDB's own metadata table is read through its in-memory cache,
		// not through @> filters; twinning its indexes would only slow writes.
		if strings.HasPrefix(i.table, "_ferretdb_") {
			continue
		}

		m := btreeJSONB.FindStringSubmatch(i.def)
		if m == nil {
			continue
		}

		twin := twinName(i.name)
		if have[[2]string{i.schema, twin}] {
			continue
		}

		// The expression is PostgreSQL's own rendering (see btreeJSONB);
		// identifiers are sanitized.
		q := fmt.Sprintf("CREATE INDEX IF NOT EXISTS %s ON %s USING gin ((%s))",
			pgx.Identifier{twin}.Sanitize(),
			pgx.Identifier{i.schema, i.table}.Sanitize(),
			m[1],
		)

		if _, err := pool.Exec(ctx, q); err != nil {
			// A collection dropped between the query and now is normal; report
			// and carry on with the other indexes.
			errs = append(errs, fmt.Errorf("%s: %w", q, err))
			continue
		}

		have[[2]string{i.schema, twin}] = true
	}

	return errors.Join(errs...)
}

// twinName derives the GIN index name from the btree one. When appending
// "_gin" would exceed PostgreSQL's identifier limit, the name is cut and a hash
// of the full name is kept, because FerretDB ends its index names with a hash
// and plain truncation could map two indexes to one twin.
func twinName(btree string) string {
	const suffix = "_gin"

	if len(btree)+len(suffix) <= pgMaxIdent {
		return btree + suffix
	}

	h := fnv.New32a()
	_, _ = h.Write([]byte(btree))
	tail := fmt.Sprintf("_%08x%s", h.Sum32(), suffix)

	// Cut on a rune boundary: a collection name may be non-ASCII, and
	// PostgreSQL rejects identifiers that are not valid UTF-8.
	cut := pgMaxIdent - len(tail)
	for cut > 0 && !utf8.RuneStart(btree[cut]) {
		cut--
	}

	return btree[:cut] + tail
}
