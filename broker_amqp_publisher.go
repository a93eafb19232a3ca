package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// publisherChannels is how many confirming channels a publisher spreads
// its messages over. One channel serializes its frames and its confirms;
// a few let more messages be in flight at once (RabbitMQ runs each
// channel as its own process), which is what submit throughput rests on.
const publisherChannels = 4

// amqpPublisher is one publishing connection with confirming channels.
type amqpPublisher struct {
	conn *amqp.Connection
	node int // its URL's index in AMQP_URL
	// blocked is set while the broker holds the connection's publishes
	// (connection.blocked: a memory or disk alarm, which holds every
	// node's publishers alike).
	blocked atomic.Bool
	chans   []*confirmChannel
	next    atomic.Uint32
	opened  time.Time

	mu       sync.Mutex
	declared map[string]time.Time // delay queues declared on this connection, and when
}

// confirmChannel is a channel in confirm mode with the returns it got.
type confirmChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return

	mu       sync.Mutex
	returned map[string]struct{}
}

// publisher returns the live publisher, dialling one if there is none.
func (b *amqpBroker) publisher() (*amqpPublisher, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pub != nil && !b.pub.conn.IsClosed() {
		return b.pub, nil
	}
	b.pub = nil
	if b.lastDialErr != nil && time.Since(b.lastDialAt) < redialPause {
		return nil, fmt.Errorf("%w: %w", errBrokerUnavailable, b.lastDialErr)
	}
	redial := !b.lastDialAt.IsZero()
	p, err := b.openPublisher()
	b.lastDialAt, b.lastDialErr = time.Now(), err
	if err == nil && redial && b.onReconnect != nil {
		b.onReconnect("publisher")
	}
	if err != nil {
		b.log.Warn("rabbitmq publisher unavailable", "error", err)
		return nil, fmt.Errorf("%w: %w", errBrokerUnavailable, err)
	}
	b.pub = p
	return p, nil
}

func (b *amqpBroker) openPublisher() (*amqpPublisher, error) {
	conn, node, err := b.dial("publisher")
	if err != nil {
		return nil, err
	}
	p := &amqpPublisher{conn: conn, node: node, declared: map[string]time.Time{}, opened: time.Now()}
	blocking := conn.NotifyBlocked(make(chan amqp.Blocking, 1))
	go func() {
		for state := range blocking {
			p.blocked.Store(state.Active)
		}
	}()
	for i := range publisherChannels {
		ch, err := conn.Channel()
		if err == nil && i == 0 {
			err = b.declareTopology(ch)
		}
		if err == nil {
			err = ch.Confirm(false) // noWait
		}
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("open publisher channel: %w", err)
		}
		// The reader goroutine hands a basic.return to this channel before
		// it resolves the confirm of the same message, so a publisher that
		// has its confirm finds any return already buffered here.
		cc := &confirmChannel{ch: ch, returns: make(chan amqp.Return, 256), returned: map[string]struct{}{}}
		ch.NotifyReturn(cc.returns)
		p.chans = append(p.chans, cc)
	}
	return p, nil
}

// channel picks the next channel, round robin.
func (p *amqpPublisher) channel() *confirmChannel {
	return p.chans[int(p.next.Add(1))%len(p.chans)]
}

// wasReturned reports whether the broker returned the message with id as
// unroutable.
func (c *confirmChannel) wasReturned(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		select {
		case r := <-c.returns:
			c.returned[r.MessageId] = struct{}{}
			continue
		default:
		}
		break
	}
	_, ok := c.returned[id]
	delete(c.returned, id)
	return ok
}

// redeclareAfter is how long a declared delay queue is trusted to exist.
// A delay queue expires after its wait and an hour without use, and a
// publish is no use to RabbitMQ, only a declare is: declaring again well
// within the hour keeps a queue that is still published to from expiring
// with the messages in it.
const redeclareAfter = 20 * time.Minute

// declareFresh runs declare for queue unless this publisher declared it
// less than redeclareAfter ago. Declaring is idempotent, so a race only
// costs a round trip.
func (p *amqpPublisher) declareFresh(queue string, declare func(*amqp.Channel) error) error {
	p.mu.Lock()
	at, done := p.declared[queue]
	p.mu.Unlock()
	if done && time.Since(at) < redeclareAfter {
		return nil
	}
	if err := declare(p.chans[0].ch); err != nil {
		return err
	}
	p.mu.Lock()
	p.declared[queue] = time.Now()
	p.mu.Unlock()
	return nil
}

// forgetDeclared makes the next publish to queue declare it first.
func (b *amqpBroker) forgetDeclared(queue string) {
	b.mu.Lock()
	p := b.pub
	b.mu.Unlock()
	if p == nil {
		return
	}
	p.mu.Lock()
	delete(p.declared, queue)
	p.mu.Unlock()
}

// publisherMinAge is how long a publisher serves before a nack retires
// it: a broker that refuses every message (a queue at its length limit)
// must not make each publish dial anew.
const publisherMinAge = 250 * time.Millisecond

// retirePublisher stops handing out p, which a nack or a missing confirm
// has put in doubt, and closes it once the publishes in flight on it have
// had their confirms (a close would turn them into nacks). It reports
// whether it did.
func (b *amqpBroker) retirePublisher(p *amqpPublisher) bool {
	if time.Since(p.opened) < publisherMinAge {
		return false
	}
	b.mu.Lock()
	retired := b.pub == p
	if retired {
		b.pub = nil
	}
	b.mu.Unlock()
	if retired {
		// A node that does not answer must not hold the close forever.
		time.AfterFunc(b.publishTimeout, func() { _ = p.conn.CloseDeadline(time.Now().Add(b.publishTimeout)) })
	}
	return retired
}

// leaveSilentNode moves publishing off a cluster node that did not
// confirm in time: a node cut off from its cluster takes publishes it
// cannot replicate until it notices (RabbitMQ's net_ticktime, a minute by
// default) and, under pause_minority, pauses. The next publish dials the
// next node in AMQP_URL. With one node there is nowhere to go, and while
// the broker says it blocks publishers (an alarm, on every node alike)
// moving gains nothing: the publisher stays.
func (b *amqpBroker) leaveSilentNode(p *amqpPublisher) {
	if len(b.urls) < 2 || p.blocked.Load() || !b.retirePublisher(p) {
		return
	}
	next := (p.node + 1) % len(b.urls)
	if b.preferred.CompareAndSwap(uint32(p.node), uint32(next)) {
		b.log.Warn("rabbitmq node did not confirm in time; publishing moves to the next node",
			"url", redactURL(b.urls[p.node]), "next", redactURL(b.urls[next]))
	}
}

func (b *amqpBroker) dropPublisher(p *amqpPublisher) {
	b.mu.Lock()
	if b.pub == p {
		b.pub = nil
	}
	b.mu.Unlock()
	p.conn.Close()
}
