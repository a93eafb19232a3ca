package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/trace"
)

// backends are the services errand runs on: RabbitMQ, Redis and MongoDB,
// or their embedded in-process stand-ins.
type backends struct {
	mode      string // "external" or "embedded"
	publisher taskPublisher
	queue     workQueue
	queues    queueDepthReader
	dead      deadLetterQueue
	statuses  statusStore
	keys      keyStore
	revoked   revocationStore
	throttles taskThrottle
	slots     keySlots
	parked    parkedTasks
	watcher   statusWatcher
	schedules scheduleStore
	workflows workflowStore
	files     fileStore
	items     itemStore
	reports   reportSource
	results   resultStore
	health    map[string]pinger
	closers   []func()
}

func (b *backends) keyStores() workerKeyStores {
	return workerKeyStores{throttles: b.throttles, slots: b.slots, parked: b.parked}
}

// workflowEngine is the engine that moves workflows along on b, for the
// API (submits, cancels) and the worker pool (steps that end) alike.
func (b *backends) workflowEngine(resultTTL time.Duration, log *slog.Logger, tr *tracing) *workflowEngine {
	return &workflowEngine{store: b.workflows, results: b.results, statuses: b.statuses, revocations: b.revoked, publisher: b.publisher,
		reader:  taskStatusReader{statuses: b.statuses, results: b.results, resultTTL: resultTTL, log: log, now: time.Now},
		tracing: tr, log: log, now: time.Now, resultTTL: resultTTL}
}

// newRedisClient is the client of REDIS_URL: one server, or, with
// master_name in its query, the primary Redis Sentinel names, followed
// through failovers (the URL's host and its addr parameters are the
// sentinels).
func newRedisClient(rawURL string) (*redis.Client, error) {
	if u, err := url.Parse(rawURL); err == nil && u.Query().Has("master_name") {
		opts, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: %w", err)
		}
		return redis.NewFailoverClient(opts), nil
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("REDIS_URL: %w", err)
	}
	return redis.NewClient(opts), nil
}

// close releases the backends in reverse order of opening.
func (b *backends) close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
}

// revocationTTL is how long a cancel is kept: past the furthest time a
// task may be scheduled for, and a day of retries beyond it.
func revocationTTL(cfg config) time.Duration { return cfg.ScheduleHorizon + 24*time.Hour }

// openBackends connects to the configured services, or builds the embedded
// ones when none is configured. Connections are made lazily and redialled
// after failures, so errand starts (and reports unhealthy) even while a
// dependency is still coming up.
func openBackends(ctx context.Context, cfg config, log *slog.Logger, m *metrics, tracer trace.Tracer) (*backends, error) {
	if cfg.embedded() {
		log.Warn("no AMQP_URL, REDIS_URL or MONGODB_URI set: running on embedded in-process backends " +
			"(queue, status and storage live in this process and vanish when it stops); " +
			"set all three to use RabbitMQ, Redis and MongoDB")
		broker := newMemoryBroker()
		broker.queue = cfg.QueueName
		store := newMemoryStore()
		statuses := newMemoryStatusStore()
		obs := newStoreObserver("embedded", m, tracer, slices.Concat(statusOps, keyOps, documentOps)...)
		measured := measuredDocumentStore{next: store, obs: obs}
		return &backends{
			mode: "embedded", publisher: broker, queue: broker, queues: broker, dead: broker,
			statuses:  measuredStatusStore{next: statuses, obs: obs},
			keys:      measuredKeyStore{next: newMemoryKeyStore(), obs: obs},
			revoked:   newMemoryRevocations(revocationTTL(cfg)),
			throttles: newMemoryThrottle(time.Now),
			slots:     newMemoryKeySlots(time.Now),
			parked:    newMemoryParkedTasks(time.Now),
			watcher:   statuses,
			schedules: newMemorySchedules(),
			workflows: newMemoryWorkflows(),
			files:     newMemoryFiles(),
			items:     measured, results: measured, reports: measured,
			health:  map[string]pinger{"rabbitmq": broker, "redis": statuses, "mongodb": store},
			closers: []func(){broker.close},
		}, nil
	}

	rdb, err := newRedisClient(cfg.RedisURL)
	if err != nil {
		return nil, err
	}
	mongoStore, err := connectMongo(mongoClientOptions(cfg.MongoURI), cfg.MongoDatabase)
	if err != nil {
		rdb.Close()
		return nil, err
	}
	broker := newAMQPBroker(cfg.AMQPURL, cfg.QueueName, cfg.QueueType, cfg.PublishTimeout, log.With("component", "amqp"))
	broker.onReconnect = func(kind string) { m.reconnects.WithLabelValues(kind).Inc() }
	broker.onEnvelope = func(tasks int) { m.tasksPerMessage.Observe(float64(tasks)) }
	broker.onRepublish = func(tasks int) { m.tasksRepublished.Add(float64(tasks)) }
	statuses := newRedisStatusStore(rdb, cfg.KeyPrefix)
	revocations := newRedisRevocations(rdb, cfg.KeyPrefix, revocationTTL(cfg))
	watcher := newRedisStatusWatcher(rdb, cfg.KeyPrefix, log)
	redisObs := newStoreObserver("redis", m, tracer, slices.Concat(statusOps, keyOps)...)
	measured := measuredDocumentStore{next: mongoStore, obs: newStoreObserver("mongodb", m, tracer, documentOps...)}
	files := newGridFiles(mongoStore.client.Database(cfg.MongoDatabase))
	workflows := newMongoWorkflows(mongoStore.client.Database(cfg.MongoDatabase))
	parked := newDurableParkedTasks(mongoStore.client.Database(cfg.MongoDatabase), rdb, cfg.KeyPrefix, log.With("component", "parked-tasks"))
	b := &backends{
		mode: "external", publisher: broker, queue: broker, queues: broker, dead: broker,
		statuses:  measuredStatusStore{next: statuses, obs: redisObs},
		keys:      measuredKeyStore{next: &redisKeyStore{client: rdb, prefix: cfg.KeyPrefix}, obs: redisObs},
		revoked:   revocations,
		throttles: redisThrottle{client: rdb, prefix: cfg.KeyPrefix},
		slots:     redisKeySlots{client: rdb, prefix: cfg.KeyPrefix},
		parked:    parked,
		watcher:   watcher,
		schedules: newMongoSchedules(mongoStore.client.Database(cfg.MongoDatabase)),
		workflows: workflows,
		files:     files,
		items:     measured, results: measured, reports: measured,
		health: map[string]pinger{"rabbitmq": broker, "redis": statuses, "mongodb": mongoStore},
		closers: []func(){
			func() { rdb.Close() },
			statuses.close,
			revocations.close,
			watcher.close,
			func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				mongoStore.close(ctx)
			},
			broker.close,
		},
	}
	indexCtx, cancel := context.WithTimeout(ctx, cfg.HealthTimeout)
	if err := errors.Join(mongoStore.ensureIndexes(indexCtx), files.ensureIndexes(indexCtx), parked.ensureIndexes(indexCtx), workflows.ensureIndexes(indexCtx)); err != nil {
		log.Warn("indexes not created; listing tasks by status and items by owner scan their collections", "error", err)
	}
	cancel()
	// A first look at each dependency, so the log says at once what is
	// missing; errand keeps starting either way.
	for name, dep := range b.health {
		pingCtx, cancel := context.WithTimeout(ctx, cfg.HealthTimeout)
		if err := dep.ping(pingCtx); err != nil {
			log.Warn("dependency not reachable yet", "service", name, "error", err)
		}
		cancel()
	}
	// That ping also inspected the MongoDB server, if it reached it.
	switch {
	case !mongoStore.inspected.Load():
		log.Warn("MongoDB server not inspected yet; until a health check reaches it, item creates, reads and deletes are batched, which costs FerretDB more than it saves")
	case mongoStore.oneByOne.Load():
		log.Info("MongoDB server is FerretDB, where item batches cost more than they save; item creates, reads and deletes go one by one")
	}
	return b, nil
}
