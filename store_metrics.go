package main

import (
	"context"
	"time"
)

// measuredStatusStore times every status store operation.
type measuredStatusStore struct {
	next  statusStore
	store string
	m     *metrics
}

func (s measuredStatusStore) put(ctx context.Context, st taskStatus, ttl time.Duration) error {
	start := time.Now()
	err := s.next.put(ctx, st, ttl)
	s.m.observeStore(s.store, "put_status", start, err)
	return err
}

func (s measuredStatusStore) get(ctx context.Context, taskID string) (taskStatus, error) {
	start := time.Now()
	st, err := s.next.get(ctx, taskID)
	s.m.observeStore(s.store, "get_status", start, err, errStatusNotFound)
	return st, err
}

func (s measuredStatusStore) deletePending(ctx context.Context, taskID string) error {
	start := time.Now()
	err := s.next.deletePending(ctx, taskID)
	s.m.observeStore(s.store, "delete_pending", start, err)
	return err
}

func (s measuredStatusStore) reserveKey(ctx context.Context, key, value string, ttl time.Duration) (string, error) {
	start := time.Now()
	out, err := s.next.reserveKey(ctx, key, value, ttl)
	s.m.observeStore(s.store, "reserve_key", start, err)
	return out, err
}

func (s measuredStatusStore) releaseKey(ctx context.Context, key, value string) error {
	start := time.Now()
	err := s.next.releaseKey(ctx, key, value)
	s.m.observeStore(s.store, "release_key", start, err)
	return err
}

func (s measuredStatusStore) ping(ctx context.Context) error { return s.next.ping(ctx) }

// measuredDocumentStore times every item and result store operation.
type measuredDocumentStore struct {
	next interface {
		itemStore
		resultStore
	}
	store string
	m     *metrics
}

func (s measuredDocumentStore) createItem(ctx context.Context, it item) (item, error) {
	start := time.Now()
	out, err := s.next.createItem(ctx, it)
	s.m.observeStore(s.store, "create_item", start, err)
	return out, err
}

func (s measuredDocumentStore) listItems(ctx context.Context, skip, limit int) ([]item, error) {
	start := time.Now()
	out, err := s.next.listItems(ctx, skip, limit)
	s.m.observeStore(s.store, "list_items", start, err)
	return out, err
}

func (s measuredDocumentStore) getItem(ctx context.Context, id string) (item, error) {
	start := time.Now()
	out, err := s.next.getItem(ctx, id)
	s.m.observeStore(s.store, "get_item", start, err, errNotFound, errInvalidID)
	return out, err
}

func (s measuredDocumentStore) updateItem(ctx context.Context, id string, u itemUpdate, now time.Time) (item, error) {
	start := time.Now()
	out, err := s.next.updateItem(ctx, id, u, now)
	s.m.observeStore(s.store, "update_item", start, err, errNotFound, errInvalidID)
	return out, err
}

func (s measuredDocumentStore) deleteItem(ctx context.Context, id string) error {
	start := time.Now()
	err := s.next.deleteItem(ctx, id)
	s.m.observeStore(s.store, "delete_item", start, err, errNotFound, errInvalidID)
	return err
}

func (s measuredDocumentStore) saveResult(ctx context.Context, r taskRecord) (taskRecord, error) {
	start := time.Now()
	out, err := s.next.saveResult(ctx, r)
	s.m.observeStore(s.store, "save_result", start, err)
	return out, err
}

func (s measuredDocumentStore) getResult(ctx context.Context, taskID string) (taskRecord, error) {
	start := time.Now()
	out, err := s.next.getResult(ctx, taskID)
	s.m.observeStore(s.store, "get_result", start, err, errNotFound)
	return out, err
}

func (s measuredDocumentStore) listResults(ctx context.Context, f resultFilter, skip, limit int) ([]taskRecord, error) {
	start := time.Now()
	out, err := s.next.listResults(ctx, f, skip, limit)
	s.m.observeStore(s.store, "list_results", start, err)
	return out, err
}

func (s measuredDocumentStore) ping(ctx context.Context) error { return s.next.ping(ctx) }
