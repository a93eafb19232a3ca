package main

import (
	"bufio"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// smtpSink is a small SMTP server on loopback that keeps what it receives.
// While refuseNext > 0 it answers RCPT TO with a temporary failure (451),
// as a busy or greylisting server does.
type smtpSink struct {
	addr string

	mu         sync.Mutex
	refuseNext int
	refused    int
	messages   []sunkMail
}

type sunkMail struct {
	from, to, data string
}

func startSMTPSink(t *testing.T, refuse int) *smtpSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	s := &smtpSink{addr: l.Addr().String(), refuseNext: refuse}
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go s.serve(conn)
		}
	}()
	return s
}

func (s *smtpSink) serve(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	reply := func(line string) { _, _ = conn.Write([]byte(line + "\r\n")) }
	reply("220 sink ESMTP")
	var mail sunkMail
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"), strings.HasPrefix(cmd, "HELO"):
			reply("250 sink")
		case strings.HasPrefix(cmd, "MAIL FROM:"):
			mail = sunkMail{from: strings.TrimSpace(line[len("MAIL FROM:"):])}
			reply("250 OK")
		case strings.HasPrefix(cmd, "RCPT TO:"):
			s.mu.Lock()
			refuse := s.refuseNext > 0
			if refuse {
				s.refuseNext--
				s.refused++
			}
			s.mu.Unlock()
			if refuse {
				reply("451 4.7.1 try again later")
				continue
			}
			mail.to = strings.TrimSpace(line[len("RCPT TO:"):])
			reply("250 OK")
		case cmd == "DATA":
			reply("354 end with <CRLF>.<CRLF>")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				data.WriteString(l)
			}
			mail.data = data.String()
			s.mu.Lock()
			s.messages = append(s.messages, mail)
			s.mu.Unlock()
			reply("250 OK queued")
		case cmd == "RSET", cmd == "NOOP":
			reply("250 OK")
		case cmd == "QUIT":
			reply("221 bye")
			return
		default:
			reply("502 command not implemented")
		}
	}
}

func (s *smtpSink) received() (messages []sunkMail, refused int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]sunkMail(nil), s.messages...), s.refused
}

// TestWelcomeEmailThroughSMTP sends the guide's welcome e-mail through a
// real SMTP conversation: the server refuses the first attempt (451), the
// task retries through RabbitMQ's delay queue, and the second attempt
// delivers exactly one mail to the user.
func TestWelcomeEmailThroughSMTP(t *testing.T) {
	sink := startSMTPSink(t, 1)
	env := realStack(t)
	env["SMTP_ADDR"] = sink.addr
	env["SMTP_FROM"] = "errand@example.com"
	env["EMAIL_STEP_DELAY"] = "1ms"
	base := startErrand(t, env)

	var acc taskAccepted
	if code := apiCall(t, "POST", base+"/api/send-welcome-email?user_email=john@example.com&user_name=John", "", nil, &acc).StatusCode; code != http.StatusAccepted {
		t.Fatalf("POST /api/send-welcome-email: status %d, want 202", code)
	}
	st := waitForStatus(t, base, acc.TaskID, stateSuccess, 30*time.Second)
	if st.Attempts != 2 {
		t.Errorf("attempts = %d, want 2 (one refused, one delivered)", st.Attempts)
	}
	messages, refused := sink.received()
	if refused != 1 || len(messages) != 1 {
		t.Fatalf("SMTP server refused %d and received %d mails, want 1 and 1", refused, len(messages))
	}
	m := messages[0]
	if m.from != "<errand@example.com>" || m.to != "<john@example.com>" {
		t.Errorf("envelope from %s to %s, want <errand@example.com> to <john@example.com>", m.from, m.to)
	}
	for _, want := range []string{"To: john@example.com\r\n", "Subject: Welcome, John!\r\n", "John"} {
		if !strings.Contains(m.data, want) {
			t.Errorf("mail does not contain %q:\n%s", want, m.data)
		}
	}
}

// TestWelcomeEmailFailureNamesWhatFailed: a send that fails shows the
// client what failed (the mail server did not take the message), not the
// server's address or the dial error, which the worker's log keeps.
func TestWelcomeEmailFailureNamesWhatFailed(t *testing.T) {
	closed := freeAddr(t) // nothing listens here
	base := startErrand(t, map[string]string{"SMTP_ADDR": closed, "EMAIL_STEP_DELAY": "1ms"})
	var acc taskAccepted
	if code := apiCall(t, "POST", base+"/api/send-welcome-email?user_email=john@example.com&user_name=John", "", nil, &acc).StatusCode; code != http.StatusAccepted {
		t.Fatalf("submit: %d", code)
	}
	st := waitForStatus(t, base, acc.TaskID, stateRetry, 20*time.Second)
	host, port, _ := net.SplitHostPort(closed)
	if !strings.Contains(st.Error, "the mail server did not take the message") || strings.Contains(st.Error, port) ||
		strings.Contains(st.Error, host) || strings.Contains(st.Error, "refused") {
		t.Errorf("the client sees %q, want what failed without the server's address or the dial error", st.Error)
	}
}
