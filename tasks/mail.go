package tasks

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// Mailer delivers one e-mail.
type Mailer interface {
	Send(ctx context.Context, m Mail) error
}

// Mail is an e-mail: a plain text body and, optionally, attachments.
type Mail struct {
	To, Subject, Body string
	Attachments       []Attachment
}

// Attachment is a file attached to a Mail.
type Attachment struct {
	Filename    string
	ContentType string
	Data        []byte
}

// SMTPMailer sends through an SMTP server, with STARTTLS when the server
// offers it and PLAIN auth when a username is set. Every failure is
// returned as is, so the task's retry policy applies to it.
type SMTPMailer struct {
	Addr     string // host:port
	From     string
	Username string
	Password string
	// Timeout bounds the whole conversation with the server.
	Timeout time.Duration
}

// Send delivers the message or returns why it could not.
func (m SMTPMailer) Send(ctx context.Context, mail Mail) error {
	msg, err := mail.message(m.From, time.Now())
	if err != nil {
		return fmt.Errorf("smtp: compose the message: %w", err)
	}
	to := mail.To
	timeout := m.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m.Addr)
	if err != nil {
		return fmt.Errorf("smtp: connect %s: %w", m.Addr, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	host, _, _ := net.SplitHostPort(m.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return fmt.Errorf("smtp: greeting from %s: %w", m.Addr, err)
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return fmt.Errorf("smtp: starttls: %w", err)
		}
	}
	if m.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", m.Username, m.Password, host)); err != nil {
			return fmt.Errorf("smtp: auth: %w", err)
		}
	}
	if err := c.Mail(m.From); err != nil {
		return fmt.Errorf("smtp: MAIL FROM: %w", err)
	}
	if err := c.Rcpt(to); err != nil {
		return fmt.Errorf("smtp: RCPT TO: %w", err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("smtp: DATA: %w", err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("smtp: write message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("smtp: end message: %w", err)
	}
	return c.Quit()
}

// message is mail as RFC 5322 text with CRLF line ends: text/plain
// alone, or multipart/mixed with the text first and each attachment in
// base64.
func (mail Mail) message(from string, now time.Time) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\n",
		from, mail.To, mime.QEncoding.Encode("utf-8", mail.Subject), now.UTC().Format(time.RFC1123Z))
	text := strings.ReplaceAll(mail.Body, "\n", "\r\n") + "\r\n"
	if len(mail.Attachments) == 0 {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\n\r\n" + text)
		return b.Bytes(), nil
	}
	mw := multipart.NewWriter(&b)
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=%q\r\n\r\n", mw.Boundary())
	part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"text/plain; charset=utf-8"}})
	if err != nil {
		return nil, err
	}
	io.WriteString(part, text)
	for _, a := range mail.Attachments {
		part, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {mime.FormatMediaType(a.ContentType, map[string]string{"name": a.Filename})},
			"Content-Disposition":       {mime.FormatMediaType("attachment", map[string]string{"filename": a.Filename})},
			"Content-Transfer-Encoding": {"base64"},
		})
		if err != nil {
			return nil, err
		}
		encoded := base64.StdEncoding.EncodeToString(a.Data)
		for len(encoded) > 76 {
			io.WriteString(part, encoded[:76]+"\r\n")
			encoded = encoded[76:]
		}
		io.WriteString(part, encoded+"\r\n")
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// LogMailer logs the message instead of sending it: errand's mailer when
// no SMTP server is configured, and its log line says so.
type LogMailer struct{ Logger *slog.Logger }

// Send logs the message, and of its attachments their names and sizes.
func (m LogMailer) Send(ctx context.Context, mail Mail) error {
	attached := make([]string, len(mail.Attachments))
	for i, a := range mail.Attachments {
		attached[i] = fmt.Sprintf("%s (%s, %d bytes)", a.Filename, a.ContentType, len(a.Data))
	}
	m.Logger.InfoContext(ctx, "email not sent: no SMTP_ADDR configured, logging it instead",
		"to", mail.To, "subject", mail.Subject, "body", mail.Body, "attachments", attached)
	return nil
}
