package main

import (
	"io"
	"net"
	"sync"
	"time"
)

// coalescingWriter lets concurrent writers share system calls. Write only
// queues the bytes and returns, and one flusher goroutine writes whatever
// queued while its previous write was under way, in one call. When writes
// are rare each goes out at once, on its own; when they crowd, many share
// a call. Under load the system calls, not the bytes, are what costs
// (docs/performance.md, "Coalesced writes").
//
// errand uses it where nothing rests on a single write having reached its
// destination: AMQP connections (coalescingConn) and the log.
type coalescingWriter struct {
	w io.Writer
	// onError, when set, runs once after the first failed write.
	onError func()
	// linger is how long the flusher waits after a write before the next,
	// so that what comes meanwhile shares it even when writes do not
	// crowd; zero writes at once.
	linger time.Duration

	mu      sync.Mutex
	ready   *sync.Cond // bytes queued, or closing
	drained *sync.Cond // the queue was taken by the flusher
	queued  []byte
	spare   []byte
	err     error // the first write error
	closing bool
	closed  chan struct{} // closed by close, to cut a linger short
	done    chan struct{} // closed when the flusher has stopped
}

// maxQueuedBytes bounds the queue: a writer waits while the flusher is
// this far behind, so a stalled destination pushes back as it would
// without coalescing.
const maxQueuedBytes = 1 << 20

func newCoalescingWriter(w io.Writer, onError func(), linger time.Duration) *coalescingWriter {
	c := &coalescingWriter{w: w, onError: onError, linger: linger, closed: make(chan struct{}), done: make(chan struct{})}
	c.ready = sync.NewCond(&c.mu)
	c.drained = sync.NewCond(&c.mu)
	go c.flush()
	return c
}

// Write queues p for the flusher. p is copied: the caller may reuse it.
func (c *coalescingWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.err == nil && !c.closing && len(c.queued) >= maxQueuedBytes {
		c.drained.Wait()
	}
	if c.err != nil {
		return 0, c.err
	}
	if c.closing {
		return 0, net.ErrClosed
	}
	c.queued = append(c.queued, p...)
	c.ready.Signal()
	return len(p), nil
}

func (c *coalescingWriter) flush() {
	defer close(c.done)
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for len(c.queued) == 0 && !c.closing {
			c.ready.Wait()
		}
		if len(c.queued) == 0 {
			return // closing, and everything is written
		}
		buf := c.queued
		c.queued = c.spare[:0]
		c.drained.Broadcast()
		c.mu.Unlock()
		_, err := c.w.Write(buf)
		if err == nil && c.linger > 0 {
			c.wait(c.linger)
		}
		c.mu.Lock()
		c.spare = buf[:0]
		if err != nil {
			c.err = err
			c.queued = nil
			c.drained.Broadcast()
			if c.onError != nil {
				c.onError()
			}
			return
		}
	}
}

// wait sleeps for d, or less if close is called meanwhile.
func (c *coalescingWriter) wait(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.closed:
	}
}

// close writes what is queued, waiting at most timeout, and stops the
// flusher. Later writes fail.
func (c *coalescingWriter) close(timeout time.Duration) {
	c.mu.Lock()
	if !c.closing {
		c.closing = true
		close(c.closed)
	}
	c.ready.Signal()
	c.drained.Broadcast()
	c.mu.Unlock()
	select {
	case <-c.done:
	case <-time.After(timeout):
	}
}

// coalescingConn is a network connection whose writes coalesce. amqp091
// writes each publish and each ack with a call of its own, one at a time
// under its connection lock; this makes a busy connection's frames share
// calls.
//
// Nothing errand promises rests on a write having reached the socket: a
// publish counts only once RabbitMQ confirms it, and an ack lost with its
// connection means a redelivery, as any lost ack does. A failed write is
// returned by every later Write and closes the connection, so amqp091
// sees the failure as it would have.
type coalescingConn struct {
	net.Conn
	out *coalescingWriter
}

// closeFlushTimeout bounds how long Close waits for queued bytes (the
// connection.close frame among them) to be written.
const closeFlushTimeout = 2 * time.Second

func newCoalescingConn(conn net.Conn) *coalescingConn {
	// The reader side must learn of a failed write too, at once.
	return &coalescingConn{Conn: conn, out: newCoalescingWriter(conn, func() { conn.Close() }, 0)}
}

func (c *coalescingConn) Write(p []byte) (int, error) { return c.out.Write(p) }

// Close writes what is queued (within closeFlushTimeout), then closes the
// connection.
func (c *coalescingConn) Close() error {
	c.out.close(closeFlushTimeout)
	return c.Conn.Close()
}
