package main

import (
	"context"
	"errors"
	"fmt"
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
	rank  int
	doc   []byte
	ttlMs int64
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
return 1
`)

var deletePendingScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'rank') == '0' then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

func (s *redisStatusStore) key(taskID string) string { return s.prefix + "task:" + taskID }

func (s *redisStatusStore) put(ctx context.Context, st taskStatus, ttl time.Duration) error {
	doc, err := encodeStatus(st)
	if err != nil {
		return fmt.Errorf("encode status of %s: %w", st.TaskID, err)
	}
	_, err = s.writer.do(ctx, statusWrite{key: s.key(st.TaskID), rank: stateRank(st.Status), doc: doc, ttlMs: ttl.Milliseconds()})
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
		cmds[i] = putStatusScript.EvalSha(ctx, pipe, []string{w.key}, w.rank, w.doc, w.ttlMs)
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

func (s *redisStatusStore) deletePending(ctx context.Context, taskID string) error {
	if err := deletePendingScript.Run(ctx, s.client, []string{s.key(taskID)}).Err(); err != nil {
		return fmt.Errorf("redis: delete pending status of %s: %w", taskID, err)
	}
	return nil
}

func (s *redisStatusStore) ping(ctx context.Context) error {
	return s.client.Ping(ctx).Err()
}
