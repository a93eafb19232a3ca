package main

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// mongoStore keeps items and task results in MongoDB (collections items
// and task_results, as in the guide).
type mongoStore struct {
	client  *mongo.Client
	items   *mongo.Collection
	results *mongo.Collection

	// resultWriter groups concurrent saves into InsertMany calls.
	resultWriter *batcher[mongoTaskRecord, taskRecord]
	// itemWriter and itemReader group concurrent item creates into
	// InsertMany calls and concurrent reads by id into one find each.
	itemWriter *batcher[mongoItem, struct{}]
	itemReader *batcher[bson.ObjectID, mongoItem]
	// itemDeleter groups concurrent deletes by id into one find and one
	// delete. It has one goroutine, so that in one process batches
	// never overlap and two deletes of one item cannot both find it.
	itemDeleter *batcher[bson.ObjectID, struct{}]
	// oneByOne is set when the server is FerretDB (see inspectServer):
	// the item batchers then serve each create, read and delete alone.
	oneByOne atomic.Bool
	// inspected: inspectServer has succeeded once.
	inspected atomic.Bool
}

// mongoClientOptions are the client options for uri; options the URI
// sets itself (maxPoolSize among them) win over errand's defaults. Nested
// documents decode as maps (not bson.D) so item metadata and task results
// come back as JSON objects.
func mongoClientOptions(uri string) *options.ClientOptions {
	opts := options.Client().ApplyURI(uri).
		SetBSONOptions(&options.BSONOptions{DefaultDocumentM: true}).
		SetServerSelectionTimeout(5 * time.Second).
		SetTimeout(mongoOpTimeout)
	if opts.MaxPoolSize == nil {
		opts.SetMaxPoolSize(mongoMaxPoolSize)
	}
	return opts
}

// mongoOpTimeout bounds each MongoDB operation, a batch's included.
const mongoOpTimeout = 10 * time.Second

// mongoMaxPoolSize bounds the connections, and so the operations in
// flight, from one errand process to each MongoDB server (the driver's
// default is 100). Past its saturation point a server does less work with
// more operations in flight, not more: on the local stack, asked for 1,500
// item requests a second from three API processes, the MongoDB-wire
// server answered 147-219 a second, with 2-5 % failing after the
// 10 s timeout, at the default; with 16 it answered 480-580, none
// failing, the excess waiting in errand for a connection instead.
const mongoMaxPoolSize = 16

// connectMongo opens a client with opts: mongoClientOptions, to which
// tests add monitors.
func connectMongo(opts *options.ClientOptions, database string) (*mongoStore, error) {
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connect mongodb: %w", err)
	}
	db := client.Database(database)
	s := &mongoStore{client: client, items: db.Collection("items"), results: db.Collection("task_results")}
	s.resultWriter = newBatcher(resultWriters, maxResultBatch, s.insertResults)
	s.itemWriter = newBatcher(itemBatchers, maxItemBatch, s.insertItems).serveAloneWhen(s.oneByOne.Load)
	s.itemReader = newBatcher(itemBatchers, maxItemBatch, s.findItems).serveAloneWhen(s.oneByOne.Load)
	s.itemDeleter = newBatcher(1, maxItemBatch, s.deleteItems).serveAloneWhen(s.oneByOne.Load)
	return s, nil
}

// close stops the batchers, then disconnects. Their callers must be done
// by then (errand closes stores after the HTTP server and the worker pool).
func (s *mongoStore) close(ctx context.Context) error {
	s.resultWriter.close()
	s.itemWriter.close()
	s.itemReader.close()
	s.itemDeleter.close()
	return s.client.Disconnect(ctx)
}

// Item creates, reads and deletes by id are batched like result writes
// (on MongoDB; on FerretDB each is served alone, see inspectServer): under
// load one InsertMany, or one find on _id $in, serves many requests, and
// a MongoDB server's cost is far more per operation than per document.
// At low load a batch is one request and adds no delay. Each kind has one
// batching goroutine: while its batch is in flight the next gathers, so
// batches grow with the load. With two in flight each batch is about half
// as large, and in alternating runs of the bench harness's items step on
// the MongoDB-wire stand-in the machine spent 842-1,071 µs of CPU an
// item request with two, 820-986 µs with one, at the same p50 and p99.
const (
	itemBatchers = 1
	maxItemBatch = 64
)

// ping checks the server; the first ping that reaches a server errand
// could not inspect at start inspects it.
func (s *mongoStore) ping(ctx context.Context) error {
	if err := s.client.Ping(ctx, nil); err != nil {
		return err
	}
	if !s.inspected.Load() {
		_ = s.inspectServer(ctx) // tried again at the next ping
	}
	return nil
}

type mongoItem struct {
	ID          bson.ObjectID  `bson:"_id"`
	Name        string         `bson:"name"`
	Description *string        `bson:"description"`
	Metadata    map[string]any `bson:"metadata"`
	CreatedAt   time.Time      `bson:"created_at"`
	UpdatedAt   time.Time      `bson:"updated_at"`
}

func (m mongoItem) item() item {
	md := m.Metadata
	if md == nil {
		md = map[string]any{}
	}
	return item{ID: m.ID.Hex(), Name: m.Name, Description: m.Description, Metadata: md, CreatedAt: m.CreatedAt.UTC(), UpdatedAt: m.UpdatedAt.UTC()}
}

func (s *mongoStore) createItem(ctx context.Context, it item) (item, error) {
	doc := mongoItem{ID: bson.NewObjectID(), Name: it.Name, Description: it.Description, Metadata: it.Metadata, CreatedAt: itemTime(it.CreatedAt), UpdatedAt: itemTime(it.UpdatedAt)}
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

// insertEach inserts batch with one unordered InsertMany and returns each
// document's error (nil when it was stored).
func insertEach[Doc any](ctx context.Context, coll *mongo.Collection, batch []Doc) []error {
	docs := make([]any, len(batch))
	for i, doc := range batch {
		docs[i] = doc
	}
	errs := make([]error, len(docs))
	_, err := coll.InsertMany(ctx, docs, options.InsertMany().SetOrdered(false))
	var bwe mongo.BulkWriteException
	switch {
	case err == nil:
	case errors.As(err, &bwe) && bwe.WriteConcernError == nil:
		for _, we := range bwe.WriteErrors {
			if we.Index >= 0 && we.Index < len(errs) {
				errs[we.Index] = we.WriteError
			}
		}
	default:
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
}

func (s *mongoStore) listItems(ctx context.Context, skip, limit int) ([]item, error) {
	opts := options.Find().SetSort(bson.D{{Key: "_id", Value: -1}}).SetSkip(int64(skip)).SetLimit(int64(limit))
	cur, err := s.items.Find(ctx, bson.D{}, opts)
	if err != nil {
		return nil, fmt.Errorf("mongodb: list items: %w", err)
	}
	var docs []mongoItem
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("mongodb: read item list: %w", err)
	}
	out := make([]item, len(docs))
	for i, d := range docs {
		out[i] = d.item()
	}
	return out, nil
}

func (s *mongoStore) getItem(ctx context.Context, id string) (item, error) {
	oid, err := itemObjectID(id)
	if err != nil {
		return item{}, err
	}
	doc, err := s.itemReader.do(ctx, oid)
	if errors.Is(err, errNotFound) {
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

func (s *mongoStore) updateItem(ctx context.Context, id string, u itemUpdate, now time.Time) (item, error) {
	oid, err := itemObjectID(id)
	if err != nil {
		return item{}, err
	}
	set := bson.D{{Key: "updated_at", Value: itemTime(now)}}
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
	err = s.items.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: oid}}, bson.D{{Key: "$set", Value: set}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return item{}, errNotFound
	}
	if err != nil {
		return item{}, fmt.Errorf("mongodb: update item %s: %w", id, err)
	}
	return doc.item(), nil
}

func (s *mongoStore) deleteItem(ctx context.Context, id string) error {
	oid, err := itemObjectID(id)
	if err != nil {
		return err
	}
	_, err = s.itemDeleter.do(ctx, oid)
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
// Measured on the MongoDB-wire stand-in (PostgreSQL) with creates and
// reads batched eight at a time, on a collection of a few dozen items: a
// create-read-delete loop cost the machine 1,370 µs of CPU an item with
// deletes batched eight at a time this way, against 1,850 µs with a
// DeleteOne each. On a larger collection the stand-in's $in scans cost
// more than they save, so there deletes go one by one (inspectServer).
//
// Only an errand in another process deleting one of these items between
// the find and the DeleteMany (the delete then removes fewer than were
// found) can make both its request and this one answer deleted; within
// one process deletes are served one batch at a time.
func (s *mongoStore) deleteItems(ctx context.Context, ids []bson.ObjectID) []batchOutcome[struct{}] {
	ctx, cancel := context.WithTimeout(ctx, mongoOpTimeout)
	defer cancel()
	out := make([]batchOutcome[struct{}], len(ids))
	if len(ids) == 1 {
		out[0].err = s.deleteOneItem(ctx, ids[0])
		return out
	}
	found, err := s.findItemsByID(ctx, ids)
	if err == nil && len(found) > 0 {
		gone := make([]bson.ObjectID, 0, len(found))
		for id := range found {
			gone = append(gone, id)
		}
		_, err = s.items.DeleteMany(ctx, bson.D{{Key: "_id", Value: bson.D{{Key: "$in", Value: gone}}}})
	}
	for i, id := range ids {
		_, there := found[id]
		switch {
		case err != nil:
			out[i].err = err
		case !there:
			out[i].err = errNotFound
		default:
			// The first request for id claims it; a repeat finds it gone.
			delete(found, id)
		}
	}
	return out
}

func (s *mongoStore) deleteOneItem(ctx context.Context, id bson.ObjectID) error {
	res, err := s.items.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err == nil && res.DeletedCount == 0 {
		err = errNotFound
	}
	return err
}

// mongoTaskRecord is a task_results document. Its _id is the task id, which
// is what makes saveResult idempotent: a second insert of the same task
// cannot make a second document.
type mongoTaskRecord struct {
	ID          string         `bson:"_id"`
	TaskID      string         `bson:"task_id"`
	TaskType    string         `bson:"task_type"`
	Status      string         `bson:"status"`
	Result      map[string]any `bson:"result,omitempty"`
	Error       string         `bson:"error,omitempty"`
	Attempts    int            `bson:"attempts,omitempty"`
	CompletedAt time.Time      `bson:"completed_at"`
	Args        map[string]any `bson:"args,omitempty"`
	Priority    string         `bson:"priority,omitempty"`
	Owner       string         `bson:"owner,omitempty"`
	TraceID     string         `bson:"trace_id,omitempty"`
}

func (m mongoTaskRecord) record() taskRecord {
	return taskRecord{TaskID: m.TaskID, TaskType: m.TaskType, Status: m.Status, Result: m.Result, Error: m.Error,
		Attempts: m.Attempts, CompletedAt: m.CompletedAt.UTC(), Args: m.Args, Priority: m.Priority, Owner: m.Owner, TraceID: m.TraceID}
}

// Result writes are batched (see batcher): under load one InsertMany
// stores many results, which is what lets the task path go faster than
// one MongoDB write at a time. Two writers keep one batch filling while
// the other is in flight; more make smaller batches, and every batch has
// a fixed cost on the server (measured on the MongoDB-wire stand-in: four
// writers cost it about a third more CPU per result than one or two).
const (
	resultWriters  = 2
	maxResultBatch = 256
)

// saveResult inserts r with its task id as _id. The insert cannot make a
// second document for a task: a duplicate key means an earlier save won,
// and that document is returned instead.
func (s *mongoStore) saveResult(ctx context.Context, r taskRecord) (taskRecord, error) {
	doc := mongoTaskRecord{ID: r.TaskID, TaskID: r.TaskID, TaskType: r.TaskType, Status: r.Status, Result: r.Result, Error: r.Error,
		Attempts: r.Attempts, CompletedAt: itemTime(r.CompletedAt), Args: r.Args, Priority: r.Priority, Owner: r.Owner, TraceID: r.TraceID}
	saved, err := s.resultWriter.do(ctx, doc)
	if err != nil && ctx.Err() != nil {
		return taskRecord{}, fmt.Errorf("mongodb: save result of %s: %w", r.TaskID, err)
	}
	return saved, err
}

// insertResults stores a batch with one unordered InsertMany and tells
// each document's outcome.
func (s *mongoStore) insertResults(ctx context.Context, batch []mongoTaskRecord) []batchOutcome[taskRecord] {
	// The writers serve callers whose contexts they do not have; each
	// batch gets its own deadline instead.
	ctx, cancel := context.WithTimeout(ctx, mongoOpTimeout)
	defer cancel()
	out := make([]batchOutcome[taskRecord], len(batch))
	for i, err := range insertEach(ctx, s.results, batch) {
		doc := batch[i]
		switch {
		case err == nil:
			out[i].resp = doc.record()
		case mongo.IsDuplicateKeyError(err):
			// Saved before (a redelivery or a duplicate message): the
			// first result stands.
			out[i].resp, out[i].err = s.getResult(ctx, doc.ID)
		default:
			out[i].err = fmt.Errorf("mongodb: save result of %s: %w", doc.ID, err)
		}
	}
	return out
}

func (s *mongoStore) listResults(ctx context.Context, f resultFilter, skip, limit int) ([]taskRecord, error) {
	filter := bson.D{}
	if f.Status != "" {
		filter = append(filter, bson.E{Key: "status", Value: f.Status})
	}
	if f.Owner != "" {
		filter = append(filter, bson.E{Key: "owner", Value: f.Owner})
	}
	opts := options.Find().SetSort(bson.D{{Key: "completed_at", Value: -1}, {Key: "_id", Value: 1}}).SetSkip(int64(skip)).SetLimit(int64(limit))
	cur, err := s.results.Find(ctx, filter, opts)
	if err != nil {
		return nil, fmt.Errorf("mongodb: list results: %w", err)
	}
	var docs []mongoTaskRecord
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("mongodb: read result list: %w", err)
	}
	out := make([]taskRecord, len(docs))
	for i, d := range docs {
		out[i] = d.record()
	}
	return out, nil
}

// inspectServer asks the server what it is, and sets oneByOne for
// FerretDB, where item batches cost more than they save.
//
// Reads and deletes: version 1 pushes only equality filters down to its
// backend and reads the whole collection to answer _id $in. Measured on the
// MongoDB-wire stand-in (FerretDB 1.24 on PostgreSQL): eight items by $in
// took 44 ms from 1,000 items and 733 ms from 20,000, one by _id 1.3 and
// 1.9 ms: at some 40 µs an item scanned, eight lookups by _id cost as
// much as one $in over about 260 items. A batch there saves work only on
// a collection smaller than that, as the bench harness's is, and costs
// far more past it; on MongoDB a batch is served from the _id index at
// any size.
//
// Creates: FerretDB writes an InsertMany as one multi-row INSERT, and on
// the stand-in (PostgreSQL with autovacuum off, as on the bench machine)
// the items table then grew by about 5 MB in each 10 s run of the bench
// harness's items step, to 12 MB after three, against 0.4-0.9 MB with
// one document an insert (measured with InsertOne, the same command). PostgreSQL's CPU per item request grew with it, from
// 296 to 866 µs over the three runs, and errand's rate fell from 2,010
// to 1,160 a second; with InsertOne it held at 1,650-1,960 and 280-300 µs,
// although the stand-in spends some 70 µs more on each single insert.
// With autovacuum on, six runs: InsertMany 983-1,834 a second, falling
// between vacuums; InsertOne 1,346-1,659, flat.
// FerretDB built into another program reports its version as "unknown",
// so any FerretDB counts.
func (s *mongoStore) inspectServer(ctx context.Context) error {
	var info struct {
		FerretDB *string `bson:"ferretdbVersion"`
	}
	if err := s.client.Database("admin").RunCommand(ctx, bson.D{{Key: "buildInfo", Value: 1}}).Decode(&info); err != nil {
		return fmt.Errorf("mongodb: buildInfo: %w", err)
	}
	s.oneByOne.Store(info.FerretDB != nil)
	s.inspected.Store(true)
	return nil
}

// ensureIndexes creates the index that listing results by status needs.
// A server that cannot build it (FerretDB lacks some index kinds) only
// makes those listings slower, so failure is reported, not fatal.
func (s *mongoStore) ensureIndexes(ctx context.Context) error {
	_, err := s.results.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "status", Value: 1}, {Key: "completed_at", Value: -1}},
	})
	if err != nil {
		return fmt.Errorf("mongodb: create task_results index: %w", err)
	}
	return nil
}

func (s *mongoStore) getResult(ctx context.Context, taskID string) (taskRecord, error) {
	var doc mongoTaskRecord
	err := s.results.FindOne(ctx, bson.D{{Key: "_id", Value: taskID}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return taskRecord{}, errNotFound
	}
	if err != nil {
		return taskRecord{}, fmt.Errorf("mongodb: get result of %s: %w", taskID, err)
	}
	return doc.record(), nil
}
