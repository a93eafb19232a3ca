package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// durableParkedTasks keeps each parked task's message in MongoDB's
// parked_tasks collection, one document by task id, as safe as a queued
// one, and the order they leave in Redis: per scope a sorted set of
// the parked (by priority, then time) and one of the claimed (by the time
// of the claim). MongoDB is only ever asked by _id, and Redis's scripts
// move a task from parked to claimed in one step, so two releases never
// claim the same task. Should Redis lose its sets, the sweep puts back
// what MongoDB still holds (restore).
type durableParkedTasks struct {
	coll   *mongo.Collection
	client *redis.Client
	prefix string
	now    func() time.Time
}

type mongoParked struct {
	ID       string    `bson:"_id"`
	Scope    string    `bson:"scope"`
	Priority int       `bson:"priority"`
	ParkedAt time.Time `bson:"parked_at"`
	Message  string    `bson:"message"` // the JSON of its taskMessage
}

func newDurableParkedTasks(db *mongo.Database, client *redis.Client, prefix string, now func() time.Time) durableParkedTasks {
	return durableParkedTasks{coll: db.Collection("parked_tasks"), client: client, prefix: prefix, now: now}
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

// claimParked: KEYS parked, claimed; ARGV n, claimed-before (ms), now (ms).
// Claims whose release died come first, then the parked in order.
var claimParked = redis.NewScript(`
local n = tonumber(ARGV[1])
local out = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[2], 'LIMIT', 0, n)
if #out < n then
  local ids = redis.call('ZRANGE', KEYS[1], 0, n - #out - 1)
  for _, id in ipairs(ids) do
    redis.call('ZREM', KEYS[1], id)
    table.insert(out, id)
  end
end
for _, id in ipairs(out) do
  redis.call('ZADD', KEYS[2], ARGV[3], id)
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
	doc := mongoParked{ID: m.ID, Scope: scope, Priority: int(priorityLevels[m.Priority]), ParkedAt: mongoTime(p.now()), Message: string(body)}
	if _, err := p.coll.InsertOne(ctx, doc); err != nil && !mongo.IsDuplicateKeyError(err) {
		// A duplicate key is a duplicate delivery of a task parked
		// already: it is indexed again, which changes nothing.
		return fmt.Errorf("mongodb: park %s: %w", m.ID, err)
	}
	return p.index(ctx, doc)
}

func (p durableParkedTasks) index(ctx context.Context, doc mongoParked) error {
	err := indexParked.Run(ctx, p.client, []string{p.parkedKey(doc.Scope), p.claimedKey(doc.Scope), p.scopesKey()},
		leaveOrder(doc.Priority, doc.ParkedAt), doc.ID, doc.Scope).Err()
	if err != nil {
		return fmt.Errorf("redis: index parked task %s: %w", doc.ID, err)
	}
	return nil
}

func (p durableParkedTasks) claim(ctx context.Context, scope string, n int, claimedBefore time.Time) ([]taskMessage, error) {
	ids, err := claimParked.Run(ctx, p.client, []string{p.parkedKey(scope), p.claimedKey(scope)},
		n, claimedBefore.UnixMilli(), p.now().UnixMilli()).StringSlice()
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
			return out, fmt.Errorf("parked task %s: %w", id, err)
		}
		out = append(out, m)
	}
	return out, nil
}

func (p durableParkedTasks) remove(ctx context.Context, scope, id string) error {
	if _, err := p.coll.DeleteOne(ctx, bson.D{{Key: "_id", Value: id}}); err != nil {
		return fmt.Errorf("mongodb: remove parked task %s: %w", id, err)
	}
	if err := p.client.ZRem(ctx, p.claimedKey(scope), id).Err(); err != nil {
		return fmt.Errorf("redis: remove parked task %s: %w", id, err)
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

// restore indexes again the parked tasks MongoDB holds that Redis lost
// (parked before olderThan, so a park in flight is left alone).
func (p durableParkedTasks) restore(ctx context.Context, olderThan time.Time) (int, error) {
	cur, err := p.coll.Find(ctx, bson.D{{Key: "parked_at", Value: bson.D{{Key: "$lt", Value: mongoTime(olderThan)}}}},
		options.Find().SetProjection(bson.D{{Key: "message", Value: 0}}))
	if err != nil {
		return 0, fmt.Errorf("mongodb: find parked tasks: %w", err)
	}
	var docs []mongoParked
	if err := cur.All(ctx, &docs); err != nil {
		return 0, fmt.Errorf("mongodb: read parked tasks: %w", err)
	}
	restored := 0
	for _, doc := range docs {
		pipe := p.client.Pipeline()
		inParked := pipe.ZScore(ctx, p.parkedKey(doc.Scope), doc.ID)
		inClaimed := pipe.ZScore(ctx, p.claimedKey(doc.Scope), doc.ID)
		_, _ = pipe.Exec(ctx)
		if inParked.Err() == nil || inClaimed.Err() == nil {
			continue
		}
		if !errors.Is(inParked.Err(), redis.Nil) || !errors.Is(inClaimed.Err(), redis.Nil) {
			return restored, fmt.Errorf("redis: look up parked task %s: %w", doc.ID, errors.Join(inParked.Err(), inClaimed.Err()))
		}
		if err := p.index(ctx, doc); err != nil {
			return restored, err
		}
		restored++
	}
	return restored, nil
}
