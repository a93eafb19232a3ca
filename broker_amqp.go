package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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

	// submits groups concurrent task publishes into envelopes, one
	// batcher per message priority (see taskEnvelopeContentType).
	submits      map[uint8]*batcher[taskMessage, struct{}]
	closeSubmits sync.Once
}

// redialPause is how long publishes fail fast after a failed dial, so a
// broker outage answers 503 at once instead of queueing every request
// behind a dial timeout.
const redialPause = time.Second

// newAMQPBroker makes a broker for urls: AMQP_URL, one URL or several
// separated by commas (the nodes of a cluster).
func newAMQPBroker(urls, queue, queueType string, publishTimeout time.Duration, log *slog.Logger) *amqpBroker {
	b := &amqpBroker{
		urls:           splitURLs(urls),
		queue:          queue,
		queueType:      queueType,
		deadQueue:      queue + ".dead",
		publishTimeout: publishTimeout,
		log:            log,
		consumers:      map[*amqp.Connection]struct{}{},
		submits:        map[uint8]*batcher[taskMessage, struct{}]{},
		envelopeHold:   envelopeHoldLimit,
	}
	// An envelope has one priority, so a classic queue, which serves
	// priorities, gets one batcher per level. A quorum queue delivers in
	// arrival order whatever the priority, so one batcher serves all and
	// its envelopes are fuller.
	levels := []uint8{0} // and a message without a priority
	if queueType == queueClassic {
		for _, level := range priorityLevels {
			levels = append(levels, level)
		}
	}
	for _, level := range levels {
		b.submits[level] = newBatcher(2, maxEnvelopeTasks, b.publishEnvelope)
	}
	return b
}

// dial connects to the node that answered last, else to the next one that
// answers: with a cluster's nodes in AMQP_URL, errand follows whichever is
// up, and its quorum queues are reachable from any of them.
func (b *amqpBroker) dial(purpose string) (*amqp.Connection, error) {
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
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", redactURL(b.urls[n]), err))
	}
	return nil, fmt.Errorf("dial rabbitmq: %w", errors.Join(errs...))
}

// splitURLs reads a comma-separated list of URLs.
func splitURLs(list string) []string {
	var urls []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// Queue types (QUEUE_TYPE). Classic queues honour the three priorities
// strictly through x-max-priority. Quorum queues are replicated by Raft,
// confirm faster under load, and count redeliveries themselves, but on
// RabbitMQ 3.x they deliver in arrival order whatever the priority.
const (
	queueClassic = "classic"
	queueQuorum  = "quorum"
)

// queueArgs are the declare arguments of one of errand's queues, extra
// merged in: the queue type, and for a classic work queue its priorities.
func (b *amqpBroker) queueArgs(extra amqp.Table) amqp.Table {
	args := amqp.Table{}
	if b.queueType != queueClassic {
		// Classic is RabbitMQ's default; naming it would make queues
		// declared before QUEUE_TYPE existed look inequivalent.
		args["x-queue-type"] = b.queueType
	}
	for k, v := range extra {
		args[k] = v
	}
	return args
}

// declareTopology declares the durable work queue and its dead-letter
// queue. Rejected messages (poison, or out of retries) go to the latter.
func (b *amqpBroker) declareTopology(ch *amqp.Channel) error {
	if err := b.declareQueue(ch, b.deadQueue, nil); err != nil {
		return err
	}
	work := amqp.Table{
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": b.deadQueue,
	}
	if b.queueType == queueClassic {
		work["x-max-priority"] = int32(maxPriority)
	}
	return b.declareQueue(ch, b.queue, work)
}

// declareQueue declares a durable queue of the configured type. A queue
// that exists with other arguments (another QUEUE_TYPE, say) is an error
// RabbitMQ answers by closing the channel; the message says what to do.
func (b *amqpBroker) declareQueue(ch *amqp.Channel, name string, extra amqp.Table) error {
	_, err := ch.QueueDeclare(name,
		true,  // durable
		false, // autoDelete
		false, // exclusive
		false, // noWait
		b.queueArgs(extra))
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) && amqpErr.Code == amqp.PreconditionFailed {
		return fmt.Errorf("declare queue %s as %s: it exists with other settings (a queue keeps its type; delete it or set QUEUE_TYPE to match): %w", name, b.queueType, err)
	}
	if err != nil {
		return fmt.Errorf("declare queue %s: %w", name, err)
	}
	return nil
}

// publisherChannels is how many confirming channels a publisher spreads
// its messages over. One channel serializes its frames and its confirms;
// a few let more messages be in flight at once (RabbitMQ runs each
// channel as its own process), which is what submit throughput rests on.
const publisherChannels = 4

// amqpPublisher is one publishing connection with confirming channels.
type amqpPublisher struct {
	conn  *amqp.Connection
	chans []*confirmChannel
	next  atomic.Uint32

	mu       sync.Mutex
	declared map[string]struct{} // delay queues declared on this connection
}

// confirmChannel is a channel in confirm mode with the returns it got.
type confirmChannel struct {
	ch      *amqp.Channel
	returns chan amqp.Return

	mu       sync.Mutex
	returned map[string]struct{}
}

// channel picks the next channel, round robin.
func (p *amqpPublisher) channel() *confirmChannel {
	return p.chans[int(p.next.Add(1))%len(p.chans)]
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
		return nil, fmt.Errorf("%w: %v", errBrokerUnavailable, b.lastDialErr)
	}
	redial := !b.lastDialAt.IsZero()
	p, err := b.openPublisher()
	b.lastDialAt, b.lastDialErr = time.Now(), err
	if err == nil && redial && b.onReconnect != nil {
		b.onReconnect("publisher")
	}
	if err != nil {
		b.log.Warn("rabbitmq publisher unavailable", "error", err)
		return nil, fmt.Errorf("%w: %v", errBrokerUnavailable, err)
	}
	b.pub = p
	return p, nil
}

func (b *amqpBroker) openPublisher() (*amqpPublisher, error) {
	conn, err := b.dial("publisher")
	if err != nil {
		return nil, err
	}
	p := &amqpPublisher{conn: conn, declared: map[string]struct{}{}}
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

// publish sends m to the work queue as a persistent, mandatory message
// and waits for the broker's confirm: when it returns nil, RabbitMQ has
// the message on a durable queue. Publishes that overlap share a message
// (an envelope) and its confirm; m's own call still returns only once
// that confirm is in.
func (b *amqpBroker) publish(ctx context.Context, m taskMessage) error {
	level := uint8(0)
	if b.queueType == queueClassic {
		level = priorityLevels[m.Priority]
	}
	_, err := b.submits[level].do(ctx, m)
	return err
}

// publishEnvelope publishes one batch of tasks and tells every caller the
// outcome of its confirm. A batch of one is an ordinary task message, with
// its trace context in the headers as well as the body.
func (b *amqpBroker) publishEnvelope(ctx context.Context, batch []taskMessage) []batchOutcome[struct{}] {
	// The publish timeout bounds the batch, whose callers' contexts it
	// does not have.
	var err error
	if len(batch) == 1 {
		err = b.publishTask(ctx, batch[0])
	} else {
		err = b.publishTasks(ctx, batch)
	}
	if err == nil && b.onEnvelope != nil {
		b.onEnvelope(len(batch))
	}
	out := make([]batchOutcome[struct{}], len(batch))
	for i := range out {
		out[i].err = err
	}
	return out
}

func (b *amqpBroker) publishTask(ctx context.Context, m taskMessage) error {
	body, err := encodeTaskMessage(m)
	if err != nil {
		return err
	}
	return b.publishTo(ctx, b.queue, m.ID, amqp.Publishing{
		Headers:   traceHeaders(m),
		Priority:  priorityLevels[m.Priority],
		Type:      m.Type,
		Timestamp: m.EnqueuedAt,
		Body:      body,
	}, nil)
}

// publishTasks publishes msgs, which share a priority, as one envelope.
// Each task's trace context travels in its own part of the body.
func (b *amqpBroker) publishTasks(ctx context.Context, msgs []taskMessage) error {
	body, err := encodeTaskEnvelope(msgs)
	if err != nil {
		return err
	}
	id := fmt.Sprintf("%s+%d", msgs[0].ID, len(msgs)-1)
	return b.publishTo(ctx, b.queue, id, amqp.Publishing{
		ContentType: taskEnvelopeContentType,
		Priority:    priorityLevels[msgs[0].Priority],
		Timestamp:   msgs[0].EnqueuedAt,
		Body:        body,
	}, nil)
}

// traceHeaders puts the message's trace context in AMQP headers.
func traceHeaders(m taskMessage) amqp.Table {
	if len(m.Trace) == 0 {
		return nil
	}
	h := amqp.Table{}
	for k, v := range m.Trace {
		h[k] = v
	}
	return h
}

// publishDelayed puts m on a delay queue whose messages expire after delay
// (rounded up to whole seconds) and are then dead-lettered back onto the
// work queue. The wait holds no worker and survives any restart, because
// it is RabbitMQ's. Each delay gets its own queue, since a queue expires
// messages only from its head; unused delay queues delete themselves.
func (b *amqpBroker) publishDelayed(ctx context.Context, m taskMessage, delay time.Duration) error {
	body, err := encodeTaskMessage(m)
	if err != nil {
		return err
	}
	secs := max(1, int64((delay+time.Second-1)/time.Second))
	delayQueue := fmt.Sprintf("%s.retry.%ds", b.queue, secs)
	declare := func(ch *amqp.Channel) error {
		return b.declareQueue(ch, delayQueue, amqp.Table{
			"x-message-ttl":             secs * 1000,
			"x-dead-letter-exchange":    "",
			"x-dead-letter-routing-key": b.queue,
			"x-expires":                 secs*1000 + int64(time.Hour/time.Millisecond),
		})
	}
	return b.publishTo(ctx, delayQueue, m.ID, amqp.Publishing{
		Headers:   traceHeaders(m),
		Priority:  priorityLevels[m.Priority],
		Type:      m.Type,
		Timestamp: m.EnqueuedAt,
		Body:      body,
	}, declare)
}

// publishDead puts a message body on the dead-letter queue with the reason
// it can never run, in the x-errand-reason header.
func (b *amqpBroker) publishDead(ctx context.Context, body []byte, id, reason string) error {
	return b.publishTo(ctx, b.deadQueue, id, amqp.Publishing{
		Headers: amqp.Table{"x-errand-reason": reason},
		Body:    body,
	}, nil)
}

// publishTo publishes msg to queue (through the default exchange) and
// waits, within the publish timeout, for its confirm. declare, when not
// nil, declares the queue first on the publishing channel.
func (b *amqpBroker) publishTo(ctx context.Context, queue, id string, msg amqp.Publishing, declare func(*amqp.Channel) error) error {
	p, err := b.publisher()
	if err != nil {
		return err
	}
	if declare != nil {
		if err := p.declareOnce(queue, declare); err != nil {
			b.dropPublisher(p)
			return fmt.Errorf("%w: declare %s: %v", errBrokerUnavailable, queue, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, b.publishTimeout)
	defer cancel()
	if msg.ContentType == "" {
		msg.ContentType = "application/json"
	}
	msg.DeliveryMode = amqp.Persistent
	msg.MessageId = id
	c := p.channel()
	confirm, err := c.ch.PublishWithDeferredConfirmWithContext(ctx, "", queue,
		true,  // mandatory: an unroutable message comes back instead of vanishing
		false, // immediate
		msg)
	if err != nil {
		b.dropPublisher(p)
		return fmt.Errorf("%w: publish %s: %v", errBrokerUnavailable, id, err)
	}
	acked, err := confirm.WaitContext(ctx)
	if err != nil {
		return fmt.Errorf("%w: wait for confirm of %s: %v", errBrokerUnavailable, id, err)
	}
	if !acked {
		return fmt.Errorf("%w: broker nacked %s", errBrokerUnavailable, id)
	}
	if c.wasReturned(id) {
		return fmt.Errorf("%w: %s was unroutable (queue %s missing)", errBrokerUnavailable, id, queue)
	}
	return nil
}

// declareOnce runs declare for queue the first time this publisher needs
// it. Declaring is idempotent, so a race only costs a round trip.
func (p *amqpPublisher) declareOnce(queue string, declare func(*amqp.Channel) error) error {
	p.mu.Lock()
	_, done := p.declared[queue]
	p.mu.Unlock()
	if done {
		return nil
	}
	if err := declare(p.chans[0].ch); err != nil {
		return err
	}
	p.mu.Lock()
	p.declared[queue] = struct{}{}
	p.mu.Unlock()
	return nil
}

func (b *amqpBroker) dropPublisher(p *amqpPublisher) {
	b.mu.Lock()
	if b.pub == p {
		b.pub = nil
	}
	b.mu.Unlock()
	p.conn.Close()
}

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

// queueDepths reads the ready-message counts of the work and dead-letter
// queues with a passive declare on a short-lived channel.
func (b *amqpBroker) queueDepths(ctx context.Context) (map[string]int, error) {
	p, err := b.publisher()
	if err != nil {
		return nil, err
	}
	type answer struct {
		depths map[string]int
		err    error
	}
	done := make(chan answer, 1)
	go func() {
		ch, err := p.conn.Channel()
		if err != nil {
			done <- answer{err: fmt.Errorf("open channel: %w", err)}
			return
		}
		defer ch.Close()
		depths := map[string]int{}
		for _, q := range []string{b.queue, b.deadQueue} {
			info, err := ch.QueueDeclarePassive(q, true, false, false, false, nil)
			if err != nil {
				done <- answer{err: fmt.Errorf("inspect queue %s: %w", q, err)}
				return
			}
			depths[q] = info.Messages
		}
		done <- answer{depths: depths}
	}()
	select {
	case a := <-done:
		return a.depths, a.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// consume feeds out with deliveries until ctx ends, redialling after every
// lost connection for as long as it takes. When it returns, no new
// delivery will arrive; those handed out stay settleable until close.
func (b *amqpBroker) consume(ctx context.Context, prefetch int, out chan<- delivery) error {
	const maxBackoff = 5 * time.Second
	backoff := 100 * time.Millisecond
	for session := 0; ctx.Err() == nil; session++ {
		if session > 0 && b.onReconnect != nil {
			b.onReconnect("consumer")
		}
		started := time.Now()
		err := b.consumeSession(ctx, prefetch, out)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		b.log.Warn("rabbitmq consumer lost its connection; redialling", "error", err, "retry_in", backoff.String())
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, maxBackoff)
	}
	return nil
}

func (b *amqpBroker) consumeSession(ctx context.Context, prefetch int, out chan<- delivery) error {
	conn, err := b.dial("consumer")
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.consumers[conn] = struct{}{}
	b.mu.Unlock()
	forget := func() {
		b.mu.Lock()
		delete(b.consumers, conn)
		b.mu.Unlock()
		conn.Close()
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Qos(prefetch, 0, false)
	}
	if err == nil {
		err = b.declareTopology(ch)
	}
	if err != nil {
		forget()
		return fmt.Errorf("open consumer channel: %w", err)
	}
	tag := fmt.Sprintf("errand-%d-%d", os.Getpid(), time.Now().UnixNano())
	msgs, err := ch.Consume(b.queue, tag,
		false, // autoAck: a task is acked only after its result is stored
		false, // exclusive
		false, // noLocal
		false, // noWait
		nil)
	if err != nil {
		forget()
		return fmt.Errorf("consume %s: %w", b.queue, err)
	}
	b.log.Info("consuming", "queue", b.queue, "prefetch", prefetch)
	// Messages are read as they come, and their tasks wait here, in
	// arrival order, until a worker takes them; now and then the
	// envelopes that waited too long go back to the queue.
	var held []heldTask
	staleCheck := time.NewTicker(max(b.envelopeHold/4, time.Millisecond))
	defer staleCheck.Stop()
	for {
		var next chan<- delivery
		var head delivery
		if len(held) > 0 {
			next, head = out, held[0].delivery
		}
		select {
		case <-ctx.Done():
			// Shutting down before these started: back to the queue.
			for _, h := range held {
				_ = h.reject(true)
			}
			b.stopConsuming(ch, tag, msgs)
			return nil
		case d, ok := <-msgs:
			if !ok {
				// The tasks still held cannot be settled on a closed
				// channel; the broker requeues their messages.
				forget()
				return errors.New("delivery channel closed")
			}
			parts := amqpDeliveries(d)
			msg := &heldMessage{arrived: time.Now(), republishable: len(parts) > 1 && !d.Redelivered}
			for _, part := range parts {
				held = append(held, heldTask{delivery: part, msg: msg})
			}
		case next <- head:
			held[0].msg.started = true
			held[0] = heldTask{} // let the delivery go once its task is done
			held = held[1:]
		case now := <-staleCheck.C:
			held = b.republishStale(ctx, held, now)
		}
	}
}

// envelopeHoldLimit bounds how long a consumer holds an envelope none of
// whose tasks a worker has taken. A consumer holds up to its prefetch in
// messages, so up to maxEnvelopeTasks times that in tasks, and behind
// long tasks they would sit there while other workers have nothing to
// do, and their messages stay unacked toward RabbitMQ's consumer_timeout
// (30 minutes by default), which closes the channel and sends back every
// unacked message, running tasks included. Past the limit such an
// envelope's tasks go back to the queue as single messages, which any
// worker can take, and the envelope is acked.
const envelopeHoldLimit = 30 * time.Second

// heldMessage is what the consumer knows of a message whose tasks it holds.
type heldMessage struct {
	arrived time.Time
	// started: a worker has taken one of its tasks. The message is then
	// acked only when that task ends, and if it comes back meanwhile
	// (a rejected part, a lost connection) every task in it comes back,
	// so none of them may go out a second way.
	started bool
	// republishable: an envelope that has not come back from the queue. A
	// redelivered task needs the worker's check for a stored result and
	// its delivery count, which a fresh copy would not get.
	republishable bool
}

// heldTask is a delivered task that no worker has taken yet.
type heldTask struct {
	delivery
	msg *heldMessage
}

// republishStale sends back to the queue the tasks of every envelope in held
// that arrived envelopeHold or more before now, is republishable and has no
// task started, and returns the rest of held in order. Each task goes as
// a single message (which is never republished again) and its part of the
// envelope is acked once the broker has confirmed the copy, so the
// envelope is acked once all are. A crash in between runs the task twice,
// as any redelivered task can.
func (b *amqpBroker) republishStale(ctx context.Context, held []heldTask, now time.Time) []heldTask {
	kept := held[:0]
	republished := 0
	for i := 0; i < len(held); {
		msg := held[i].msg
		if now.Sub(msg.arrived) < b.envelopeHold {
			kept = append(kept, held[i:]...) // later messages arrived later still
			break
		}
		// A message's tasks are next to each other in held.
		j := i + 1
		for j < len(held) && held[j].msg == msg {
			j++
		}
		if msg.started || !msg.republishable {
			kept = append(kept, held[i:j]...)
		} else {
			left := b.republish(ctx, held[i:j])
			republished += j - i - len(left)
			kept = append(kept, left...)
		}
		i = j
	}
	clear(held[len(kept):])
	if republished > 0 {
		b.log.Info("sent the tasks of envelopes that waited for a worker back to the queue", "tasks", republished, "waited_at_least", b.envelopeHold.String())
		if b.onRepublish != nil {
			b.onRepublish(republished)
		}
	}
	return kept
}

// republish publishes each of tasks as a single message, all at once, acks
// the part of every one the broker confirmed, and returns the others.
// Shutdown does not cut a publish short (the publish timeout bounds it):
// a publish abandoned unconfirmed may still reach the queue, and the task
// would then also go back with its envelope. The same holds for the
// copies of an envelope of which some publishes failed: its remaining
// tasks are tried again at the next check, but if a worker takes one
// first and the envelope later comes back, the copied tasks come with it.
func (b *amqpBroker) republish(ctx context.Context, tasks []heldTask) []heldTask {
	ctx = context.WithoutCancel(ctx)
	errs := make([]error, len(tasks))
	var wg sync.WaitGroup
	for i, h := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := decodeTaskMessage(h.body)
			if err == nil {
				err = b.publishTask(ctx, m)
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	var left []heldTask
	for i, h := range tasks {
		if errs[i] != nil {
			b.log.Warn("could not send a long-held envelope task back to the queue; keeping it", "error", errs[i])
			left = append(left, h)
			continue
		}
		if err := h.ack(); err != nil {
			b.log.Warn("acking a republished envelope task failed; the envelope comes back and the task may run twice", "error", err)
		}
	}
	return left
}

// stopConsuming cancels the consumer and requeues what the broker had
// already pushed to it, leaving the connection open for in-flight acks.
func (b *amqpBroker) stopConsuming(ch *amqp.Channel, tag string, msgs <-chan amqp.Delivery) {
	if err := ch.Cancel(tag, false); err != nil {
		return // the channel is gone, and the broker requeues everything unacked
	}
	for d := range msgs {
		_ = d.Nack(false, true)
	}
}

// amqpDeliveries turns a message into the deliveries of its tasks: one
// for a task message, one per task for an envelope. An envelope that does
// not decode is handed on whole, and the worker dead-letters it.
func amqpDeliveries(d amqp.Delivery) []delivery {
	single := amqpDelivery(d)
	if d.ContentType != taskEnvelopeContentType {
		return []delivery{single}
	}
	bodies, err := splitTaskEnvelope(d.Body)
	if err != nil {
		return []delivery{single}
	}
	settlement := newEnvelopeSettlement(len(bodies), single.ack, func() error { return single.reject(true) })
	return settlement.parts(bodies, single.headers, d.Redelivered)
}

func amqpDelivery(d amqp.Delivery) delivery {
	var headers map[string]string
	for k, v := range d.Headers {
		if s, ok := v.(string); ok {
			if headers == nil {
				headers = map[string]string{}
			}
			headers[k] = s
		}
	}
	return delivery{
		body:        d.Body,
		headers:     headers,
		redelivered: d.Redelivered,
		ack:         func() error { return d.Ack(false) },
		reject:      func(requeue bool) error { return d.Nack(false, requeue) },
	}
}

// close closes every connection. Unsettled deliveries go back to the
// queue, which is how a worker's abandoned tasks are requeued.
func (b *amqpBroker) close() {
	// The envelope publishers first, and outside mu: a batch in flight
	// needs mu to reach its connection.
	b.closeSubmits.Do(func() {
		for _, submits := range b.submits {
			submits.close()
		}
	})
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
