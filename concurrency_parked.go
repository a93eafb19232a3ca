package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// durableParkedTasks keeps each parked task's message in MongoDB's
// parked_tasks collection, one document a park (parkedID), as safe as a
// queued one, and their order in Redis: per scope a sorted set of the
// parked (by priority, then time) and one of the claimed (by the time of
// the claim, on Redis's clock). Releases ask MongoDB by _id only, and
// Redis's scripts move a task from parked to claimed in one step, so two
// releases never claim the same task. Should Redis lose its sets, the
// sweep puts back what MongoDB still holds (restore, which reads the
// collection by the time of the park).
type durableParkedTasks struct {
	coll   *mongo.Collection
	client *redis.Client
	prefix string
	log    *slog.Logger
}

type mongoParked struct {
	ID       string    `bson:"_id"` // parkedID
	Scope    string    `bson:"scope"`
	Priority int       `bson:"priority"`
	ParkedAt time.Time `bson:"parked_at"`
	Message  string    `bson:"message"` // the JSON of its taskMessage
}

func newDurableParkedTasks(db *mongo.Database, client *redis.Client, prefix string, log *slog.Logger) durableParkedTasks {
	return durableParkedTasks{coll: db.Collection("parked_tasks"), client: client, prefix: prefix, log: log}
}

func (p durableParkedTasks) parkedKey(scope string) string { return p.prefix + "parked:" + scope }
func (p durableParkedTasks) claimedKey(scope string) string {
	return p.prefix + "parked-claimed:" + scope
}
func (p durableParkedTasks) scopesKey() string { return p.prefix + "parked-scopes" }

// leaveOrder is a parked task's score: higher priorities first, then the
// older.
func leaveOrder(priority int, parkedAt time.Time) float64 {
	return float64(9-priority)*1e13 + float64(parkedAt.UnixMilli())
}

// indexParked: KEYS parked, claimed, scopes; ARGV score, id, scope. A task
// claimed already stays claimed.
var indexParked = redis.NewScript(`
redis.call('SADD', KEYS[3], ARGV[3])
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then
  redis.call('ZADD', KEYS[1], 'NX', ARGV[1], ARGV[2])
end
return 1
`)

// claimParked: KEYS parked, claimed; ARGV n, stale (ms). Claims whose
// release died (older than stale) come first, then the parked in order.
var claimParked = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local out = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.0f', now - tonumber(ARGV[2])), 'LIMIT', 0, n)
if #out < n then
  local ids = redis.call('ZRANGE', KEYS[1], 0, n - #out - 1)
  for _, id in ipairs(ids) do
    redis.call('ZREM', KEYS[1], id)
    table.insert(out, id)
  end
end
for _, id in ipairs(out) do
  redis.call('ZADD', KEYS[2], string.format('%.0f', now), id)
end
return out
`)

// countParked: KEYS parked, claimed, scopes; ARGV scope. A scope with no
// task left leaves the set of scopes.
var countParked = redis.NewScript(`
local n = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2])
if n == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return n
`)

func (p durableParkedTasks) park(ctx context.Context, scope string, m taskMessage) error {
	body, err := encodeTaskMessage(m)
	if err != nil {
		return err
	}
	doc := mongoParked{ID: parkedID(m), Scope: scope, Priority: int(priorityLevels[m.Priority]), ParkedAt: mongoTime(m.ParkedAt), Message: string(body)}
	_, err = p.coll.InsertOne(ctx, doc)
	switch {
	case mongo.IsDuplicateKeyError(err):
		// A duplicate delivery of a park that was made: indexing it again
		// changes nothing.
		return p.index(ctx, doc)
	case err != nil:
		return fmt.Errorf("mongodb: park %s: %w", m.ID, err)
	}
	if err := p.index(ctx, doc); err != nil {
		// The task goes back to the queue instead: its record must not
		// stay for restore to release a second copy.
		if _, delErr := p.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: doc.ID}}); delErr != nil {
			return errors.Join(err, fmt.Errorf("mongodb: undo park %s: %w", m.ID, delErr))
		}
		return err
	}
	return nil
}

func (p durableParkedTasks) index(ctx context.Context, doc mongoParked) error {
	err := indexParked.Run(ctx, p.client, []string{p.parkedKey(doc.Scope), p.claimedKey(doc.Scope), p.scopesKey()},
		leaveOrder(doc.Priority, doc.ParkedAt), doc.ID, doc.Scope).Err()
	if err != nil {
		return fmt.Errorf("redis: index parked task %s: %w", doc.ID, err)
	}
	return nil
}

func (p durableParkedTasks) claim(ctx context.Context, scope string, n int, stale time.Duration) ([]taskMessage, error) {
	ids, err := claimParked.Run(ctx, p.client, []string{p.parkedKey(scope), p.claimedKey(scope)}, n, stale.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("redis: claim parked tasks: %w", err)
	}
	var out []taskMessage
	for _, id := range ids {
		var doc mongoParked
		err := p.coll.FindOne(ctx, bson.D{{Key: "_id", Value: id}}).Decode(&doc)
		if errors.Is(err, mongo.ErrNoDocuments) {
			// Released already by a claim that then died before it
			// forgot the task.
			p.client.ZRem(ctx, p.claimedKey(scope), id)
			continue
		}
		if err != nil {
			return out, fmt.Errorf("mongodb: read parked task %s: %w", id, err)
		}
		m, err := decodeTaskMessage([]byte(doc.Message))
		if err != nil {
			// errand wrote it, so this is damage: the record stays in
			// MongoDB to be looked at, out of the line, so it does not
			// hold up the key.
			p.client.ZRem(ctx, p.claimedKey(scope), id)
			p.log.Error("parked task unreadable; left in parked_tasks, out of its key's line", "parked_id", id, "error", err)
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

func (p durableParkedTasks) remove(ctx context.Context, scope, parked string) error {
	if _, err := p.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: parked}}); err != nil {
		return fmt.Errorf("mongodb: remove parked task %s: %w", parked, err)
	}
	if err := p.client.ZRem(ctx, p.claimedKey(scope), parked).Err(); err != nil {
		return fmt.Errorf("redis: remove parked task %s: %w", parked, err)
	}
	return nil
}

func (p durableParkedTasks) waiting(ctx context.Context) (map[string]int, error) {
	scopes, err := p.client.SMembers(ctx, p.scopesKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list parked scopes: %w", err)
	}
	out := map[string]int{}
	for _, scope := range scopes {
		n, err := countParked.Run(ctx, p.client, []string{p.parkedKey(scope), p.claimedKey(scope), p.scopesKey()}, scope).Int()
		if err != nil {
			return nil, fmt.Errorf("redis: count parked tasks: %w", err)
		}
		if n > 0 {
			out[scope] = n
		}
	}
	return out, nil
}

// ensureIndexes makes the index restore reads by.
func (p durableParkedTasks) ensureIndexes(ctx context.Context) error {
	if _, err := p.coll.Indexes().CreateOne(ctx, mongo.IndexModel{Keys: bson.D{{Key: "parked_at", Value: 1}}}); err != nil {
		return fmt.Errorf("mongodb: create parked_tasks index: %w", err)
	}
	return nil
}

// restoreBatch is how many parked tasks restore looks up in Redis at once.
const restoreBatch = 500

// restore indexes again the parked tasks MongoDB holds that Redis lost
// (first parked before olderThan, so a park in flight is left alone).
func (p durableParkedTasks) restore(ctx context.Context, olderThan time.Time) (int, error) {
	cur, err := p.coll.Find(ctx, bson.D{{Key: "parked_at", Value: bson.D{{Key: "$lt", Value: mongoTime(olderThan)}}}},
		options.Find().SetProjection(bson.D{{Key: "message", Value: 0}}).SetBatchSize(restoreBatch))
	if err != nil {
		return 0, fmt.Errorf("mongodb: find parked tasks: %w", err)
	}
	defer cur.Close(ctx)
	restored := 0
	var batch []mongoParked
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		pipe := p.client.Pipeline()
		parked, claimed := make([]*redis.FloatCmd, len(batch)), make([]*redis.FloatCmd, len(batch))
		for i, doc := range batch {
			parked[i] = pipe.ZScore(ctx, p.parkedKey(doc.Scope), doc.ID)
			claimed[i] = pipe.ZScore(ctx, p.claimedKey(doc.Scope), doc.ID)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("redis: look up parked tasks: %w", err)
		}
		for i, doc := range batch {
			if parked[i].Err() == nil || claimed[i].Err() == nil {
				continue
			}
			if err := p.index(ctx, doc); err != nil {
				return err
			}
			restored++
		}
		batch = batch[:0]
		return nil
	}
	for cur.Next(ctx) {
		var doc mongoParked
		if err := cur.Decode(&doc); err != nil {
			return restored, fmt.Errorf("mongodb: read parked task: %w", err)
		}
		if batch = append(batch, doc); len(batch) == restoreBatch {
			if err := flush(); err != nil {
				return restored, err
			}
		}
	}
	if err := cur.Err(); err != nil {
		return restored, fmt.Errorf("mongodb: read parked tasks: %w", err)
	}
	return restored, flush()
}
