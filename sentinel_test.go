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

	var mu sync.Mutex
	var outcomes []loadSubmit
	stop := make(chan struct{})
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		client := &http.Client{Timeout: 15 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			body := fmt.Sprintf(`{"data": "failover %d", "iterations": 1}`, i)
			o := loadSubmit{at: time.Now()}
			resp, err := client.Post(base+"/api/async/process", "application/json", strings.NewReader(body))
			if err == nil {
				var acc taskAccepted
				_ = json.NewDecoder(resp.Body).Decode(&acc)
				resp.Body.Close()
				o.status, o.taskID = resp.StatusCode, acc.TaskID
			}
			o.answered = time.Now()
			mu.Lock()
			outcomes = append(outcomes, o)
			mu.Unlock()
		}
	}()
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
	waitFor(t, 30*time.Second, "submits accepted again after the failover", func() bool {
		mu.Lock()
		defer mu.Unlock()
		after := 0
		for _, o := range outcomes {
			if o.at.After(promotedAt) && o.status == http.StatusAccepted {
				after++
			}
		}
		return after >= 50
	})
	close(stop)
	<-loadDone

	var accepted []string
	refused := 0
	// The window: the longest time without a submit answered 202, around
	// the kill (the load sends one submit at a time, so a submit that
	// waits on the dead primary holds up the next).
	var window time.Duration
	lastAccepted := outcomes[0].answered
	for _, o := range outcomes {
		switch o.status {
		case http.StatusAccepted:
			accepted = append(accepted, o.taskID)
			window = max(window, o.answered.Sub(lastAccepted))
			lastAccepted = o.answered
		case http.StatusServiceUnavailable:
			refused++
		default:
			t.Errorf("a submit %s after the kill answered %d, want 202 or a clear 503", o.at.Sub(killedAt), o.status)
		}
	}
	t.Logf("%d submits: %d accepted, %d answered 503; the Sentinels promoted the replica %s after the kill; no submit was accepted for %s",
		len(outcomes), len(accepted), refused, promotedAt.Sub(killedAt).Round(time.Millisecond), window.Round(time.Millisecond))
	for _, id := range accepted {
		waitForStatus(t, base, id, stateSuccess, 60*time.Second)
	}
}
