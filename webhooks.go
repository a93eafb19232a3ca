package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"errand/tasks"
)

// A task submitted with a callback_url has its final status POSTed there
// when it ends. The POST is a task of its own (webhookTaskType), queued by
// the worker that finished the task before it acks it, so a delivery is
// as durable as the task: it survives crashes, retries with backoff on
// the delay queues (holding no worker slot while it waits), and its
// outcome is kept like any task's and shown in the task's detail.

// webhookTaskType is the internal task type of deliveries. It is not in
// the registry: clients cannot submit it.
const webhookTaskType = "errand.webhook"

// webhookOwner owns the delivery tasks. It is no API key's owner id (those
// are hex digests), so deliveries appear in no key's listing or dead
// letters; the task a delivery reports on shows it.
const webhookOwner = "errand:webhooks"

// webhookPolicy retries a failing endpoint 12 times, from 1 s doubling,
// with jitter: over 35 to 70 minutes, then it gives up.
var webhookPolicy = tasks.Policy{MaxRetries: 12, BackoffBase: time.Second, BackoffMax: time.Hour}

// Webhook request headers.
const (
	webhookSignatureHeader = "Errand-Signature"
	// webhookDeliveryHeader is the delivery's id, the same on every retry:
	// receivers drop the deliveries they have seen.
	webhookDeliveryHeader = "Errand-Delivery"
	webhookEventHeader    = "Errand-Event"
)

// maxCallbackURL bounds a callback_url's length.
const maxCallbackURL = 2048

// webhookConfig is what webhooks take from errand's settings.
type webhookConfig struct {
	// secret is WEBHOOK_SECRET; without it errand sends no webhooks and
	// refuses callback URLs.
	secret string
	// allowHosts may be called back although they are loopback, private
	// or link-local (WEBHOOK_ALLOW_HOSTS).
	allowHosts []string
	// timeout bounds one delivery attempt.
	timeout time.Duration
}

func (c webhookConfig) enabled() bool { return c.secret != "" }

// secretOf is the signing secret of owner's webhooks: with API keys, one
// per key, derived from WEBHOOK_SECRET so no key can verify (or forge)
// another's; without keys, WEBHOOK_SECRET itself.
func (c webhookConfig) secretOf(owner string) string {
	if owner == "" {
		return c.secret
	}
	mac := hmac.New(sha256.New, []byte(c.secret))
	mac.Write([]byte("errand webhook secret\x00" + owner))
	return "whsec_" + hex.EncodeToString(mac.Sum(nil))
}

// signWebhook is the Errand-Signature of body sent at t with secret:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">", as Stripe signs
// its webhooks. The timestamp lets receivers refuse old replays.
func signWebhook(secret string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// checkCallbackURL refuses a callback URL errand will not call: not an
// absolute http(s) URL, one carrying credentials (a task's detail shows
// its URL), or one naming a loopback, private or link-local address that
// WEBHOOK_ALLOW_HOSTS does not list. A name that resolves to such an
// address is refused when the delivery dials it.
func (c webhookConfig) checkCallbackURL(raw, field string) error {
	if !c.enabled() {
		return invalidField(field, "webhooks are off: the server has no WEBHOOK_SECRET")
	}
	u, err := url.Parse(raw)
	switch {
	case len(raw) > maxCallbackURL:
		return invalidField(field, "must be at most %d characters", maxCallbackURL)
	case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "":
		return invalidField(field, "must be an absolute http or https URL")
	case u.User != nil:
		return invalidField(field, "must not carry credentials; verify errand's signature instead")
	}
	host := strings.ToLower(u.Hostname())
	for _, allowed := range c.allowHosts {
		allowed = strings.ToLower(strings.TrimSpace(allowed))
		if allowed == host || allowed == strings.ToLower(u.Host) {
			return nil
		}
	}
	addr, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil && numericHost(host) {
		// 2130706433, 127.1, 0x7f000001: old spellings of addresses that
		// some resolvers take and errand's does not.
		return invalidField(field, "must name a host, or an address written as a dotted IPv4 or an IPv6 one")
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") || (err == nil && tasks.InternalAddr(addr)) {
		return invalidField(field, "names a loopback, private or link-local address; WEBHOOK_ALLOW_HOSTS can allow %s", host)
	}
	return nil
}

// numericHost reports whether host's last label is a number (decimal or
// 0x hex): no DNS name ends so, so it is meant as an address.
func numericHost(host string) bool {
	last := host[strings.LastIndex(host, ".")+1:]
	if hex, ok := strings.CutPrefix(last, "0x"); ok {
		return strings.Trim(hex, "0123456789abcdef") == ""
	}
	return last != "" && strings.Trim(last, "0123456789") == ""
}

// webhookDeliveryID is the id of the task that delivers id's webhook.
func webhookDeliveryID(id string) string { return id + ".webhook" }

// webhookArgs are a delivery task's arguments.
type webhookArgs struct {
	URL    string `json:"url"`
	TaskID string `json:"task_id,omitempty"`
	// WorkflowID is set, instead of TaskID, for a workflow's webhook.
	WorkflowID string `json:"workflow_id,omitempty"`
}

// webhookSender delivers webhooks: the handler of webhookTaskType.
type webhookSender struct {
	cfg     webhookConfig
	results resultSaver
	client  *http.Client
	now     func() time.Time
	// workflows describes the workflows whose webhooks are sent; nil
	// where there are none.
	workflows *workflowEngine
}

func newWebhookSender(cfg webhookConfig, results resultSaver, now func() time.Time, workflows *workflowEngine) *webhookSender {
	return &webhookSender{cfg: cfg, results: results, now: now, workflows: workflows, client: &http.Client{
		Transport: tasks.GuardedTransport(cfg.allowHosts, "WEBHOOK_ALLOW_HOSTS"),
		Timeout:   cfg.timeout,
		// A redirect is an answer that is not 2xx: the delivery failed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// definition is the delivery task's definition, which the worker pool
// looks up beside the registry's.
func (s *webhookSender) definition() tasks.Definition {
	return tasks.Definition{Name: webhookTaskType, Description: "POSTs a finished task's status to its callback_url", Run: s.deliver, Policy: webhookPolicy}
}

// deliver POSTs the finished task's status, signed with its owner's
// secret. Any answer but a 2xx is a failure, retried under webhookPolicy.
func (s *webhookSender) deliver(ctx context.Context, task tasks.Task, raw json.RawMessage) (any, error) {
	var args webhookArgs
	if err := json.Unmarshal(raw, &args); err != nil || args.URL == "" || (args.TaskID == "") == (args.WorkflowID == "") {
		return nil, fmt.Errorf("%w: a delivery needs url and task_id or workflow_id", tasks.ErrInvalidArgs)
	}
	if _, err := s.results.getResult(ctx, task.ID); err == nil {
		// A duplicate of a delivery that has ended (its task was
		// redelivered after queueing it): the first outcome stands.
		return map[string]any{"duplicate": true}, nil
	}
	if !s.cfg.enabled() {
		return nil, errors.New("this worker has no WEBHOOK_SECRET to sign with")
	}
	body, owner, event, err := s.report(ctx, args)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, args.URL, bytes.NewReader(body))
	if err != nil {
		return nil, tasks.Permanent(errors.New("callback URL is not a valid URL"))
	}
	// Errors name the endpoint by its scheme and host: the path and query
	// may hold a token, and errors go to logs.
	endpoint := req.URL.Scheme + "://" + req.URL.Host
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "errand-webhooks/1")
	req.Header.Set(webhookDeliveryHeader, task.ID)
	req.Header.Set(webhookEventHeader, event)
	req.Header.Set(webhookSignatureHeader, signWebhook(s.cfg.secretOf(owner), s.now(), body))
	resp, err := s.client.Do(req)
	if err != nil {
		var urlErr *url.Error
		if errors.As(err, &urlErr) {
			err = urlErr.Err // it repeats the whole URL
		}
		if errors.Is(err, tasks.ErrForbiddenAddress) {
			return nil, tasks.Permanent(fmt.Errorf("POST %s: %w", endpoint, err))
		}
		return nil, fmt.Errorf("POST %s: %w", endpoint, err)
	}
	// Reading a little of the body lets the connection be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("POST %s: answered %s", endpoint, resp.Status)
	}
	return map[string]any{"url": args.URL, "status_code": resp.StatusCode}, nil
}

// report is what a delivery sends: the body GET /api/tasks/{id} (or GET
// /api/workflows/{id}) answers, its owner, whose secret signs it, and its
// event ("task.success", "workflow.failure").
func (s *webhookSender) report(ctx context.Context, args webhookArgs) (body []byte, owner, event string, err error) {
	if args.WorkflowID != "" {
		if s.workflows == nil {
			return nil, "", "", errors.New("this worker has no workflow store")
		}
		w, err := s.workflows.store.getWorkflow(ctx, args.WorkflowID)
		if errors.Is(err, errNotFound) {
			return nil, "", "", tasks.Permanent(fmt.Errorf("workflow %s is gone", args.WorkflowID))
		}
		if err != nil {
			return nil, "", "", fmt.Errorf("read workflow %s: %w", args.WorkflowID, err)
		}
		doc, err := s.workflows.describe(ctx, w)
		if err != nil {
			return nil, "", "", fmt.Errorf("describe workflow %s: %w", args.WorkflowID, err)
		}
		body, err = json.Marshal(doc)
		return body, w.Owner, "workflow." + strings.ToLower(doc.Status), err
	}
	rec, err := s.results.getResult(ctx, args.TaskID)
	if errors.Is(err, errNotFound) {
		return nil, "", "", tasks.Permanent(fmt.Errorf("task %s has no result to report", args.TaskID))
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("read the result of %s: %w", args.TaskID, err)
	}
	body, err = json.Marshal(newTaskJSON(rec.status()))
	if err != nil {
		return nil, "", "", fmt.Errorf("encode the status of %s: %w", args.TaskID, err)
	}
	return body, rec.Owner, "task." + strings.ToLower(rec.Status), nil
}

// newWebhookDelivery is the message and the PENDING status of the
// delivery of subject's webhook (a task's or a workflow's id), which
// continues ctx's trace.
func newWebhookDelivery(ctx context.Context, tr *tracing, args webhookArgs, subject string, now time.Time) (taskMessage, taskStatus, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return taskMessage{}, taskStatus{}, fmt.Errorf("encode webhook of %s: %w", subject, err)
	}
	msg := taskMessage{ID: webhookDeliveryID(subject), Type: webhookTaskType, Args: raw, Priority: "normal", EnqueuedAt: now,
		Owner: webhookOwner, Trace: propagation.MapCarrier{}}
	tr.propagator.Inject(ctx, propagation.MapCarrier(msg.Trace))
	pending := taskStatus{TaskID: msg.ID, Status: statePending, TaskType: msg.Type, Owner: msg.Owner, TraceID: traceID(ctx),
		UpdatedAt: now, Args: raw, Priority: msg.Priority, CreatedAt: &now}
	return msg, pending, nil
}

// queueWebhook queues the delivery of a finished task's webhook, if it has
// a callback URL; the worker acks the task only once the broker has the
// delivery. A task finished twice (redelivered after its ack was lost)
// queues a second delivery with the same id, which sees the first's
// outcome and ends without a POST if it has one.
func (p *workerPool) queueWebhook(ctx context.Context, j job, rec taskRecord) error {
	// The message has the URL even when the record, saved first by a
	// cancel, does not.
	callback := cmp.Or(rec.CallbackURL, j.msg.CallbackURL)
	if callback == "" {
		return nil
	}
	msg, pending, err := newWebhookDelivery(ctx, p.tracing, webhookArgs{URL: callback, TaskID: rec.TaskID}, rec.TaskID, p.now())
	if err != nil {
		return err
	}
	p.putStatus(ctx, j, pending, 0)
	if err := p.queue.publish(ctx, msg); err != nil {
		return fmt.Errorf("queue webhook of %s: %w", rec.TaskID, err)
	}
	return nil
}

// webhookJSON is how a task's detail shows the delivery of its webhook.
type webhookJSON struct {
	URL string `json:"url"`
	// DeliveryID is the Errand-Delivery header's value.
	DeliveryID string `json:"delivery_id"`
	// Status is the delivery's: PENDING, RETRY (the endpoint failed; see
	// error and retry_at), SUCCESS (a 2xx answer) or FAILURE (it gave up).
	Status     string     `json:"status"`
	Attempts   int        `json:"attempts"`
	StatusCode int        `json:"status_code,omitempty"`
	Error      string     `json:"error,omitempty"`
	RetryAt    *time.Time `json:"retry_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// webhookOf is the state of the delivery of st's webhook; nil before
// the task has ended (or while its delivery is being queued).
func (s taskStatusReader) webhookOf(ctx context.Context, st taskStatus) *webhookJSON {
	if st.CallbackURL == "" || !st.final() {
		return nil
	}
	d, err := s.status(ctx, webhookDeliveryID(st.TaskID))
	if err != nil {
		return nil
	}
	out := &webhookJSON{URL: st.CallbackURL, DeliveryID: d.TaskID, Status: d.Status, Attempts: d.Attempts, Error: d.Error, RetryAt: d.RetryAt}
	if code, ok := d.Result["status_code"].(float64); ok {
		out.StatusCode = int(code)
	} else if code, ok := d.Result["status_code"].(int); ok {
		out.StatusCode = code
	}
	if d.final() {
		finished := d.UpdatedAt
		out.FinishedAt = &finished
		out.Attempts = max(out.Attempts, 1)
	}
	return out
}

// webhookSecretJSON is GET /api/webhook-secret's answer.
type webhookSecretJSON struct {
	Secret string `json:"secret"`
	// Header names the request header that carries the signature.
	Header string `json:"header"`
}

// handleWebhookSecret is GET /api/webhook-secret: the secret that signs
// the webhooks of the request's API key. Without API keys there is none
// to give: the secret is WEBHOOK_SECRET, which the operator has.
func handleWebhookSecret(cfg webhookConfig, keysOn bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		switch {
		case !cfg.enabled():
			return &apiError{status: http.StatusNotFound, code: "webhooks_off", message: "webhooks are off: the server has no WEBHOOK_SECRET"}
		case !keysOn:
			return &apiError{status: http.StatusNotFound, code: "no_api_keys", message: "without API keys, webhooks are signed with WEBHOOK_SECRET itself; errand does not serve it"}
		}
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, webhookSecretJSON{Secret: cfg.secretOf(taskOwner(r.Context())), Header: webhookSignatureHeader})
		return nil
	}
}
