package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Item creates, reads and deletes by id are batched like result writes
// (on MongoDB; on FerretDB each is served alone, see inspectServer): under
// load one InsertMany, or one find on _id $in, serves many requests, and
// a MongoDB server's cost is far more per operation than per document.
// At low load a batch is one request and adds no delay. Each kind has one
// batching goroutine: while its batch is in flight the next gathers, so
// batches grow with the load; a second goroutine would halve the batches
// and cost more CPU per request (docs/performance.md, "Item batches").
const (
	itemBatchers = 1
	maxItemBatch = 64
)

type mongoItem struct {
	ID          bson.ObjectID  `bson:"_id"`
	Name        string         `bson:"name"`
	Description *string        `bson:"description"`
	Metadata    map[string]any `bson:"metadata"`
	Owner       string         `bson:"owner,omitempty"`
	CreatedAt   time.Time      `bson:"created_at"`
	UpdatedAt   time.Time      `bson:"updated_at"`
}

func (m mongoItem) item() item {
	md := m.Metadata
	if md == nil {
		md = map[string]any{}
	}
	return item{ID: m.ID.Hex(), Name: m.Name, Description: m.Description, Metadata: md, Owner: m.Owner, CreatedAt: m.CreatedAt.UTC(), UpdatedAt: m.UpdatedAt.UTC()}
}

func (s *mongoStore) createItem(ctx context.Context, it item) (item, error) {
	doc := mongoItem{ID: bson.NewObjectID(), Name: it.Name, Description: it.Description, Metadata: it.Metadata, Owner: it.Owner,
		CreatedAt: mongoTime(it.CreatedAt), UpdatedAt: mongoTime(it.UpdatedAt)}
	if doc.Metadata == nil {
		doc.Metadata = map[string]any{}
	}
	if _, err := s.itemWriter.do(ctx, doc); err != nil {
		return item{}, fmt.Errorf("mongodb: insert item: %w", err)
	}
	return doc.item(), nil
}

// insertItems stores a batch of new items with one unordered InsertMany
// (of one document when the item is served alone).
func (s *mongoStore) insertItems(ctx context.Context, batch []mongoItem) []batchOutcome[struct{}] {
	// A batch of several callers has none of their contexts (see
	// batcher.serve): its own deadline bounds it.
	ctx, cancel := context.WithTimeout(ctx, mongoOpTimeout)
	defer cancel()
	out := make([]batchOutcome[struct{}], len(batch))
	for i, err := range insertEach(ctx, s.items, batch) {
		out[i].err = err
	}
	return out
}

// mongoImport records when an import of a source began. Its _id is a
// digest of the owner and the source: neither may be a key as it is.
type mongoImport struct {
	ID        string    `bson:"_id"`
	Owner     string    `bson:"owner"`
	Source    string    `bson:"source"`
	StartedAt time.Time `bson:"started_at"`
}

func (s *mongoStore) importBase(ctx context.Context, owner, source string, now time.Time) (time.Time, error) {
	now = mongoTime(now)
	key := sha256.Sum256([]byte(owner + "\x00" + source))
	doc := mongoImport{ID: hex.EncodeToString(key[:]), Owner: owner, Source: source, StartedAt: now}
	_, err := s.imports.InsertOne(ctx, doc)
	if err == nil {
		return now, nil
	}
	if !mongo.IsDuplicateKeyError(err) {
		return time.Time{}, fmt.Errorf("mongodb: record the import: %w", err)
	}
	var first mongoImport
	if err := s.imports.FindOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}).Decode(&first); err != nil {
		return time.Time{}, fmt.Errorf("mongodb: read the import: %w", err)
	}
	return first.StartedAt, nil
}

// duplicateKey is MongoDB's error code for an _id (or unique key) that is
// taken.
const duplicateKey = 11000

// importItems inserts the items with one unordered InsertMany: those
// whose _id is taken (a row of an import that ran before) fail alone
// with a duplicate key and are left as they are.
func (s *mongoStore) importItems(ctx context.Context, items []item) (int, error) {
	docs := make([]any, len(items))
	for i, it := range items {
		oid, err := bson.ObjectIDFromHex(it.ID)
		if err != nil {
			return 0, fmt.Errorf("item id %q: %w", it.ID, err)
		}
		md := it.Metadata
		if md == nil {
			md = map[string]any{}
		}
		docs[i] = mongoItem{ID: oid, Name: it.Name, Description: it.Description, Metadata: md, Owner: it.Owner,
			CreatedAt: mongoTime(it.CreatedAt), UpdatedAt: mongoTime(it.UpdatedAt)}
	}
	ctx, cancel := context.WithTimeout(ctx, mongoOpTimeout)
	defer cancel()
	res, err := s.items.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	switch {
	case err == nil:
		return len(res.InsertedIDs), nil
	case errors.As(err, &bwe) && bwe.WriteConcernError == nil:
		for _, we := range bwe.WriteErrors {
			if we.Code != duplicateKey {
				return 0, fmt.Errorf("mongodb: import items: %w", err)
			}
		}
		return len(items) - len(bwe.WriteErrors), nil
	default:
		return 0, fmt.Errorf("mongodb: import items: %w", err)
	}
}

func (s *mongoStore) listItems(ctx context.Context, owner string, skip, limit int) ([]item, error) {
	opts := options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetSkip(int64(skip)).SetLimit(int64(limit))
	out, err := findAll(ctx, s.items, ownerFilter(owner), opts, mongoItem.item)
	if err != nil {
		return nil, fmt.Errorf("mongodb: list items: %w", err)
	}
	return out, nil
}

func (s *mongoStore) getItem(ctx context.Context, owner, id string) (item, error) {
	oid, err := itemObjectID(id)
	if err != nil {
		return item{}, err
	}
	doc, err := s.itemReader.do(ctx, oid)
	if errors.Is(err, errNotFound) || (err == nil && !ownedBy(doc.Owner, owner)) {
		return item{}, errNotFound
	}
	if err != nil {
		return item{}, fmt.Errorf("mongodb: get item %s: %w", id, err)
	}
	return doc.item(), nil
}

// findItems reads a batch of items by id: several with one find on _id
// $in, a lone one by _id equality. MongoDB serves both from its index (on
// FerretDB, where $in reads the whole collection, every read is served
// alone: see inspectServer).
func (s *mongoStore) findItems(ctx context.Context, ids []bson.ObjectID) []batchOutcome[mongoItem] {
	ctx, cancel := context.WithTimeout(ctx, mongoOpTimeout)
	defer cancel()
	out := make([]batchOutcome[mongoItem], len(ids))
	if len(ids) == 1 {
		out[0].resp, out[0].err = s.findItem(ctx, ids[0])
		return out
	}
	found, err := s.findItemsByID(ctx, ids)
	for i, id := range ids {
		doc, ok := found[id]
		switch {
		case err != nil:
			out[i].err = err
		case !ok:
			out[i].err = errNotFound
		default:
			out[i].resp = doc
		}
	}
	return out
}

func (s *mongoStore) findItem(ctx context.Context, id bson.ObjectID) (mongoItem, error) {
	var doc mongoItem
	err := s.items.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		err = errNotFound
	}
	return doc, err
}

func (s *mongoStore) findItemsByID(ctx context.Context, ids []bson.ObjectID) (map[bson.ObjectID]mongoItem, error) {
	cur, err := s.items.Find(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: ids}}}})
	if err != nil {
		return nil, err
	}
	var docs []mongoItem
	if err := cur.All(ctx, &docs); err != nil {
		return nil, err
	}
	found := make(map[bson.ObjectID]mongoItem, len(docs))
	for _, d := range docs {
		found[d.ID] = d
	}
	return found, nil
}

func (s *mongoStore) updateItem(ctx context.Context, owner, id string, u itemUpdate, now time.Time) (item, error) {
	oid, err := itemObjectID(id)
	if err != nil {
		return item{}, err
	}
	set := bson.D{{Key: "updated_at", Value: mongoTime(now)}}
	if u.Name != nil {
		set = append(set, bson.E{Key: "name", Value: *u.Name})
	}
	if u.Description != nil {
		set = append(set, bson.E{Key: "description", Value: *u.Description})
	}
	if u.Metadata != nil {
		set = append(set, bson.E{Key: "metadata", Value: u.Metadata})
	}
	var doc mongoItem
	err = s.items.FindOneAndUpdate(ctx, append(bson.D{{Key: "_id", Value: oid}}, ownerFilter(owner)...), bson.D{{Key: "$set", Value: set}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return item{}, errNotFound
	}
	if err != nil {
		return item{}, fmt.Errorf("mongodb: update item %s: %w", id, err)
	}
	return doc.item(), nil
}

// itemDelete is one request to delete an item, by its owner.
type itemDelete struct {
	id    bson.ObjectID
	owner string
}

func (s *mongoStore) deleteItem(ctx context.Context, owner, id string) error {
	oid, err := itemObjectID(id)
	if err != nil {
		return err
	}
	_, err = s.itemDeleter.do(ctx, itemDelete{id: oid, owner: owner})
	if errors.Is(err, errNotFound) {
		return errNotFound
	}
	if err != nil {
		return fmt.Errorf("mongodb: delete item %s: %w", id, err)
	}
	return nil
}

// deleteItems deletes a batch of items by id and tells each request
// whether its item was there. A lone delete is one DeleteOne. Several
// are one find on _id $in, which tells which items exist, and one
// DeleteMany of those: a delete reports only how many documents went, not
// which. An id asked twice in a batch is deleted by the first request;
// the later ones find it gone, as they would one after the other.
//
// Only an errand in another process deleting one of these items between
// the find and the DeleteMany (the delete then removes fewer than were
// found) can make both its request and this one answer deleted; within
// one process deletes are served one batch at a time.
func (s *mongoStore) deleteItems(ctx context.Context, reqs []itemDelete) []batchOutcome[struct{}] {
	ctx, cancel := context.WithTimeout(ctx, mongoOpTimeout)
	defer cancel()
	out := make([]batchOutcome[struct{}], len(reqs))
	if len(reqs) == 1 {
		out[0].err = s.deleteOneItem(ctx, reqs[0])
		return out
	}
	ids := make([]bson.ObjectID, len(reqs))
	for i, r := range reqs {
		ids[i] = r.id
	}
	found, err := s.findItemsByID(ctx, ids)
	// The first request for an item that may delete it claims it; a repeat
	// finds it gone, and another owner's request finds nothing.
	claimed := make([]bool, len(reqs))
	var gone []bson.ObjectID
	for i, r := range reqs {
		if doc, there := found[r.id]; there && ownedBy(doc.Owner, r.owner) {
			claimed[i] = true
			gone = append(gone, r.id)
			delete(found, r.id)
		}
	}
	if err == nil && len(gone) > 0 {
		_, err = s.items.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: gone}}}})
	}
	for i := range reqs {
		switch {
		case err != nil:
			out[i].err = err
		case !claimed[i]:
			out[i].err = errNotFound
		}
	}
	return out
}

func (s *mongoStore) deleteOneItem(ctx context.Context, r itemDelete) error {
	res, err := s.items.DeleteOne(ctx, append(bson.D{{Key: "_id", Value: r.id}}, ownerFilter(r.owner)...))
	if err == nil && res.DeletedCount == 0 {
		err = errNotFound
	}
	return err
}
