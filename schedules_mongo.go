package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// mongoSchedules keeps schedules in the schedules collection, one
// document each, its _id the owner and the name, and the claims of their
// ticks in schedule_ticks, one document a tick, its _id the schedule's and
// the tick's: inserting it is the claim, which the unique _id lets one
// process make. (An update that checks the schedule's next run would be
// atomic on MongoDB, but not on FerretDB, which updates without a
// transaction.)
type mongoSchedules struct {
	coll  *mongo.Collection
	ticks *mongo.Collection
}

func newMongoSchedules(db *mongo.Database) mongoSchedules {
	return mongoSchedules{coll: db.Collection("schedules"), ticks: db.Collection("schedule_ticks")}
}

type mongoTickClaim struct {
	ID        string    `bson:"_id"`
	Schedule  string    `bson:"schedule"`
	Tick      time.Time `bson:"tick"`
	Fire      bool      `bson:"fire"`
	ClaimedAt time.Time `bson:"claimed_at"`
	TaskID    string    `bson:"task_id,omitempty"`
}

func tickClaimID(id string, tick time.Time) string { return fmt.Sprintf("%s@%d", id, tick.UnixMilli()) }

type mongoSchedule struct {
	ID            string     `bson:"_id"`
	Name          string     `bson:"name"`
	Owner         string     `bson:"owner"`
	Cron          string     `bson:"cron,omitempty"`
	EveryMs       int64      `bson:"every_ms,omitempty"`
	Timezone      string     `bson:"timezone,omitempty"`
	TaskType      string     `bson:"task_type"`
	TaskArgs      string     `bson:"task_args"` // the JSON the task gets, kept as written
	TaskPriority  string     `bson:"task_priority"`
	Paused        bool       `bson:"paused"`
	NextRun       time.Time  `bson:"next_run"`
	LastFiredTick *time.Time `bson:"last_fired_tick,omitempty"`
	LastFiredTask string     `bson:"last_fired_task,omitempty"`
	CreatedAt     time.Time  `bson:"created_at"`
}

func newMongoSchedule(s schedule) mongoSchedule {
	return mongoSchedule{ID: s.id(), Name: s.Name, Owner: s.Owner, Cron: s.Cron, EveryMs: s.Every.Milliseconds(), Timezone: s.Timezone,
		TaskType: s.Task.Type, TaskArgs: string(s.Task.Args), TaskPriority: s.Task.Priority, Paused: s.Paused,
		NextRun: mongoTime(s.NextRun), CreatedAt: mongoTime(s.CreatedAt)}
}

func (m mongoSchedule) schedule() schedule {
	s := schedule{Name: m.Name, Owner: m.Owner, Cron: m.Cron, Every: time.Duration(m.EveryMs) * time.Millisecond, Timezone: m.Timezone,
		Task: taskSpec{Type: m.TaskType, Args: []byte(m.TaskArgs), Priority: m.TaskPriority}, Paused: m.Paused,
		NextRun: m.NextRun.UTC(), CreatedAt: m.CreatedAt.UTC()}
	if m.LastFiredTick != nil {
		s.LastFired = &firedTick{Tick: m.LastFiredTick.UTC(), TaskID: m.LastFiredTask}
	}
	return s
}

func (m mongoSchedules) createSchedule(ctx context.Context, s schedule) error {
	_, err := m.coll.InsertOne(ctx, newMongoSchedule(s))
	if mongo.IsDuplicateKeyError(err) {
		return errScheduleExists
	}
	if err != nil {
		return fmt.Errorf("mongodb: create schedule %s: %w", s.id(), err)
	}
	return nil
}

func (m mongoSchedules) getSchedule(ctx context.Context, owner, name string) (schedule, error) {
	var doc mongoSchedule
	err := m.coll.FindOne(ctx, bson.D{{Key: "_id", Value: scheduleID(owner, name)}}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return schedule{}, errNotFound
	}
	if err != nil {
		return schedule{}, fmt.Errorf("mongodb: get schedule %s: %w", scheduleID(owner, name), err)
	}
	return doc.schedule(), nil
}

func (m mongoSchedules) listSchedules(ctx context.Context, owner string) ([]schedule, error) {
	out, err := findAll(ctx, m.coll, bson.D{{Key: "owner", Value: owner}}, options.Find().SetSort(bson.D{{Key: "name", Value: 1}}), mongoSchedule.schedule)
	if err != nil {
		return nil, fmt.Errorf("mongodb: list schedules: %w", err)
	}
	return out, nil
}

func (m mongoSchedules) deleteSchedule(ctx context.Context, owner, name string) error {
	id := scheduleID(owner, name)
	res, err := m.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}})
	if err != nil {
		return fmt.Errorf("mongodb: delete schedule %s: %w", id, err)
	}
	if res.DeletedCount == 0 {
		return errNotFound
	}
	if _, err := m.ticks.DeleteMany(ctx, bson.D{{Key: "schedule", Value: id}}); err != nil {
		return fmt.Errorf("mongodb: forget the ticks of %s: %w", id, err)
	}
	return nil
}

func (m mongoSchedules) setPaused(ctx context.Context, owner, name string, paused bool, nextRun time.Time) (schedule, error) {
	var doc mongoSchedule
	err := m.coll.FindOneAndUpdate(ctx, bson.D{{Key: "_id", Value: scheduleID(owner, name)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "paused", Value: paused}, {Key: "next_run", Value: mongoTime(nextRun)}}}},
		options.FindOneAndUpdate().SetReturnDocument(options.After)).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return schedule{}, errNotFound
	}
	if err != nil {
		return schedule{}, fmt.Errorf("mongodb: pause schedule %s: %w", scheduleID(owner, name), err)
	}
	return doc.schedule(), nil
}

func (m mongoSchedules) dueSchedules(ctx context.Context, now time.Time) ([]schedule, error) {
	filter := bson.D{{Key: "paused", Value: false}, {Key: "next_run", Value: bson.D{{Key: "$lte", Value: now}}}}
	out, err := findAll(ctx, m.coll, filter, options.Find(), mongoSchedule.schedule)
	if err != nil {
		return nil, fmt.Errorf("mongodb: find due schedules: %w", err)
	}
	return out, nil
}

func (m mongoSchedules) nextDue(ctx context.Context) (time.Time, error) {
	var doc mongoSchedule
	err := m.coll.FindOne(ctx, bson.D{{Key: "paused", Value: false}},
		options.FindOne().SetSort(bson.D{{Key: "next_run", Value: 1}}).SetProjection(bson.D{{Key: "next_run", Value: 1}})).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("mongodb: find the next due schedule: %w", err)
	}
	return doc.NextRun.UTC(), nil
}

func (m mongoSchedules) claimTick(ctx context.Context, id string, due, tick, next time.Time, fire bool, now time.Time) (bool, error) {
	_, err := m.ticks.InsertOne(ctx, mongoTickClaim{ID: tickClaimID(id, tick), Schedule: id, Tick: mongoTime(tick), Fire: fire, ClaimedAt: mongoTime(now)})
	won := err == nil
	if err != nil && !mongo.IsDuplicateKeyError(err) {
		return false, fmt.Errorf("mongodb: claim tick %v of %s: %w", tick, id, err)
	}
	// Winner or not, move the schedule on, if nobody has yet: the winner
	// may have died between its claim and this.
	if _, err := m.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}, {Key: "next_run", Value: mongoTime(due)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "next_run", Value: mongoTime(next)}}}}); err != nil {
		return won, fmt.Errorf("mongodb: move %s on past tick %v: %w", id, tick, err)
	}
	return won, nil
}

func (m mongoSchedules) stuckTicks(ctx context.Context, stuckBefore time.Time) ([]stuckTick, error) {
	filter := bson.D{{Key: "fire", Value: true}, {Key: "task_id", Value: bson.D{{Key: "$exists", Value: false}}},
		{Key: "claimed_at", Value: bson.D{{Key: "$lt", Value: stuckBefore}}}}
	claims, err := findAll(ctx, m.ticks, filter, options.Find(), func(c mongoTickClaim) mongoTickClaim { return c })
	if err != nil {
		return nil, fmt.Errorf("mongodb: find unqueued ticks: %w", err)
	}
	var out []stuckTick
	for _, c := range claims {
		var doc mongoSchedule
		err := m.coll.FindOne(ctx, bson.D{{Key: "_id", Value: c.Schedule}}).Decode(&doc)
		if errors.Is(err, mongo.ErrNoDocuments) {
			continue // deleted since: its ticks fire no more
		}
		if err != nil {
			return nil, fmt.Errorf("mongodb: read schedule %s: %w", c.Schedule, err)
		}
		out = append(out, stuckTick{schedule: doc.schedule(), tick: c.Tick.UTC()})
	}
	return out, nil
}

func (m mongoSchedules) skipTick(ctx context.Context, id string, tick time.Time) error {
	if _, err := m.ticks.UpdateOne(ctx, bson.D{{Key: "_id", Value: tickClaimID(id, tick)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "fire", Value: false}}}}); err != nil {
		return fmt.Errorf("mongodb: skip tick %v of %s: %w", tick, id, err)
	}
	return nil
}

func (m mongoSchedules) settleTick(ctx context.Context, id string, fired firedTick) error {
	if _, err := m.ticks.UpdateOne(ctx, bson.D{{Key: "_id", Value: tickClaimID(id, fired.Tick)}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "task_id", Value: fired.TaskID}}}}); err != nil {
		return fmt.Errorf("mongodb: settle tick %v of %s: %w", fired.Tick, id, err)
	}
	if _, err := m.coll.UpdateOne(ctx, bson.D{{Key: "_id", Value: id}},
		bson.D{{Key: "$set", Value: bson.D{{Key: "last_fired_tick", Value: mongoTime(fired.Tick)}, {Key: "last_fired_task", Value: fired.TaskID}}}}); err != nil {
		return fmt.Errorf("mongodb: record tick %v of %s: %w", fired.Tick, id, err)
	}
	if _, err := m.ticks.DeleteMany(ctx, bson.D{{Key: "schedule", Value: id}, {Key: "tick", Value: bson.D{{Key: "$lt", Value: fired.Tick.Add(-keptClaims)}}}}); err != nil {
		return fmt.Errorf("mongodb: forget old ticks of %s: %w", id, err)
	}
	return nil
}
