package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisProcess is a redis-server (or sentinel) this test started.
type redisProcess struct {
	cmd  *exec.Cmd
	addr string
}

// startRedisProcess runs redis-server with args on a free port and waits
// until it answers PING.
func startRedisProcess(t *testing.T, sentinel bool, conf ...string) *redisProcess {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server is needed (Debian's redis-server package, which scripts/test installs): %v", err)
	}
	addr := freeAddr(t)
	port := addr[strings.LastIndex(addr, ":")+1:]
	dir := t.TempDir()
	lines := append([]string{"port " + port, "bind 127.0.0.1", "dir " + dir, "save \"\"", "appendonly no"}, conf...)
	if sentinel {
		lines = []string{"port " + port, "bind 127.0.0.1", "dir " + dir}
		lines = append(lines, conf...)
	}
	confPath := filepath.Join(dir, "redis.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{confPath}
	if sentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command("redis-server", args...)
	logFile, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	p := &redisProcess{cmd: cmd, addr: addr}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("log of redis-server %s:\n%s", addr, tail(string(b), 30))
		}
	})
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	waitFor(t, 10*time.Second, "redis-server "+addr+" answering", func() bool { return c.Ping(context.Background()).Err() == nil })
	return p
}

// loadSubmit is one submit of a load, as the client saw it.
type loadSubmit struct {
	at, answered time.Time
	status       int
	taskID       string
	errorCode    string // of an error answer
}

// submitLoad posts a process_heavy_task to an errand every 20 ms, one at
// a time, and keeps what each answered, until it is stopped (at the
// latest when the test ends).
type submitLoad struct {
	mu       sync.Mutex
	outcomes []loadSubmit
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

func startSubmitLoad(t *testing.T, base, tag string) *submitLoad {
	l := &submitLoad{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		client := &http.Client{Timeout: 20 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			o := loadSubmit{at: time.Now()}
			resp, err := client.Post(base+"/api/async/process", "application/json", strings.NewReader(fmt.Sprintf(`{"data": "%s %d", "iterations": 1}`, tag, i)))
			if err == nil {
				var a submitAnswer
				_ = json.NewDecoder(resp.Body).Decode(&a)
				resp.Body.Close()
				o.status, o.taskID, o.errorCode = resp.StatusCode, a.TaskID, a.Error
			}
			o.answered = time.Now()
			l.mu.Lock()
			l.outcomes = append(l.outcomes, o)
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { l.finish() })
	return l
}

// acceptedSince counts the submits sent after t0 that were answered 202.
func (l *submitLoad) acceptedSince(t0 time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, o := range l.outcomes {
		if o.at.After(t0) && o.status == http.StatusAccepted {
			n++
		}
	}
	return n
}

// finish stops the load and returns every submit's outcome.
func (l *submitLoad) finish() []loadSubmit {
	l.once.Do(func() { close(l.stop) })
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.outcomes
}

// loadSummary is what a load's submits came to around a failure at
// failedAt.
type loadSummary struct {
	accepted    []string // task ids answered 202
	unconfirmed []string // task ids answered 503 unconfirmed
	refused     int      // answered 503 (unconfirmed ones too)
	// window is the longest time without a submit answered 202 (one
	// submit at a time: one that waits holds up the next).
	window time.Duration
}

// summarize sums outcomes up, failing the test for any answer but 202 or
// a JSON 503.
func summarize(t *testing.T, outcomes []loadSubmit, failedAt time.Time) loadSummary {
	var s loadSummary
	if len(outcomes) == 0 {
		t.Fatal("the load made no submit")
	}
	lastAccepted := outcomes[0].answered
	for _, o := range outcomes {
		switch o.status {
		case http.StatusAccepted:
			s.accepted = append(s.accepted, o.taskID)
			s.window = max(s.window, o.answered.Sub(lastAccepted))
			lastAccepted = o.answered
		case http.StatusServiceUnavailable:
			s.refused++
			if o.errorCode == "unconfirmed" {
				s.unconfirmed = append(s.unconfirmed, o.taskID)
			}
		default:
			t.Errorf("a submit %s after the failure answered %d, want 202 or a JSON 503", o.at.Sub(failedAt), o.status)
		}
	}
	return s
}

// TestRedisSentinelFailover: with REDIS_URL naming three Sentinels, errand
// follows the primary they name; when the primary is killed (SIGKILL)
// under a steady load of submits, the Sentinels promote the replica and
// errand goes on without a restart. Submits in the window answer 503, a
// clear refusal, and every submit answered 202 ends SUCCESS.
func TestRedisSentinelFailover(t *testing.T) {
	env := realStack(t)
	primary := startRedisProcess(t, false)
	replica := startRedisProcess(t, false, "replicaof 127.0.0.1 "+primary.addr[strings.LastIndex(primary.addr, ":")+1:])
	rc := redis.NewClient(&redis.Options{Addr: replica.addr})
	defer rc.Close()
	ctx := context.Background()
	waitFor(t, 20*time.Second, "the replica in sync", func() bool {
		info, _ := rc.Info(ctx, "replication").Result()
		return strings.Contains(info, "master_link_status:up")
	})
	primaryHost, primaryPort, _ := strings.Cut(primary.addr, ":")
	var sentinels []string
	for range 3 {
		s := startRedisProcess(t, true,
			fmt.Sprintf("sentinel monitor errand %s %s 2", primaryHost, primaryPort),
			"sentinel down-after-milliseconds errand 1000", "sentinel failover-timeout errand 10000", "sentinel parallel-syncs errand 1")
		sentinels = append(sentinels, s.addr)
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinels[0]})
	defer sc.Close()
	waitFor(t, 30*time.Second, "the sentinels to know each other and the replica", func() bool {
		others, err1 := sc.Sentinels(ctx, "errand").Result()
		replicas, err2 := sc.Replicas(ctx, "errand").Result()
		return err1 == nil && err2 == nil && len(others) == 2 && len(replicas) == 1
	})

	env["REDIS_URL"] = fmt.Sprintf("redis://%s/0?master_name=errand&addr=%s&addr=%s", sentinels[0], sentinels[1], sentinels[2])
	env["HEAVY_TASK_DELAY"], env["WORKERS"] = "10ms", "8"
	base := startErrand(t, env)

	load := startSubmitLoad(t, base, "failover")
	time.Sleep(2 * time.Second)
	if err := primary.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killedAt := time.Now()
	waitFor(t, 30*time.Second, "the sentinels to promote the replica", func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, "errand").Result()
		return err == nil && addr[0]+":"+addr[1] == replica.addr
	})
	promotedAt := time.Now()
	waitFor(t, 30*time.Second, "submits accepted again after the failover", func() bool { return load.acceptedSince(promotedAt) >= 50 })
	outcomes := load.finish()
	sum := summarize(t, outcomes, killedAt)
	t.Logf("%d submits: %d accepted, %d answered 503; the Sentinels promoted the replica %s after the kill; no submit was accepted for %s",
		len(outcomes), len(sum.accepted), sum.refused, promotedAt.Sub(killedAt).Round(time.Millisecond), sum.window.Round(time.Millisecond))
	for _, id := range sum.accepted {
		waitForStatus(t, base, id, stateSuccess, 60*time.Second)
	}
}
