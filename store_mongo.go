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
	// imports remembers when each import of a file began (see importBase).
	imports *mongo.Collection

	// resultWriter groups concurrent saves into InsertMany calls.
	resultWriter *batcher[mongoTaskRecord, taskRecord]
	// itemWriter and itemReader group concurrent item creates into
	// InsertMany calls and concurrent reads by id into one find each.
	itemWriter *batcher[mongoItem, struct{}]
	itemReader *batcher[bson.ObjectID, mongoItem]
	// itemDeleter groups concurrent deletes by id into one find and one
	// delete. It has one goroutine, so that in one process batches
	// never overlap and two deletes of one item cannot both find it.
	itemDeleter *batcher[itemDelete, struct{}]
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
// more operations in flight, not more, so the excess waits in errand for
// a connection instead (docs/performance.md, "MongoDB connection pool").
const mongoMaxPoolSize = 16

// connectMongo opens a client with opts: mongoClientOptions, to which
// tests add monitors.
func connectMongo(opts *options.ClientOptions, database string) (*mongoStore, error) {
	client, err := mongo.Connect(opts)
	if err != nil {
		return nil, fmt.Errorf("connect mongodb: %w", err)
	}
	db := client.Database(database)
	s := &mongoStore{client: client, items: db.Collection("items"), results: db.Collection("task_results"), imports: db.Collection("item_imports")}
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

// ownerFilter selects the documents owner may see: all of them for the
// empty owner (no API keys), else its own.
func ownerFilter(owner string) bson.D {
	if owner == "" {
		return bson.D{}
	}
	return bson.D{{Key: "owner", Value: owner}}
}

// findAll reads every document filter and opts select, each decoded as a
// Doc and converted by convert.
func findAll[Doc, Out any](ctx context.Context, coll *mongo.Collection, filter any, opts *options.FindOptionsBuilder, convert func(Doc) Out) ([]Out, error) {
	cur, err := coll.Find(ctx, filter, opts)
	if err != nil {
		return nil, err
	}
	var docs []Doc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("read documents: %w", err)
	}
	out := make([]Out, len(docs))
	for i, d := range docs {
		out[i] = convert(d)
	}
	return out, nil
}

// inspectServer asks the server what it is, and sets oneByOne for
// FerretDB, where item batches cost more than they save: FerretDB 1.x
// answers _id $in by reading the whole collection, so a batched read or
// delete costs more than single ones past a few hundred items, and its
// multi-row INSERTs leave its PostgreSQL table growing. On MongoDB a batch
// is served from the _id index at any size. docs/performance.md, "Items
// on FerretDB", has the measurements. FerretDB built into another program
// reports its version as "unknown", so any FerretDB counts.
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

// ensureIndexes creates the indexes listings and reports need: results by
// owner and age, by owner, state and age, and by user and age; items by
// owner, and by user and age; then drops those of earlier versions that
// these replace. A
// server that cannot build them (FerretDB lacks some index kinds) only
// makes those listings slower, so failure is reported, not fatal.
func (s *mongoStore) ensureIndexes(ctx context.Context) error {
	_, err := s.results.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "owner", Value: 1}, {Key: "created_at", Value: -1}, {Key: "_id", Value: -1}},
	})
	if err != nil {
		return fmt.Errorf("mongodb: create task_results index: %w", err)
	}
	// A listing of one state (the console's failures, say) reads the
	// owner's tasks in it newest first, however rare the state is.
	_, err = s.results.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "owner", Value: 1}, {Key: "status", Value: 1}, {Key: "created_at", Value: -1}, {Key: "_id", Value: -1}},
	})
	if err != nil {
		return fmt.Errorf("mongodb: create task_results index: %w", err)
	}
	_, err = s.items.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "owner", Value: 1}, {Key: "_id", Value: -1}},
	})
	if err != nil {
		return fmt.Errorf("mongodb: create items index: %w", err)
	}
	// A monthly report reads one user's items and finished tasks of a
	// month.
	_, err = s.items.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "metadata.user_id", Value: 1}, {Key: "created_at", Value: 1}},
	})
	if err != nil {
		return fmt.Errorf("mongodb: create items index: %w", err)
	}
	_, err = s.results.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "args.user_id", Value: 1}, {Key: "created_at", Value: 1}},
	})
	if err != nil {
		return fmt.Errorf("mongodb: create task_results index: %w", err)
	}
	return s.dropReplacedIndexes(ctx)
}

// replacedResultIndexes are indexes earlier versions made on task_results
// that others now serve: every result insert would pay for them too.
var replacedResultIndexes = []string{
	// By state across owners; listings filter by owner first.
	"status_1_completed_at_-1",
}

// mongoIndexNotFound is the server's code for dropping an index that is
// not there.
const mongoIndexNotFound = 27

// dropReplacedIndexes drops replacedResultIndexes where an earlier
// version made them.
func (s *mongoStore) dropReplacedIndexes(ctx context.Context) error {
	for _, name := range replacedResultIndexes {
		err := s.results.Indexes().DropOne(ctx, name)
		var serverErr mongo.ServerError
		if err != nil && !(errors.As(err, &serverErr) && serverErr.HasErrorCode(mongoIndexNotFound)) {
			return fmt.Errorf("mongodb: drop replaced task_results index %s: %w", name, err)
		}
	}
	return nil
}

// mongoTime truncates t to what MongoDB stores (milliseconds, UTC), so what
// the API returns equals what a later read returns.
func mongoTime(t time.Time) time.Time { return t.UTC().Truncate(time.Millisecond) }

// mongoTimePtr is mongoTime of an optional time.
func mongoTimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	m := mongoTime(*t)
	return &m
}

// utcPtr is an optional time in UTC.
func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}
