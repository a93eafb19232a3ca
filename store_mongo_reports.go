package main

import (
	"context"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"

	"errand/tasks"
)

// reportQueryTimeout bounds one of a report's reads, which may go
// through a month of a busy user's items.
const reportQueryTimeout = time.Minute

// monthFilter selects owner's documents whose field userField means
// userID, created in [from, to).
func monthFilter(owner, userField, userID string, from, to time.Time) bson.D {
	f := append(ownerFilter(owner),
		bson.E{Key: "created_at", Value: bson.D{{Key: "$gte", Value: from}, {Key: "$lt", Value: to}}})
	if values := userIDValues(userID); len(values) == 1 {
		f = append(f, bson.E{Key: userField, Value: userID})
	} else {
		f = append(f, bson.E{Key: userField, Value: bson.D{{Key: "$in", Value: values}}})
	}
	return f
}

func (s *mongoStore) monthItems(ctx context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportItem)) error {
	var doc struct {
		CreatedAt time.Time `bson:"created_at"`
		Metadata  struct {
			Category any `bson:"category"`
		} `bson:"metadata"`
	}
	err := eachDoc(ctx, s.items, monthFilter(owner, "metadata.user_id", userID, from, to),
		options.Find().SetProjection(bson.D{{Key: "created_at", Value: 1}, {Key: "metadata.category", Value: 1}}),
		&doc, func() {
			category, _ := doc.Metadata.Category.(string)
			each(tasks.ReportItem{CreatedAt: doc.CreatedAt.UTC(), Category: category})
		})
	if err != nil {
		return fmt.Errorf("mongodb: read the month's items: %w", err)
	}
	return nil
}

func (s *mongoStore) monthTasks(ctx context.Context, owner, userID string, from, to time.Time, each func(tasks.ReportTask)) error {
	var doc mongoTaskRecord
	err := eachDoc(ctx, s.results, monthFilter(owner, "args.user_id", userID, from, to),
		options.Find().SetProjection(bson.D{{Key: "task_type", Value: 1}, {Key: "status", Value: 1}, {Key: "created_at", Value: 1},
			{Key: "started_at", Value: 1}, {Key: "completed_at", Value: 1}}),
		&doc, func() { each(doc.record().reportTask()) })
	if err != nil {
		return fmt.Errorf("mongodb: read the month's tasks: %w", err)
	}
	return nil
}

// eachDoc decodes every document filter finds into doc, zeroed first,
// and calls use, without holding the documents in memory.
func eachDoc[Doc any](ctx context.Context, coll *mongo.Collection, filter bson.D, opts *options.FindOptionsBuilder, doc *Doc, use func()) error {
	ctx, cancel := context.WithTimeout(ctx, reportQueryTimeout)
	defer cancel()
	cur, err := coll.Find(ctx, filter, opts)
	if err != nil {
		return err
	}
	defer cur.Close(ctx)
	for cur.Next(ctx) {
		var zero Doc
		*doc = zero
		if err := cur.Decode(doc); err != nil {
			return err
		}
		use()
	}
	return cur.Err()
}
