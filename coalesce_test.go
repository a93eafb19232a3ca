package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// loopbackPair is a real TCP connection on loopback: the client side
// wrapped in a coalescingConn, and the server side.
func loopbackPair(t *testing.T) (*coalescingConn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- conn
	}()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close() })
	c := newCoalescingConn(client)
	t.Cleanup(func() { c.Close() })
	return c, server
}

// TestCoalescingConnKeepsEveryWritersBytesInOrder: concurrent writers'
// writes all arrive, whole and each writer's in its own order, and the
// caller's buffer may be reused at once.
func TestCoalescingConnKeepsEveryWritersBytesInOrder(t *testing.T) {
	c, server := loopbackPair(t)
	const writers, each = 8, 2000
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 0, 32)
			for i := range each {
				buf = fmt.Appendf(buf[:0], "%d:%d\n", w, i)
				if _, err := c.Write(buf); err != nil {
					t.Errorf("write: %v", err)
					return
				}
			}
		}()
	}
	next := make([]int, writers)
	lines := bufio.NewScanner(server)
	_ = server.SetReadDeadline(time.Now().Add(20 * time.Second))
	for n := 0; n < writers*each && lines.Scan(); n++ {
		var w, i int
		if _, err := fmt.Sscanf(lines.Text(), "%d:%d", &w, &i); err != nil || w < 0 || w >= writers {
			t.Fatalf("line %d is %q: a write was torn or mixed with another", n, lines.Text())
		}
		if i != next[w] {
			t.Fatalf("writer %d: got message %d, want %d", w, i, next[w])
		}
		next[w]++
	}
	wg.Wait()
	for w, got := range next {
		if got != each {
			t.Errorf("writer %d: %d of %d messages arrived (scan error %v)", w, got, each, lines.Err())
		}
	}
}

// TestCoalescingConnCloseWritesWhatIsQueued: bytes written just before
// Close (amqp091's connection.close frame, say) still go out.
func TestCoalescingConnCloseWritesWhatIsQueued(t *testing.T) {
	c, server := loopbackPair(t)
	want := strings.Repeat("last words ", 1000)
	if _, err := c.Write([]byte(want)); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	_ = server.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(server)
	if err != nil || string(got) != want {
		t.Fatalf("read %d bytes (%v), want the %d written before Close", len(got), err, len(want))
	}
	if _, err := c.Write([]byte("more")); err == nil {
		t.Error("write after Close succeeded")
	}
}

// TestCoalescingConnReportsAFailedWrite: once the socket fails, Write
// returns an error, as amqp091 needs to notice the connection is gone.
func TestCoalescingConnReportsAFailedWrite(t *testing.T) {
	c, server := loopbackPair(t)
	if tcp, ok := server.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0) // close with a reset
	}
	server.Close()
	chunk := make([]byte, 64<<10)
	waitFor(t, 10*time.Second, "a write to fail after the peer reset", func() bool {
		_, err := c.Write(chunk)
		return err != nil
	})
}

// countingWriter records what is written to it and in how many calls.
type countingWriter struct {
	mu    sync.Mutex
	calls int
	buf   strings.Builder
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	return w.buf.Write(p)
}

func (w *countingWriter) written() (string, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String(), w.calls
}

// TestCoalescingWriterLingers: with a linger, lines that come one at a
// time, never crowding, still share writes: the flusher writes at most
// once per linger, and every line arrives, in order.
func TestCoalescingWriterLingers(t *testing.T) {
	out := &countingWriter{}
	const linger, lines = 20 * time.Millisecond, 100
	c := newCoalescingWriter(out, nil, linger)
	var want strings.Builder
	start := time.Now()
	for i := range lines {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		if _, err := c.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	c.close(10 * time.Second)
	got, calls := out.written()
	if got != want.String() {
		t.Fatalf("got %q, want the %d lines in order", got, lines)
	}
	// One write per linger while the lines came, one at the start and one
	// at close.
	if limit := int(elapsed/linger) + 2; calls > limit {
		t.Errorf("%d lines over %s took %d writes, want at most %d with a %s linger", lines, elapsed, calls, limit, linger)
	}
}

// TestCoalescingWriterCloseCutsTheLingerShort: what is queued while the
// flusher lingers is written at close, without waiting out the linger.
func TestCoalescingWriterCloseCutsTheLingerShort(t *testing.T) {
	out := &countingWriter{}
	c := newCoalescingWriter(out, nil, time.Hour)
	if _, err := c.Write([]byte("first ")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first line to be written", func() bool {
		got, _ := out.written()
		return got == "first "
	})
	if _, err := c.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	c.close(10 * time.Second)
	if got, _ := out.written(); got != "first last" {
		t.Fatalf("after close got %q, want %q", got, "first last")
	}
}
