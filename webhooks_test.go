package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"errand/tasks"
)

// verifyWebhook checks a webhook's Errand-Signature header against its
// body. The README shows this function for receivers to copy.
func verifyWebhook(secret, header string, body []byte, now time.Time) bool {
	var ts, sig string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	t, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || now.Sub(time.Unix(t, 0)).Abs() > 5*time.Minute {
		return false // no timestamp, or an old delivery replayed
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return hmac.Equal([]byte(sig), []byte(hex.EncodeToString(mac.Sum(nil))))
}

// webhookCall is one request a webhookReceiver got.
type webhookCall struct {
	header http.Header
	body   []byte
	at     time.Time
}

// webhookReceiver is a callback endpoint on 127.0.0.1 that answers each
// call with the next of its answers (the last one once they run out).
type webhookReceiver struct {
	*httptest.Server
	mu      sync.Mutex
	calls   []webhookCall
	answers []int
}

func newWebhookReceiver(t *testing.T, answers ...int) *webhookReceiver {
	rcv := &webhookReceiver{answers: answers}
	rcv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rcv.mu.Lock()
		rcv.calls = append(rcv.calls, webhookCall{header: r.Header.Clone(), body: body, at: time.Now()})
		answer := rcv.answers[min(len(rcv.calls), len(rcv.answers))-1]
		rcv.mu.Unlock()
		w.WriteHeader(answer)
	}))
	t.Cleanup(rcv.Close)
	return rcv
}

func (rcv *webhookReceiver) received() []webhookCall {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return append([]webhookCall(nil), rcv.calls...)
}

// TestWebhookIsSignedAndRetried: a task with a callback_url has its final
// status POSTed there, signed with the key's secret (WEBHOOK_SECRET
// without keys); an endpoint that fails is tried again with backoff under
// the same delivery id, and the task's detail shows how delivery went.
func TestWebhookIsSignedAndRetried(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			rcv := newWebhookReceiver(t, http.StatusServiceUnavailable, http.StatusInternalServerError, http.StatusNoContent)
			e := env(t)
			e["WEBHOOK_SECRET"], e["WEBHOOK_ALLOW_HOSTS"], e["HEAVY_TASK_DELAY"] = "test-webhook-secret", "127.0.0.1", "1ms"
			secret, headers := "test-webhook-secret", map[string]string(nil)
			if name == "real" {
				// On the real stack with API keys: each key has a secret of
				// its own.
				e["API_KEYS"] = "key-a,key-b"
				headers = map[string]string{"X-API-Key": "key-a"}
			}
			base := startErrand(t, e)
			if headers != nil {
				var a, b webhookSecretJSON
				apiCall(t, "GET", base+"/api/webhook-secret", "", headers, &a)
				apiCall(t, "GET", base+"/api/webhook-secret", "", map[string]string{"X-API-Key": "key-b"}, &b)
				if a.Secret == "" || a.Secret == b.Secret || a.Secret == secret || a.Header != "Errand-Signature" {
					t.Fatalf("webhook secrets of key-a %+v and key-b %+v: want two, distinct, and not WEBHOOK_SECRET", a, b)
				}
				secret = a.Secret
			}

			var acc taskAccepted
			resp := apiCall(t, "POST", base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "hook", "iterations": 2},
				"callback_url": "`+rcv.URL+`/hooks/errand"}`, headers, &acc)
			if resp.StatusCode != http.StatusAccepted {
				t.Fatalf("submit with a callback_url: %d %s", resp.StatusCode, resp.body)
			}
			var task taskJSON
			waitFor(t, 30*time.Second, "the task done and its webhook delivered on its third attempt", func() bool {
				task = taskJSON{}
				apiCall(t, "GET", base+"/api/tasks/"+acc.TaskID, "", headers, &task)
				return task.Webhook != nil && task.Webhook.Status == stateSuccess
			})
			if w := task.Webhook; w.Attempts != 3 || w.StatusCode != http.StatusNoContent || w.DeliveryID != acc.TaskID+".webhook" ||
				w.URL != rcv.URL+"/hooks/errand" || w.FinishedAt == nil {
				t.Errorf("webhook in the task's detail: %+v, want SUCCESS after 3 attempts with 204", w)
			}

			calls := rcv.received()
			if len(calls) != 3 {
				t.Fatalf("receiver got %d calls, want 3", len(calls))
			}
			for i, c := range calls {
				if !verifyWebhook(secret, c.header.Get("Errand-Signature"), c.body, time.Now()) {
					t.Errorf("call %d: signature %q does not verify", i, c.header.Get("Errand-Signature"))
				}
				if got := c.header.Get("Errand-Delivery"); got != acc.TaskID+".webhook" {
					t.Errorf("call %d: Errand-Delivery %q, want the same delivery id on every attempt", i, got)
				}
				if got := c.header.Get("Errand-Event"); got != "task.success" {
					t.Errorf("call %d: Errand-Event %q, want task.success", i, got)
				}
				var sent taskJSON
				if err := json.Unmarshal(c.body, &sent); err != nil || sent.TaskID != acc.TaskID || sent.Status != stateSuccess ||
					sent.Result["total_processed"] != float64(2) || sent.FinishedAt == nil {
					t.Errorf("call %d: body %s (%v), want the task's final status", i, c.body, err)
				}
			}
			// Backoff: a wait between attempts, growing (base 1 s, jitter
			// takes at most half).
			if gap1, gap2 := calls[1].at.Sub(calls[0].at), calls[2].at.Sub(calls[1].at); gap1 < 400*time.Millisecond || gap2 < 900*time.Millisecond {
				t.Errorf("retries after %s and %s, want a backoff of at least 0.5 s then 1 s", gap1, gap2)
			}
			tampered := append([]byte(nil), calls[2].body...)
			tampered[len(tampered)-2] ^= 1
			if verifyWebhook(secret, calls[2].header.Get("Errand-Signature"), tampered, time.Now()) ||
				verifyWebhook(secret+"x", calls[2].header.Get("Errand-Signature"), calls[2].body, time.Now()) ||
				verifyWebhook(secret, calls[2].header.Get("Errand-Signature"), calls[2].body, time.Now().Add(time.Hour)) {
				t.Error("verifyWebhook accepted a changed body, a wrong secret or an old delivery")
			}

			if headers == nil {
				page := apiCall(t, "GET", base+"/ui/tasks/"+acc.TaskID, "", nil, nil)
				if !strings.Contains(page.body, "<dt>Webhook</dt>") || !strings.Contains(page.body, ">SUCCESS</span> after 3 attempts (204)") ||
					!strings.Contains(page.body, rcv.URL+"/hooks/errand") {
					t.Errorf("the console's task page does not show the delivery:\n%s", page.body)
				}
			}

			var list taskListJSON
			apiCall(t, "GET", base+"/api/tasks", "", headers, &list)
			for _, lt := range list.Tasks {
				if lt.Type == webhookTaskType {
					t.Errorf("the listing shows the delivery task %s; want only the key's own tasks", lt.TaskID)
				}
			}
		})
	}
}

// TestWebhookOnFailureAndCancel: a task that fails, and one cancelled
// while it waits for its time, send their webhooks too.
func TestWebhookOnFailureAndCancel(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			rcv := newWebhookReceiver(t, http.StatusOK)
			e := env(t)
			e["WEBHOOK_SECRET"], e["WEBHOOK_ALLOW_HOSTS"] = "s", "127.0.0.1"
			base := startErrand(t, e)
			failing := submitGenericTask(t, base, `{"type": "process_image", "args": {"file_id": "000000000000000000000000"}, "callback_url": "`+rcv.URL+`/f"}`)
			waitForStatus(t, base, failing, stateFailure, 20*time.Second)
			later := submitGenericTask(t, base, `{"type": "process_heavy_task", "args": {"data": "x"}, "countdown": 1, "callback_url": "`+rcv.URL+`/r"}`)
			var cancelled taskJSON
			if resp := apiCall(t, "POST", base+"/api/tasks/"+later+"/cancel", "", nil, &cancelled); resp.StatusCode != http.StatusOK || cancelled.Status != stateRevoked {
				t.Fatalf("cancel: %d %+v", resp.StatusCode, cancelled)
			}
			want := map[string]string{failing: "task.failure", later: "task.revoked"}
			for id := range want {
				var task taskJSON
				waitFor(t, 20*time.Second, "the webhook of "+id, func() bool {
					task = taskJSON{}
					apiCall(t, "GET", base+"/api/tasks/"+id, "", nil, &task)
					return task.Webhook != nil && task.Webhook.Status == stateSuccess
				})
				if task.CallbackURL == "" {
					t.Errorf("task %s: no callback_url in its detail", id)
				}
			}
			for _, c := range rcv.received() {
				var sent taskJSON
				if err := json.Unmarshal(c.body, &sent); err != nil {
					t.Fatal(err)
				}
				if event := c.header.Get("Errand-Event"); want[sent.TaskID] != event || "task."+strings.ToLower(sent.Status) != event {
					t.Errorf("webhook of %s (%s): event %q, want %q", sent.TaskID, sent.Status, event, want[sent.TaskID])
				}
				delete(want, sent.TaskID)
			}
			if len(want) != 0 {
				t.Errorf("no webhook received for %v", want)
			}
		})
	}
}

// TestWebhookToADeadEndpointHoldsNoWorker: an endpoint that never answers
// costs a worker one WEBHOOK_TIMEOUT per attempt; between attempts the
// delivery waits on a delay queue, and other tasks run.
func TestWebhookToADeadEndpointHoldsNoWorker(t *testing.T) {
	hung := make(chan struct{})
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hung:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(func() { close(hung); dead.Close() })
	env := realStack(t)
	env["WEBHOOK_SECRET"], env["WEBHOOK_ALLOW_HOSTS"], env["WEBHOOK_TIMEOUT"] = "s", "127.0.0.1", "300ms"
	env["HEAVY_TASK_DELAY"], env["WORKERS"] = "1ms", "1"
	base := startErrand(t, env)

	id := submitGenericTask(t, base, `{"type": "process_heavy_task", "args": {"data": "x", "iterations": 1}, "callback_url": "`+dead.URL+`"}`)
	waitForStatus(t, base, id, stateSuccess, 20*time.Second)
	var task taskJSON
	busy := -1.0
	waitFor(t, 20*time.Second, "the webhook waiting to retry, with time before its next attempt", func() bool {
		task = taskJSON{}
		apiCall(t, "GET", base+"/api/tasks/"+id, "", nil, &task)
		if task.Webhook == nil || task.Webhook.Status != stateRetry || task.Webhook.RetryAt == nil || time.Until(*task.Webhook.RetryAt) < 150*time.Millisecond {
			return false
		}
		busy, _ = sampleValue(scrape(t, base), "errand_workers_busy", nil)
		// Still before the next attempt: busy was read while it waited.
		return time.Until(*task.Webhook.RetryAt) > 0
	})
	if w := task.Webhook; !strings.Contains(w.Error, "Timeout") {
		t.Errorf("webhook: %+v, want RETRY with the timeout", w)
	}
	if busy != 0 {
		t.Errorf("errand_workers_busy = %g while the webhook waits to retry, want 0: the wait must not hold the worker", busy)
	}
	// One worker: these run only if the delivery does not hold it.
	var others []string
	for i := range 5 {
		others = append(others, submitGenericTask(t, base, `{"type": "process_heavy_task", "args": {"data": "next`+strconv.Itoa(i)+`", "iterations": 1}}`))
	}
	for _, other := range others {
		waitForStatus(t, base, other, stateSuccess, 20*time.Second)
	}
}

// submitGenericTask submits body to POST /api/tasks and returns the task's id.
func submitGenericTask(t *testing.T, base, body string) string {
	t.Helper()
	var acc taskAccepted
	if resp := apiCall(t, "POST", base+"/api/tasks", body, nil, &acc); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit %s: %d %s, want 202", body, resp.StatusCode, resp.body)
	}
	return acc.TaskID
}

// TestCallbackURLRules: callback URLs are absolute http(s) URLs without
// credentials, to no loopback, private or link-local address unless
// WEBHOOK_ALLOW_HOSTS lists it; without WEBHOOK_SECRET there are none.
func TestCallbackURLRules(t *testing.T) {
	on := newHandlerFixture(t, func(p *apiParts) {
		p.webhooks = webhookConfig{secret: "s", allowHosts: []string{"127.0.0.1:9999"}, timeout: time.Second}
	})
	off := newHandlerFixture(t)
	submit := func(f *handlerFixture, url string) *httptest.ResponseRecorder {
		body, _ := json.Marshal(map[string]any{"type": "process_heavy_task", "args": map[string]any{"data": "x"}, "callback_url": url})
		return f.serve(t, "POST", "/api/tasks", string(body), nil)
	}
	for _, ok := range []string{"https://example.com/hooks/errand", "http://93.184.216.34:8080/h?x=1", "http://127.0.0.1:9999/allowed"} {
		var acc taskAccepted
		decodeAnswer(t, submit(on, ok), http.StatusAccepted, &acc)
		if m := on.nextTaskMessage(t); m.CallbackURL != ok || m.ID != acc.TaskID {
			t.Errorf("queued message %+v, want callback_url %s", m, ok)
		}
	}
	for _, refused := range []string{
		"ftp://example.com/x", "/relative", "example.com/hook", "http://user:pw@example.com/h", "https://example.com/" + strings.Repeat("a", maxCallbackURL),
		"http://127.0.0.1:8080/h", "http://localhost/h", "http://api.localhost/h", "http://10.1.2.3/h", "http://192.168.0.1/h", "http://[::1]/h",
		"http://169.254.169.254/latest/meta-data", "http://[fe80::1]/h", "http://0.0.0.0/h",
		"http://2130706433/h", "http://127.1/h", "http://0x7f000001/h", "http://[::ffff:127.0.0.1]/h", "http://100.64.0.1/h",
	} {
		checkErrorAnswer(t, submit(on, refused), http.StatusUnprocessableEntity, "validation_error", "callback_url")
	}
	checkErrorAnswer(t, submit(off, "https://example.com/h"), http.StatusUnprocessableEntity, "validation_error", "callback_url")
	batch := `{"tasks": [{"type": "process_heavy_task", "args": {"data": "a"}}, {"type": "process_heavy_task", "args": {"data": "b"}, "callback_url": "http://10.0.0.1/"}]}`
	checkErrorAnswer(t, on.serve(t, "POST", "/api/tasks/batch", batch, nil), http.StatusUnprocessableEntity, "validation_error", "tasks[1].callback_url")

	// A callback URL is part of the request an Idempotency-Key stands for.
	key := map[string]string{"Idempotency-Key": "hook-1"}
	first := on.serve(t, "POST", "/api/tasks", `{"type": "process_heavy_task", "args": {"data": "x"}, "callback_url": "https://example.com/a"}`, key)
	decodeAnswer(t, first, http.StatusAccepted, &taskAccepted{})
	other := on.serve(t, "POST", "/api/tasks", `{"type": "process_heavy_task", "args": {"data": "x"}, "callback_url": "https://example.com/b"}`, key)
	checkErrorAnswer(t, other, http.StatusUnprocessableEntity, "idempotency_key_reused", "Idempotency-Key")
}

// TestWebhookSecretRoute: each API key reads its own secret; without keys
// or without WEBHOOK_SECRET there is none to read.
func TestWebhookSecretRoute(t *testing.T) {
	cfg := webhookConfig{secret: "root-secret", timeout: time.Second}
	keyed := newHandlerFixture(t, func(p *apiParts) { p.webhooks, p.apiKeys = cfg, newAPIKeys("key-a,key-b") })
	var a, b webhookSecretJSON
	decodeAnswer(t, keyed.serve(t, "GET", "/api/webhook-secret", "", map[string]string{"X-API-Key": "key-a"}), http.StatusOK, &a)
	decodeAnswer(t, keyed.serve(t, "GET", "/api/webhook-secret", "", map[string]string{"X-API-Key": "key-b"}), http.StatusOK, &b)
	if cc := keyed.serve(t, "GET", "/api/webhook-secret", "", map[string]string{"X-API-Key": "key-a"}).Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control of the secret: %q, want no-store", cc)
	}
	if a.Secret != cfg.secretOf(mustOwner(t, "key-a")) || b.Secret != cfg.secretOf(mustOwner(t, "key-b")) || a.Secret == b.Secret || a.Secret == cfg.secret {
		t.Errorf("secrets %q and %q: want each key's own, neither WEBHOOK_SECRET", a.Secret, b.Secret)
	}
	checkErrorAnswer(t, keyed.serve(t, "GET", "/api/webhook-secret", "", nil), http.StatusUnauthorized, "unauthorized", "")
	open := newHandlerFixture(t, func(p *apiParts) { p.webhooks = cfg })
	checkErrorAnswer(t, open.serve(t, "GET", "/api/webhook-secret", "", nil), http.StatusNotFound, "no_api_keys", "")
	off := newHandlerFixture(t, func(p *apiParts) { p.apiKeys = newAPIKeys("key-a") })
	checkErrorAnswer(t, off.serve(t, "GET", "/api/webhook-secret", "", map[string]string{"X-API-Key": "key-a"}), http.StatusNotFound, "webhooks_off", "")
}

// TestWebhookRefusesInternalAddressesWhenItDials: a name that resolves to
// loopback passes the submit's check, and the delivery's dial refuses it
// for good: no retry.
func TestWebhookRefusesInternalAddressesWhenItDials(t *testing.T) {
	rcv := newWebhookReceiver(t, http.StatusOK)
	results := newMemoryStore()
	rec := taskRecord{TaskID: "t1", TaskType: "process_heavy_task", Status: stateSuccess, CompletedAt: time.Now()}
	if _, err := results.saveResult(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	port := rcv.URL[strings.LastIndex(rcv.URL, ":"):]
	for _, target := range []string{rcv.URL, "http://localhost" + port} {
		s := newWebhookSender(webhookConfig{secret: "s", timeout: time.Second}, results, time.Now, nil)
		args, _ := json.Marshal(webhookArgs{URL: target, TaskID: "t1"})
		_, err := s.deliver(context.Background(), tasks.Task{ID: "t1.webhook"}, args)
		if !errors.Is(err, tasks.ErrForbiddenAddress) || tasks.Retryable(err) {
			t.Errorf("deliver to %s: %v, want a permanent refusal", target, err)
		}
	}
	if n := len(rcv.received()); n != 0 {
		t.Errorf("receiver got %d calls, want none", n)
	}
}

// failingPublishes is a work queue whose publishes fail.
type failingPublishes struct{ *memoryBroker }

func (failingPublishes) publish(context.Context, taskMessage) error { return errors.New("broker gone") }

// TestFinishedRedeliveryQueuesItsWebhook: a worker that stored a task's
// result and died before queueing its webhook leaves the message unacked;
// its redelivery finds the result and queues the webhook. A worker that
// cannot queue the webhook puts the task back rather than ack it.
func TestFinishedRedeliveryQueuesItsWebhook(t *testing.T) {
	ctx := context.Background()
	msg := taskMessage{ID: "done-1", Type: tasks.HeavyTaskName, Args: json.RawMessage(`{"data":"x"}`), Priority: "normal",
		EnqueuedAt: time.Now(), CallbackURL: "https://example.com/hook"}
	body, err := encodeTaskMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	for _, publishFails := range []bool{false, true} {
		broker, results := newMemoryBroker(), newMemoryStore()
		t.Cleanup(broker.close)
		if _, err := results.saveResult(ctx, taskRecord{TaskID: msg.ID, TaskType: msg.Type, Status: stateSuccess, CompletedAt: time.Now(), CallbackURL: msg.CallbackURL}); err != nil {
			t.Fatal(err)
		}
		var queue workQueue = broker
		if publishFails {
			queue = failingPublishes{broker}
		}
		pool := newWorkerPool(queue, tasks.NewRegistry(tasks.Config{}), newMemoryStatusStore(), results, newMemoryRevocations(time.Hour), memoryKeyStores(), nil,
			workerConfig{size: 1, resultTTL: time.Hour, webhooks: webhookConfig{secret: "s"}}, slog.New(slog.DiscardHandler), testMetrics(), disabledTracing())
		var settled []string
		pool.process(ctx, delivery{body: body, redelivered: true,
			ack: func() error { settled = append(settled, "ack"); return nil },
			reject: func(requeue bool) error {
				settled = append(settled, "reject requeue="+strconv.FormatBool(requeue))
				return nil
			}})
		if publishFails {
			if len(settled) != 1 || settled[0] != "reject requeue=true" {
				t.Errorf("webhook not queued: settled %v, want the task requeued", settled)
			}
			continue
		}
		if len(settled) != 1 || settled[0] != "ack" {
			t.Errorf("settled %v, want one ack", settled)
		}
		f := &handlerFixture{broker: broker}
		got := f.nextTaskMessage(t)
		var args webhookArgs
		if err := json.Unmarshal(got.Args, &args); err != nil || got.ID != "done-1.webhook" || got.Type != webhookTaskType ||
			args != (webhookArgs{URL: msg.CallbackURL, TaskID: msg.ID}) {
			t.Errorf("queued %+v (%v), want the delivery of done-1's webhook", got, err)
		}
	}
}

// TestFailedWebhookIsNotDeadLettered: a delivery that gives up ends
// FAILURE in its task's detail and writes no dead letter: there is no
// task to run again.
func TestFailedWebhookIsNotDeadLettered(t *testing.T) {
	ctx := context.Background()
	broker, results := newMemoryBroker(), newMemoryStore()
	t.Cleanup(broker.close)
	statuses := newMemoryStatusStore()
	m := testMetrics()
	pool := newWorkerPool(broker, tasks.NewRegistry(tasks.Config{}), statuses, results, newMemoryRevocations(time.Hour), memoryKeyStores(), nil,
		workerConfig{size: 1, resultTTL: time.Hour, webhooks: webhookConfig{secret: "s", timeout: time.Second}}, slog.New(slog.DiscardHandler), m, disabledTracing())
	// The task it reports on has no result: a permanent failure.
	args, _ := json.Marshal(webhookArgs{URL: "https://example.com/h", TaskID: "gone"})
	body, err := encodeTaskMessage(taskMessage{ID: "gone.webhook", Type: webhookTaskType, Args: args, Priority: "normal", EnqueuedAt: time.Now(), Owner: webhookOwner})
	if err != nil {
		t.Fatal(err)
	}
	acked := false
	pool.process(ctx, delivery{body: body, ack: func() error { acked = true; return nil }, reject: func(bool) error { return nil }})
	if _, dead := broker.depth(); !acked || dead != 0 {
		t.Errorf("acked %v, %d dead letters; want an ack and none", acked, dead)
	}
	if rec, err := results.getResult(ctx, "gone.webhook"); err != nil || rec.Status != stateFailure || !strings.Contains(rec.Error, "no result") {
		t.Errorf("the delivery's record: %+v, %v; want FAILURE saying why", rec, err)
	}
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range families {
		byName[f.GetName()] = f
	}
	if v, _ := sampleValue(byName, "errand_webhooks_failed_total", nil); v != 1 {
		t.Errorf("errand_webhooks_failed_total = %g, want 1", v)
	}
	if _, ok := findMetric(byName, "errand_tasks_dead_lettered_total", map[string]string{"task_type": webhookTaskType}); ok {
		t.Error("a failed webhook counted as a dead letter")
	}
}

// TestREADMEShowsTheWebhookVerifier: the README's receiver code is the
// verifyWebhook these tests run.
func TestREADMEShowsTheWebhookVerifier(t *testing.T) {
	src, err := os.ReadFile("webhooks_test.go")
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(src), "func verifyWebhook(")
	end := strings.Index(string(src[start:]), "\n}\n") + start + 2
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), string(src[start:end])) {
		t.Errorf("README.md does not show verifyWebhook as webhooks_test.go has it:\n%s", src[start:end])
	}
}
