package main

import (
	"context"
	"errand/tasks"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// memoryStore is the embedded default's itemStore and resultStore. Items
// are ordered by ObjectId like MongoDB's _id, so "newest first" means the
// same in both.
type memoryStore struct {
	mu      sync.RWMutex
	items   map[bson.ObjectID]item
	results map[string]taskRecord
	imports map[importKey]time.Time
}

// importKey names an import: its owner and its source.
type importKey struct{ owner, source string }

func newMemoryStore() *memoryStore {
	return &memoryStore{items: map[bson.ObjectID]item{}, results: map[string]taskRecord{}, imports: map[importKey]time.Time{}}
}

func (s *memoryStore) ping(context.Context) error { return nil }

func (s *memoryStore) createItem(_ context.Context, it item) (item, error) {
	oid := bson.NewObjectID()
	it.ID = oid.Hex()
	it.CreatedAt, it.UpdatedAt = mongoTime(it.CreatedAt), mongoTime(it.UpdatedAt)
	if it.Metadata == nil {
		it.Metadata = map[string]any{}
	}
	s.mu.Lock()
	s.items[oid] = it
	s.mu.Unlock()
	return it, nil
}

func (s *memoryStore) importBase(_ context.Context, owner, source string, now time.Time) (time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := importKey{owner, source}
	if base, ok := s.imports[k]; ok {
		return base, nil
	}
	s.imports[k] = mongoTime(now)
	return s.imports[k], nil
}

func (s *memoryStore) importItems(_ context.Context, items []item) (int, error) {
	oids := make([]bson.ObjectID, len(items))
	for i, it := range items {
		oid, err := bson.ObjectIDFromHex(it.ID)
		if err != nil {
			return 0, fmt.Errorf("item id %q: %w", it.ID, err)
		}
		oids[i] = oid
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	added := 0
	for i, it := range items {
		if _, stored := s.items[oids[i]]; stored {
			continue
		}
		it.CreatedAt, it.UpdatedAt = mongoTime(it.CreatedAt), mongoTime(it.UpdatedAt)
		if it.Metadata == nil {
			it.Metadata = map[string]any{}
		}
		s.items[oids[i]] = it
		added++
	}
	return added, nil
}

func (s *memoryStore) monthItems(_ context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportItem)) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, it := range s.items {
		if !ownedBy(it.Owner, owner) || it.CreatedAt.Before(from) || !it.CreatedAt.Before(to) || !isUserID(it.Metadata["user_id"], userID) {
			continue
		}
		category, _ := it.Metadata["category"].(string)
		each(tasks.ReportItem{CreatedAt: it.CreatedAt, Category: category})
	}
	return nil
}

func (s *memoryStore) monthTasks(_ context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportTask)) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, r := range s.results {
		if !ownedBy(r.Owner, owner) || r.CreatedAt.Before(from) || !r.CreatedAt.Before(to) || !isUserID(r.Args["user_id"], userID) {
			continue
		}
		each(r.reportTask())
	}
	return nil
}

func (s *memoryStore) listItems(_ context.Context, owner string, skip, limit int) ([]item, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ids := slices.SortedFunc(maps.Keys(s.items), func(a, b bson.ObjectID) int { return -compareObjectIDs(a, b) })
	out := []item{}
	for _, id := range ids {
		if it := s.items[id]; ownedBy(it.Owner, owner) {
			if skip > 0 {
				skip--
				continue
			}
			if len(out) == limit {
				break
			}
			out = append(out, it)
		}
	}
	return out, nil
}

func compareObjectIDs(a, b bson.ObjectID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

func (s *memoryStore) getItem(_ context.Context, owner, id string) (item, error) {
	oid, err := itemObjectID(id)
	if err != nil {
		return item{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	it, ok := s.items[oid]
	if !ok || !ownedBy(it.Owner, owner) {
		return item{}, errNotFound
	}
	return it, nil
}

func (s *memoryStore) updateItem(_ context.Context, owner, id string, u itemUpdate, now time.Time) (item, error) {
	oid, err := itemObjectID(id)
	if err != nil {
		return item{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.items[oid]
	if !ok || !ownedBy(it.Owner, owner) {
		return item{}, errNotFound
	}
	if u.Name != nil {
		it.Name = *u.Name
	}
	if u.Description != nil {
		it.Description = u.Description
	}
	if u.Metadata != nil {
		it.Metadata = u.Metadata
	}
	it.UpdatedAt = mongoTime(now)
	s.items[oid] = it
	return it, nil
}

func (s *memoryStore) deleteItem(_ context.Context, owner, id string) error {
	oid, err := itemObjectID(id)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if it, ok := s.items[oid]; !ok || !ownedBy(it.Owner, owner) {
		return errNotFound
	}
	delete(s.items, oid)
	return nil
}

func (s *memoryStore) saveResult(_ context.Context, r taskRecord) (taskRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if saved, ok := s.results[r.TaskID]; ok {
		return saved, nil
	}
	// Its times as MongoDB keeps them, so both stores answer alike.
	r = newMongoTaskRecord(r).record()
	s.results[r.TaskID] = r
	return r, nil
}

func (s *memoryStore) listFinished(_ context.Context, q taskQuery) (taskPage, error) {
	s.mu.RLock()
	var all []taskStatus
	for _, r := range s.results {
		if st := r.status(); q.matches(st) {
			all = append(all, st)
		}
	}
	s.mu.RUnlock()
	return pageOf(all, q), nil
}

func (s *memoryStore) getResult(_ context.Context, taskID string) (taskRecord, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.results[taskID]
	if !ok {
		return taskRecord{}, errNotFound
	}
	return r, nil
}
