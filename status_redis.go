package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisStatusStore keeps each task's status in a Redis hash holding the
// state's rank and the status JSON. The rank check and the write happen in
// one Lua script, so concurrent writers (the API, a worker, a duplicate
// delivery) cannot interleave between them.
//
// Status writes and reads are pipelined (see batcher): every submit and
// every task's end writes one, every poll reads one, and under load one
// round trip (two system calls) carries many of them.
type redisStatusStore struct {
	client *redis.Client
	prefix string
	writer *batcher[statusWrite, struct{}]
	reader *batcher[string, []byte]
}

const (
	statusWriters  = 2
	statusReaders  = 2
	maxStatusBatch = 128
)

// statusWrite is one run of putStatusScript.
type statusWrite struct {
	key   string
	index string // the owner's index of unfinished tasks
	rank  int
	doc   []byte
	ttlMs int64
	// createdMs and id are the task's entry in index.
	createdMs int64
	id        string
}

func newRedisStatusStore(client *redis.Client, keyPrefix string) *redisStatusStore {
	s := &redisStatusStore{client: client, prefix: keyPrefix}
	s.writer = newBatcher(statusWriters, maxStatusBatch, s.writeStatuses)
	s.reader = newBatcher(statusReaders, maxStatusBatch, s.readStatuses)
	return s
}

// close stops the status writers and readers; callers of put and get
// must be done.
func (s *redisStatusStore) close() {
	s.writer.close()
	s.reader.close()
}

// putStatusScript writes a status unless a higher-ranked one is stored,
// keeps the owner's index of unfinished tasks (a sorted set of task ids by
// creation time, which listings page through) in step, a task being in it
// until its status is final, and publishes the status on the task's
// channel for its watchers (see redisStatusWatcher).
var putStatusScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'rank')
if cur and tonumber(cur) > tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'rank', ARGV[1], 'doc', ARGV[2])
if tonumber(ARGV[3]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
else
  redis.call('PERSIST', KEYS[1])
end
if tonumber(ARGV[1]) < 2 then
  redis.call('ZADD', KEYS[2], 'NX', ARGV[4], ARGV[5])
else
  redis.call('ZREM', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', KEYS[3], ARGV[2])
return 1
`)

var deletePendingScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'rank') == '0' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return redis.call('DEL', KEYS[1])
end
return 0
`)

func (s *redisStatusStore) key(taskID string) string { return s.prefix + "task:" + taskID }

// indexKey is the key of owner's index of unfinished tasks.
func (s *redisStatusStore) indexKey(owner string) string {
	return s.prefix + "live:" + cmp.Or(owner, "-")
}

func (s *redisStatusStore) put(ctx context.Context, st taskStatus, ttl time.Duration) error {
	doc, err := encodeStatus(st)
	if err != nil {
		return fmt.Errorf("encode status of %s: %w", st.TaskID, err)
	}
	_, err = s.writer.do(ctx, statusWrite{key: s.key(st.TaskID), index: s.indexKey(st.Owner), rank: stateRank(st.Status), doc: doc,
		ttlMs: ttl.Milliseconds(), createdMs: keyOf(st).created.UnixMilli(), id: st.TaskID})
	if err != nil {
		return fmt.Errorf("redis: put status of %s: %w", st.TaskID, err)
	}
	return nil
}

// writeStatuses runs a batch of status writes in one pipeline. Redis
// forgets its scripts when it restarts; the script is then loaded again
// and the batch rerun, which is harmless: a write never lowers a rank.
func (s *redisStatusStore) writeStatuses(ctx context.Context, batch []statusWrite) []batchOutcome[struct{}] {
	ctx, cancel := context.WithTimeout(ctx, statusOpTimeout)
	defer cancel()
	cmds, err := s.pipelinePuts(ctx, batch)
	out := make([]batchOutcome[struct{}], len(batch))
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		if err := putStatusScript.Load(ctx, s.client).Err(); err != nil {
			for i := range out {
				out[i].err = fmt.Errorf("load status script: %w", err)
			}
			return out
		}
		cmds, _ = s.pipelinePuts(ctx, batch)
	}
	// A failed pipeline sets its error on every command.
	for i, cmd := range cmds {
		out[i].err = cmd.Err()
	}
	return out
}

func (s *redisStatusStore) pipelinePuts(ctx context.Context, batch []statusWrite) ([]*redis.Cmd, error) {
	pipe := s.client.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, w := range batch {
		cmds[i] = putStatusScript.EvalSha(ctx, pipe, []string{w.key, w.index, statusChannel(s.prefix, w.id)}, w.rank, w.doc, w.ttlMs, w.createdMs, w.id)
	}
	_, err := pipe.Exec(ctx)
	return cmds, err
}

// readStatuses reads a batch of status documents in one pipeline.
func (s *redisStatusStore) readStatuses(ctx context.Context, keys []string) []batchOutcome[[]byte] {
	ctx, cancel := context.WithTimeout(ctx, statusOpTimeout)
	defer cancel()
	pipe := s.client.Pipeline()
	cmds := make([]*redis.StringCmd, len(keys))
	for i, key := range keys {
		cmds[i] = pipe.HGet(ctx, key, "doc")
	}
	_, _ = pipe.Exec(ctx) // each command carries its own error
	out := make([]batchOutcome[[]byte], len(keys))
	for i, cmd := range cmds {
		out[i].resp, out[i].err = cmd.Bytes()
	}
	return out
}

func (s *redisStatusStore) get(ctx context.Context, taskID string) (taskStatus, error) {
	doc, err := s.reader.do(ctx, s.key(taskID))
	if errors.Is(err, redis.Nil) {
		return taskStatus{}, errStatusNotFound
	}
	if err != nil {
		return taskStatus{}, fmt.Errorf("redis: get status of %s: %w", taskID, err)
	}
	st, err := decodeStatus(doc)
	if err != nil {
		return taskStatus{}, fmt.Errorf("decode status of %s: %w", taskID, err)
	}
	return st, nil
}

func (s *redisStatusStore) deletePending(ctx context.Context, taskID, owner string) error {
	if err := deletePendingScript.Run(ctx, s.client, []string{s.key(taskID), s.indexKey(owner)}, taskID).Err(); err != nil {
		return fmt.Errorf("redis: delete pending status of %s: %w", taskID, err)
	}
	return nil
}

func (s *redisStatusStore) ping(ctx context.Context) error {
	return s.client.Ping(ctx).Err()
}

// listScanLimit bounds the index entries one listing reads, so a page
// whose filter few tasks pass still costs a bounded read: the page then
// ends where the scan did, and the next one goes on from there.
const listScanLimit = 2000

// listLive pages through the owner's unfinished tasks, newest first, from
// the owner's index.
func (s *redisStatusStore) listLive(ctx context.Context, q taskQuery) (taskPage, error) {
	var page taskPage
	pos := q.after
	for scanned := 0; scanned < listScanLimit; {
		ids, keys, err := s.indexEntries(ctx, s.indexKey(q.owner), pos, q.since, min(q.limit+1, 200))
		if err != nil {
			return taskPage{}, err
		}
		if len(ids) == 0 {
			return page, nil // the end of the index
		}
		docs := make([]*redis.StringCmd, len(ids))
		pipe := s.client.Pipeline()
		for i, id := range ids {
			docs[i] = pipe.HGet(ctx, s.key(id), "doc")
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return taskPage{}, fmt.Errorf("redis: read listed statuses: %w", err)
		}
		var gone []any
		for i := range ids {
			scanned++
			pos = &keys[i]
			b, err := docs[i].Bytes()
			if err != nil {
				gone = append(gone, ids[i])
				continue
			}
			st, err := decodeStatus(b)
			if err != nil || st.final() || !q.matches(st) {
				continue
			}
			page.tasks = append(page.tasks, st)
			if len(page.tasks) == q.limit {
				page.reached = pos
				s.forget(ctx, q.owner, gone)
				return page, nil
			}
		}
		s.forget(ctx, q.owner, gone)
	}
	page.reached = pos
	return page, nil
}

// forget removes from owner's index the entries of tasks whose status is
// gone (expired, or removed by hand), which nothing else would remove.
func (s *redisStatusStore) forget(ctx context.Context, owner string, ids []any) {
	if len(ids) > 0 {
		_ = s.client.ZRem(ctx, s.indexKey(owner), ids...).Err() // tried again at the next listing
	}
}

// indexEntries reads the entries of an index that come after pos (all of
// them when pos is nil) and were created at or after since: the rest of
// pos's millisecond first, then up to n of the older ones.
func (s *redisStatusStore) indexEntries(ctx context.Context, key string, pos *pageKey, since time.Time, n int) ([]string, []pageKey, error) {
	floor := "-inf"
	if !since.IsZero() {
		floor = strconv.FormatInt(since.UnixMilli(), 10)
	}
	var ids []string
	var keys []pageKey
	add := func(zs []redis.Z) {
		for _, z := range zs {
			id := z.Member.(string)
			ids = append(ids, id)
			keys = append(keys, pageKey{created: time.UnixMilli(int64(z.Score)).UTC(), id: id})
		}
	}
	top := "+inf"
	if pos != nil {
		ms := strconv.FormatInt(pos.created.UnixMilli(), 10)
		// Entries of one millisecond come in reverse order of id.
		ties, err := s.client.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: key, Start: ms, Stop: ms, ByScore: true, Rev: true}).Result()
		if err != nil {
			return nil, nil, fmt.Errorf("redis: read task index: %w", err)
		}
		add(slices.DeleteFunc(ties, func(z redis.Z) bool { return z.Member.(string) >= pos.id }))
		top = "(" + ms
	}
	older, err := s.client.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: key, Start: top, Stop: floor, ByScore: true, Rev: true, Count: int64(n)}).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("redis: read task index: %w", err)
	}
	add(older)
	return ids, keys, nil
}
