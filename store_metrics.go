package main

import (
	"context"
	"errand/tasks"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// storeObserver times and traces store operations: a latency sample and,
// on failure, an error count per store and operation, and a client span.
type storeObserver struct {
	store  string // "redis", "mongodb" or "embedded"
	m      *metrics
	tracer trace.Tracer
}

// Operation names, for creating their error series up front (see
// metrics.initSeries for why).
var (
	statusOps   = []string{"put_status", "get_status", "delete_pending", "list_live"}
	keyOps      = []string{"reserve_key", "swap_key", "get_key"}
	documentOps = []string{"create_item", "list_items", "get_item", "update_item", "delete_item", "save_result", "get_result", "list_results", "import_base", "import_items", "month_items", "month_tasks"}
)

func newStoreObserver(store string, m *metrics, tracer trace.Tracer, ops ...string) storeObserver {
	for _, op := range ops {
		m.storeErrors.WithLabelValues(store, op)
	}
	return storeObserver{store: store, m: m, tracer: tracer}
}

// observe runs call as one store operation named op: a client span
// around it, its latency recorded and, on failure, an error counted.
// Errors listed in answers (not found, say) are answers, not failures.
func observe[T any](ctx context.Context, o storeObserver, op string, call func(context.Context) (T, error), answers ...error) (T, error) {
	begin := time.Now()
	ctx, span := o.tracer.Start(ctx, o.store+" "+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system.name", o.store), attribute.String("db.operation.name", op)))
	defer span.End()
	out, err := call(ctx)
	o.m.storeDuration.WithLabelValues(o.store, op).Observe(time.Since(begin).Seconds())
	if err != nil && !isAnyOf(err, answers) {
		span.SetStatus(codes.Error, err.Error())
		o.m.storeErrors.WithLabelValues(o.store, op).Inc()
	}
	return out, err
}

// observeErr is observe for an operation that returns only an error.
func observeErr(ctx context.Context, o storeObserver, op string, call func(context.Context) error, answers ...error) error {
	_, err := observe(ctx, o, op, func(ctx context.Context) (struct{}, error) { return struct{}{}, call(ctx) }, answers...)
	return err
}

func isAnyOf(err error, targets []error) bool {
	for _, target := range targets {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// measuredStatusStore times and traces every status store operation.
type measuredStatusStore struct {
	next statusStore
	obs  storeObserver
}

func (s measuredStatusStore) put(ctx context.Context, st taskStatus, ttl time.Duration) error {
	return observeErr(ctx, s.obs, "put_status", func(ctx context.Context) error { return s.next.put(ctx, st, ttl) })
}

func (s measuredStatusStore) get(ctx context.Context, taskID string) (taskStatus, error) {
	return observe(ctx, s.obs, "get_status", func(ctx context.Context) (taskStatus, error) { return s.next.get(ctx, taskID) }, errStatusNotFound)
}

func (s measuredStatusStore) deletePending(ctx context.Context, taskID, owner string) error {
	return observeErr(ctx, s.obs, "delete_pending", func(ctx context.Context) error { return s.next.deletePending(ctx, taskID, owner) })
}

func (s measuredStatusStore) listLive(ctx context.Context, q taskQuery) (taskPage, error) {
	return observe(ctx, s.obs, "list_live", func(ctx context.Context) (taskPage, error) { return s.next.listLive(ctx, q) })
}

// measuredKeyStore times and traces every idempotency key operation.
type measuredKeyStore struct {
	next keyStore
	obs  storeObserver
}

func (s measuredKeyStore) reserveKey(ctx context.Context, key, value string, ttl time.Duration) (string, error) {
	return observe(ctx, s.obs, "reserve_key", func(ctx context.Context) (string, error) { return s.next.reserveKey(ctx, key, value, ttl) })
}

func (s measuredKeyStore) swapKey(ctx context.Context, key, old, value string) (bool, error) {
	return observe(ctx, s.obs, "swap_key", func(ctx context.Context) (bool, error) { return s.next.swapKey(ctx, key, old, value) })
}

func (s measuredKeyStore) getKey(ctx context.Context, key string) (string, error) {
	return observe(ctx, s.obs, "get_key", func(ctx context.Context) (string, error) { return s.next.getKey(ctx, key) })
}

// documentStore is what mongoStore and memoryStore both are: the items
// collection and the result store.
type documentStore interface {
	itemStore
	resultStore
	reportSource
}

// measuredDocumentStore times and traces every item and result store
// operation.
type measuredDocumentStore struct {
	next documentStore
	obs  storeObserver
}

func (s measuredDocumentStore) createItem(ctx context.Context, it item) (item, error) {
	return observe(ctx, s.obs, "create_item", func(ctx context.Context) (item, error) { return s.next.createItem(ctx, it) })
}

func (s measuredDocumentStore) importBase(ctx context.Context, owner, source string, now time.Time) (time.Time, error) {
	return observe(ctx, s.obs, "import_base", func(ctx context.Context) (time.Time, error) { return s.next.importBase(ctx, owner, source, now) })
}

func (s measuredDocumentStore) importItems(ctx context.Context, items []item) (int, error) {
	return observe(ctx, s.obs, "import_items", func(ctx context.Context) (int, error) { return s.next.importItems(ctx, items) })
}

func (s measuredDocumentStore) monthItems(ctx context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportItem)) error {
	_, err := observe(ctx, s.obs, "month_items", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, s.next.monthItems(ctx, owner, userID, from, to, each)
	})
	return err
}

func (s measuredDocumentStore) monthTasks(ctx context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportTask)) error {
	_, err := observe(ctx, s.obs, "month_tasks", func(ctx context.Context) (struct{}, error) {
		return struct{}{}, s.next.monthTasks(ctx, owner, userID, from, to, each)
	})
	return err
}

func (s measuredDocumentStore) listItems(ctx context.Context, owner string, skip, limit int) ([]item, error) {
	return observe(ctx, s.obs, "list_items", func(ctx context.Context) ([]item, error) { return s.next.listItems(ctx, owner, skip, limit) })
}

func (s measuredDocumentStore) getItem(ctx context.Context, owner, id string) (item, error) {
	return observe(ctx, s.obs, "get_item", func(ctx context.Context) (item, error) { return s.next.getItem(ctx, owner, id) }, errNotFound, errInvalidID)
}

func (s measuredDocumentStore) updateItem(ctx context.Context, owner, id string, u itemUpdate, now time.Time) (item, error) {
	return observe(ctx, s.obs, "update_item", func(ctx context.Context) (item, error) { return s.next.updateItem(ctx, owner, id, u, now) }, errNotFound, errInvalidID)
}

func (s measuredDocumentStore) deleteItem(ctx context.Context, owner, id string) error {
	return observeErr(ctx, s.obs, "delete_item", func(ctx context.Context) error { return s.next.deleteItem(ctx, owner, id) }, errNotFound, errInvalidID)
}

func (s measuredDocumentStore) saveResult(ctx context.Context, r taskRecord) (taskRecord, error) {
	return observe(ctx, s.obs, "save_result", func(ctx context.Context) (taskRecord, error) { return s.next.saveResult(ctx, r) })
}

func (s measuredDocumentStore) getResult(ctx context.Context, taskID string) (taskRecord, error) {
	return observe(ctx, s.obs, "get_result", func(ctx context.Context) (taskRecord, error) { return s.next.getResult(ctx, taskID) }, errNotFound)
}

func (s measuredDocumentStore) listFinished(ctx context.Context, q taskQuery) (taskPage, error) {
	return observe(ctx, s.obs, "list_results", func(ctx context.Context) (taskPage, error) { return s.next.listFinished(ctx, q) })
}
