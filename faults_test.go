package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/v2/bson"
)

// toxicNetwork puts an in-process Toxiproxy in front of RabbitMQ, Redis and
// the MongoDB-wire server, so a test can slow or cut errand's connections
// to each of them.
type toxicNetwork struct {
	proxies map[string]*toxiproxy.Proxy // by service: rabbitmq, redis, mongodb
}

func newToxicNetwork(t *testing.T) *toxicNetwork {
	t.Helper()
	server := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	n := &toxicNetwork{proxies: map[string]*toxiproxy.Proxy{}}
	for service, raw := range map[string]string{"rabbitmq": services.amqpURL, "redis": services.redisURL, "mongodb": services.mongoURI} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("parse %s URL: %v", service, err)
		}
		p := toxiproxy.NewProxy(server, service, "127.0.0.1:0", u.Host)
		if err := p.Start(); err != nil {
			t.Fatalf("start %s proxy: %v", service, err)
		}
		t.Cleanup(p.Stop)
		n.proxies[service] = p
	}
	return n
}

// via rewrites env's service URLs to go through the proxies.
func (n *toxicNetwork) via(t *testing.T, env map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range env {
		out[k] = v
	}
	for name, service := range map[string]string{"AMQP_URL": "rabbitmq", "REDIS_URL": "redis", "MONGODB_URI": "mongodb"} {
		u, err := url.Parse(env[name])
		if err != nil {
			t.Fatalf("parse %s: %v", name, err)
		}
		u.Host = n.proxies[service].Listen
		out[name] = u.String()
	}
	return out
}

// add puts a toxic on service's connections, both directions, until the
// returned function removes it.
func (n *toxicNetwork) add(t *testing.T, service, kind, attributes string) (remove func()) {
	t.Helper()
	p := n.proxies[service]
	var names []string
	for _, stream := range []string{"upstream", "downstream"} {
		name := fmt.Sprintf("%s_%s_%s", service, kind, stream)
		spec := fmt.Sprintf(`{"name": %q, "type": %q, "stream": %q, "attributes": %s}`, name, kind, stream, attributes)
		if _, err := p.Toxics.AddToxicJson(strings.NewReader(spec)); err != nil {
			t.Fatalf("add %s toxic to %s: %v", kind, service, err)
		}
		names = append(names, name)
	}
	return func() {
		for _, name := range names {
			if err := p.Toxics.RemoveToxic(context.Background(), name); err != nil {
				t.Errorf("remove toxic %s: %v", name, err)
			}
		}
	}
}

// TestNetworkFaults runs errand behind Toxiproxy: first with latency on
// every connection, then with each service's connections reset in turn
// while clients keep submitting. Every submit answers 202 or a JSON 503,
// and every 202'd task ends SUCCESS with exactly one result document.
func TestNetworkFaults(t *testing.T) {
	needsServices(t)
	net := newToxicNetwork(t)
	direct := realStack(t)
	env := net.via(t, direct)
	env["HEAVY_TASK_DELAY"] = "10ms"
	env["WORKERS"] = "8"
	env["PUBLISH_TIMEOUT"] = "2s"
	base := startErrand(t, env)

	var (
		mu       sync.Mutex
		accepted []string
		refused  = map[int]int{}
	)
	submit := func(tag string) {
		code, body := rawSubmit(t, base, fmt.Sprintf(`{"data": %q, "iterations": 2}`, tag))
		mu.Lock()
		defer mu.Unlock()
		if code == http.StatusAccepted {
			accepted = append(accepted, body.TaskID)
			return
		}
		refused[code]++
		if code != http.StatusServiceUnavailable || body.Error == "" || body.RequestID == "" {
			t.Errorf("submit under a network fault answered %d %+v, want 202, or 503 with a JSON error and request id", code, body)
		}
		if (body.Error == "unconfirmed") != (body.TaskID != "") {
			t.Errorf("a 503 %q names task %q: an unconfirmed submit must name its task, a refusal none", body.Error, body.TaskID)
		}
	}

	t.Run("latency", func(t *testing.T) {
		var removes []func()
		for _, service := range []string{"rabbitmq", "redis", "mongodb"} {
			removes = append(removes, net.add(t, service, "latency", `{"latency": 40, "jitter": 20}`))
		}
		var wg sync.WaitGroup
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				submit(fmt.Sprint("slow-", i))
			}()
		}
		wg.Wait()
		mu.Lock()
		n := len(accepted)
		mu.Unlock()
		if n != 30 {
			t.Errorf("%d of 30 submits accepted with 40 ms latency, want all (refused: %v)", n, refused)
		}
		for _, id := range accepted {
			waitForStatus(t, base, id, stateSuccess, 30*time.Second)
		}
		for _, remove := range removes {
			remove()
		}
	})

	for _, service := range []string{"redis", "mongodb", "rabbitmq"} {
		t.Run("reset "+service, func(t *testing.T) {
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for c := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						submit(fmt.Sprintf("%s-%d-%d", service, c, i))
						time.Sleep(20 * time.Millisecond)
					}
				}()
			}
			time.Sleep(300 * time.Millisecond)
			remove := net.add(t, service, "reset_peer", `{"timeout": 0}`)
			time.Sleep(1500 * time.Millisecond)
			remove()
			time.Sleep(300 * time.Millisecond)
			close(stop)
			wg.Wait()
		})
	}

	mu.Lock()
	ids := append([]string(nil), accepted...)
	mu.Unlock()
	t.Logf("accepted %d tasks; refused %v", len(ids), refused)
	for _, id := range ids {
		waitForStatus(t, base, id, stateSuccess, 90*time.Second)
	}
	// Counted per accepted task, not in total: a submit that timed out
	// waiting for its confirm answered 503 yet may have been queued, and
	// then runs too (at-least-once, from the client's side).
	results := testMongo(t).Database(direct["MONGODB_DATABASE"]).Collection("task_results")
	for _, id := range ids {
		n, err := results.CountDocuments(context.Background(), bson.D{{Key: "task_id", Value: id}})
		if err != nil {
			t.Fatalf("count results of %s: %v", id, err)
		}
		if n != 1 {
			t.Errorf("task %s has %d result documents, want exactly 1", id, n)
		}
	}
	var h healthResponse
	waitFor(t, 30*time.Second, "errand healthy again", func() bool {
		return apiCall(t, "GET", base+"/health", "", nil, &h).StatusCode == http.StatusOK && h.Status == "healthy"
	})
}

// submitAnswer is what a submit answers: the 202's body, or the error
// (whose task_id names the task of an unconfirmed submit).
type submitAnswer struct {
	TaskID    string `json:"task_id"`
	Status    string `json:"status"`
	Error     string `json:"error"`
	RequestID string `json:"request_id"`
}

func rawSubmit(t *testing.T, base, body string) (int, submitAnswer) {
	t.Helper()
	resp, err := http.Post(base+"/api/async/process", "application/json", strings.NewReader(body))
	if err != nil {
		t.Errorf("submit: %v", err)
		return 0, submitAnswer{}
	}
	defer resp.Body.Close()
	var a submitAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Errorf("submit answered %d with a body that is not JSON: %v", resp.StatusCode, err)
	}
	return resp.StatusCode, a
}
