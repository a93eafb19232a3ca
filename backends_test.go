package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"strings"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// TestStartupLogSaysHowItemsGo: openBackends tells the operator how item
// requests will reach the MongoDB server. When its first ping reaches
// FerretDB it says they go one by one (and says nothing of the kind for
// MongoDB); when no ping reaches the server it warns that they are
// batched until a health check does.
func TestStartupLogSaysHowItemsGo(t *testing.T) {
	const oneByOne = "MongoDB server is FerretDB, where item batches cost more than they save; item creates, reads and deletes go one by one"
	const notInspected = "MongoDB server not inspected yet; until a health check reaches it, item creates, reads and deletes are batched, which costs FerretDB more than it saves"

	t.Run("reachable", func(t *testing.T) {
		logs := startupLog(t, realStack(t))
		ferretDB := isFerretDB(t, services.mongoURI)
		if got := logs.has(slog.LevelInfo, oneByOne); got != ferretDB {
			t.Errorf("start-up log has the one-by-one line: %v, but the server is FerretDB: %v; log:\n%s", got, ferretDB, logs)
		}
		if logs.has(slog.LevelWarn, notInspected) {
			t.Errorf("start-up log says the server was not inspected, though it answered; log:\n%s", logs)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		env := maps.Clone(realStack(t))
		env["MONGODB_URI"] = "mongodb://" + freeAddr(t)
		env["HEALTH_TIMEOUT"] = "300ms" // the index and the ping wait this long each
		logs := startupLog(t, env)
		if !logs.has(slog.LevelWarn, notInspected) {
			t.Errorf("start-up log does not warn that the unreachable server was not inspected; log:\n%s", logs)
		}
		if logs.has(slog.LevelInfo, oneByOne) {
			t.Errorf("start-up log says items go one by one, though no ping reached the server; log:\n%s", logs)
		}
	})
}

// startupLog opens the backends env names, as run does, and returns what
// that logged.
func startupLog(t *testing.T, env map[string]string) *recordedLog {
	t.Helper()
	cfg, err := parseConfig([]string{"errand"}, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	logs := &recordedLog{}
	b, err := openBackends(context.Background(), cfg, slog.New(slog.NewJSONHandler(logs, nil)), testMetrics(), disabledTracing().tracer)
	if err != nil {
		t.Fatalf("open backends: %v", err)
	}
	t.Cleanup(b.close)
	return logs
}

// isFerretDB asks the server at uri itself, not through errand's store.
func isFerretDB(t *testing.T, uri string) bool {
	t.Helper()
	var info bson.M
	if err := testMongoAt(t, uri).Database("admin").RunCommand(context.Background(), bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		t.Fatalf("buildInfo: %v", err)
	}
	_, ok := info["ferretdbVersion"]
	return ok
}

// recordedLog keeps JSON log lines; the backends' goroutines may log while
// a test reads it.
type recordedLog struct{ lockedBuffer }

// has reports whether a line at level has exactly msg as its message.
func (l *recordedLog) has(level slog.Level, msg string) bool {
	for _, line := range strings.Split(l.String(), "\n") {
		var rec struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &rec) == nil && rec.Level == level.String() && rec.Msg == msg {
			return true
		}
	}
	return false
}
