package main

import (
	"context"
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
	statusOps   = []string{"put_status", "get_status", "delete_pending", "reserve_key", "swap_key", "get_key"}
	documentOps = []string{"create_item", "list_items", "get_item", "update_item", "delete_item", "save_result", "get_result", "list_results"}
)

func newStoreObserver(store string, m *metrics, tracer trace.Tracer, ops ...string) storeObserver {
	for _, op := range ops {
		m.storeErrors.WithLabelValues(store, op)
	}
	return storeObserver{store: store, m: m, tracer: tracer}
}

// start begins one operation; the returned function ends it with its
// error. Errors listed in notFound are answers, not failures.
func (o storeObserver) start(ctx context.Context, op string) (context.Context, func(err error, notFound ...error)) {
	begin := time.Now()
	ctx, span := o.tracer.Start(ctx, o.store+" "+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("db.system.name", o.store), attribute.String("db.operation.name", op)))
	return ctx, func(err error, notFound ...error) {
		defer span.End()
		o.m.storeDuration.WithLabelValues(o.store, op).Observe(time.Since(begin).Seconds())
		if err == nil {
			return
		}
		for _, nf := range notFound {
			if errors.Is(err, nf) {
				return
			}
		}
		span.SetStatus(codes.Error, err.Error())
		o.m.storeErrors.WithLabelValues(o.store, op).Inc()
	}
}

// measuredStatusStore times and traces every status store operation.
type measuredStatusStore struct {
	next statusStore
	obs  storeObserver
}

func (s measuredStatusStore) put(ctx context.Context, st taskStatus, ttl time.Duration) error {
	ctx, end := s.obs.start(ctx, "put_status")
	err := s.next.put(ctx, st, ttl)
	end(err)
	return err
}

func (s measuredStatusStore) get(ctx context.Context, taskID string) (taskStatus, error) {
	ctx, end := s.obs.start(ctx, "get_status")
	st, err := s.next.get(ctx, taskID)
	end(err, errStatusNotFound)
	return st, err
}

func (s measuredStatusStore) deletePending(ctx context.Context, taskID string) error {
	ctx, end := s.obs.start(ctx, "delete_pending")
	err := s.next.deletePending(ctx, taskID)
	end(err)
	return err
}

func (s measuredStatusStore) reserveKey(ctx context.Context, key, value string, ttl time.Duration) (string, error) {
	ctx, end := s.obs.start(ctx, "reserve_key")
	out, err := s.next.reserveKey(ctx, key, value, ttl)
	end(err)
	return out, err
}

func (s measuredStatusStore) swapKey(ctx context.Context, key, old, value string) (bool, error) {
	ctx, end := s.obs.start(ctx, "swap_key")
	ok, err := s.next.swapKey(ctx, key, old, value)
	end(err)
	return ok, err
}

func (s measuredStatusStore) getKey(ctx context.Context, key string) (string, error) {
	ctx, end := s.obs.start(ctx, "get_key")
	v, err := s.next.getKey(ctx, key)
	end(err)
	return v, err
}

func (s measuredStatusStore) ping(ctx context.Context) error { return s.next.ping(ctx) }

// measuredDocumentStore times and traces every item and result store
// operation.
type measuredDocumentStore struct {
	next interface {
		itemStore
		resultStore
	}
	obs storeObserver
}

func (s measuredDocumentStore) createItem(ctx context.Context, it item) (item, error) {
	ctx, end := s.obs.start(ctx, "create_item")
	out, err := s.next.createItem(ctx, it)
	end(err)
	return out, err
}

func (s measuredDocumentStore) listItems(ctx context.Context, skip, limit int) ([]item, error) {
	ctx, end := s.obs.start(ctx, "list_items")
	out, err := s.next.listItems(ctx, skip, limit)
	end(err)
	return out, err
}

func (s measuredDocumentStore) getItem(ctx context.Context, id string) (item, error) {
	ctx, end := s.obs.start(ctx, "get_item")
	out, err := s.next.getItem(ctx, id)
	end(err, errNotFound, errInvalidID)
	return out, err
}

func (s measuredDocumentStore) updateItem(ctx context.Context, id string, u itemUpdate, now time.Time) (item, error) {
	ctx, end := s.obs.start(ctx, "update_item")
	out, err := s.next.updateItem(ctx, id, u, now)
	end(err, errNotFound, errInvalidID)
	return out, err
}

func (s measuredDocumentStore) deleteItem(ctx context.Context, id string) error {
	ctx, end := s.obs.start(ctx, "delete_item")
	err := s.next.deleteItem(ctx, id)
	end(err, errNotFound, errInvalidID)
	return err
}

func (s measuredDocumentStore) saveResult(ctx context.Context, r taskRecord) (taskRecord, error) {
	ctx, end := s.obs.start(ctx, "save_result")
	out, err := s.next.saveResult(ctx, r)
	end(err)
	return out, err
}

func (s measuredDocumentStore) getResult(ctx context.Context, taskID string) (taskRecord, error) {
	ctx, end := s.obs.start(ctx, "get_result")
	out, err := s.next.getResult(ctx, taskID)
	end(err, errNotFound)
	return out, err
}

func (s measuredDocumentStore) listResults(ctx context.Context, f resultFilter, skip, limit int) ([]taskRecord, error) {
	ctx, end := s.obs.start(ctx, "list_results")
	out, err := s.next.listResults(ctx, f, skip, limit)
	end(err)
	return out, err
}

func (s measuredDocumentStore) ping(ctx context.Context) error { return s.next.ping(ctx) }
