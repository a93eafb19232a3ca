package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// amqpBroker publishes tasks to RabbitMQ and consumes them.
//
// It never uses amqp091's automatic recovery: each consumer session dials
// its own connection, and a delivery can only be settled on the channel it
// arrived on, so an ack can never land on a different message after a
// reconnect. The publisher redials lazily, and every wait for a confirm
// has its own deadline.
type amqpBroker struct {
	urls           []string // one per RabbitMQ node; dials go to the first that answers
	preferred      atomic.Uint32
	queue          string
	queueType      string
	deadQueue      string
	publishTimeout time.Duration
	log            *slog.Logger

	mu          sync.Mutex // guards the fields below
	pub         *amqpPublisher
	lastDialErr error
	lastDialAt  time.Time
	consumers   map[*amqp.Connection]struct{}

	// onReconnect, when set, is told of every redial after a lost
	// connection ("publisher" or "consumer").
	onReconnect func(kind string)
	// onEnvelope, when set, is told how many tasks each confirmed task
	// message carried.
	onEnvelope func(tasks int)
	// onRepublish, when set, is told how many tasks of waiting envelopes
	// the consumer sent back to the queue (see republishStale).
	onRepublish func(tasks int)
	// envelopeHold is how long a consumer keeps an envelope none of whose
	// tasks has started; envelopeHoldLimit but for tests.
	envelopeHold time.Duration

	// envelopes groups concurrent task publishes into envelopes (see
	// taskEnvelopeContentType).
	envelopes *envelopePublisher
}

// newAMQPBroker makes a broker for urls: AMQP_URL, one URL or several
// separated by commas (the nodes of a cluster).
func newAMQPBroker(urls, queue, queueType string, publishTimeout time.Duration, log *slog.Logger) *amqpBroker {
	b := &amqpBroker{
		urls:           splitList(urls),
		queue:          queue,
		queueType:      queueType,
		deadQueue:      queue + ".dead",
		publishTimeout: publishTimeout,
		log:            log,
		consumers:      map[*amqp.Connection]struct{}{},
		envelopeHold:   envelopeHoldLimit,
	}
	// Each process starts at a node picked at random, so a cluster's nodes
	// share the connections, and losing one node moves only its share.
	b.preferred.Store(uint32(rand.IntN(max(1, len(b.urls)))))
	b.envelopes = newEnvelopePublisher(queueType == queueClassic, b.publishEnvelope)
	return b
}

// splitList reads a comma-separated list (of URLs, of hosts), ignoring
// blanks.
func splitList(list string) []string {
	var urls []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// dial connects to the node that answered last (at first one picked at
// random), else to the next one that answers: with a cluster's nodes in
// AMQP_URL, errand follows whichever is up, and its quorum queues are
// reachable from any of them.
func (b *amqpBroker) dial(purpose string) (conn *amqp.Connection, node int, err error) {
	host, _ := os.Hostname()
	dial := amqp.DefaultDial(min(b.publishTimeout, 5*time.Second))
	cfg := amqp.Config{
		Heartbeat: 10 * time.Second,
		// Concurrent publishes and acks share system calls (see
		// coalescingConn).
		Dial: func(network, addr string) (net.Conn, error) {
			conn, err := dial(network, addr)
			if err != nil {
				return nil, err
			}
			return newCoalescingConn(conn), nil
		},
		Properties: amqp.Table{
			"connection_name": fmt.Sprintf("errand-%s %s pid %d", purpose, host, os.Getpid()),
		},
	}
	start := int(b.preferred.Load())
	var errs []error
	for i := range b.urls {
		n := (start + i) % len(b.urls)
		conn, err := amqp.DialConfig(b.urls[n], cfg)
		if err == nil {
			if n != start {
				b.log.Info("connected to another rabbitmq node", "url", redactURL(b.urls[n]), "purpose", purpose)
				b.preferred.Store(uint32(n))
			}
			return conn, n, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", redactURL(b.urls[n]), err))
	}
	return nil, 0, fmt.Errorf("dial rabbitmq: %w", errors.Join(errs...))
}

// redialPause is how long publishes fail fast after a failed dial, so a
// broker outage answers 503 at once instead of queueing every request
// behind a dial timeout.
const redialPause = time.Second

// ping opens and closes a channel on the publishing connection: a real
// round trip to the broker.
func (b *amqpBroker) ping(ctx context.Context) error {
	p, err := b.publisher()
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() {
		ch, err := p.conn.Channel()
		if err == nil {
			err = ch.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			b.dropPublisher(p)
		}
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close closes every connection. Unsettled deliveries go back to the
// queue, which is how a worker's abandoned tasks are requeued.
func (b *amqpBroker) close() {
	// The envelope publishers first, and outside mu: a batch in flight
	// needs mu to reach its connection.
	b.envelopes.close()
	b.mu.Lock()
	defer b.mu.Unlock()
	for conn := range b.consumers {
		conn.Close()
	}
	clear(b.consumers)
	if b.pub != nil {
		b.pub.conn.Close()
		b.pub = nil
	}
}
