package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// haBrokers drives scripts/ha for a test.
type haBrokers struct {
	t    *testing.T
	dir  string
	base int // HA_BASE_PORT
}

// run runs scripts/ha and returns what it printed on stdout.
func (b haBrokers) run(args ...string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "scripts/ha", append(args, "--dir", b.dir)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.t.Fatalf("scripts/ha %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

func (b haBrokers) nodeName(rabbit string) string {
	return fmt.Sprintf("errand-ha-%d-%s@localhost", b.base, strings.TrimPrefix(rabbit, "rabbit-"))
}

func (b haBrokers) nodeAnswers(rabbit string) bool {
	n, _ := strconv.Atoi(strings.TrimPrefix(rabbit, "rabbit-"))
	return portAnswers(b.base + n - 1)
}

// checkReplicated fails the test unless each queue is a quorum queue with
// a member on each of the three nodes.
func (b haBrokers) checkReplicated(queues ...string) {
	b.t.Helper()
	out, err := exec.Command("rabbitmqctl", "-n", b.nodeName("rabbit-1"), "-q", "list_queues", "name", "type", "members", "--formatter", "json").Output()
	if err != nil {
		b.t.Fatalf("list_queues: %v", err)
	}
	type listedQueue struct {
		Name    string   `json:"name"`
		Type    string   `json:"type"`
		Members []string `json:"members"`
	}
	var listed []listedQueue
	if err := json.Unmarshal(out, &listed); err != nil {
		b.t.Fatalf("list_queues: %v\n%s", err, out)
	}
	for _, q := range queues {
		i := slices.IndexFunc(listed, func(l listedQueue) bool { return l.Name == q })
		if i < 0 || listed[i].Type != "quorum" || len(listed[i].Members) != 3 {
			b.t.Errorf("queue %s on the cluster: %+v, want a quorum queue with a member on each of the 3 nodes", q, listed)
		}
	}
}

// nodeWith is a node one of the processes pids has a connection for
// purpose on ("consumer", "publisher": errand names its connections so);
// one that does not lead the queue when there is one, so its loss is not
// the leader's loss again.
func (b haBrokers) nodeWith(queue, purpose string, pids []int) (node string, leads bool) {
	b.t.Helper()
	leader := b.run("leader", queue)
	// errand names a connection "errand-<purpose> <host> pid <pid>".
	var names []*regexp.Regexp
	for _, pid := range pids {
		names = append(names, regexp.MustCompile(`errand-`+purpose+` \S+ pid `+strconv.Itoa(pid)+`\b`))
	}
	var nodes []string
	for i := 1; i <= 3; i++ {
		rabbit := "rabbit-" + strconv.Itoa(i)
		if !b.nodeAnswers(rabbit) {
			continue
		}
		// A connection's port is the port of the node it is on.
		out, err := exec.Command("rabbitmqctl", "-n", b.nodeName(rabbit), "-q", "list_connections", "port", "client_properties").Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			port, props, _ := strings.Cut(line, "\t")
			n, err := strconv.Atoi(port)
			r := "rabbit-" + strconv.Itoa(n-b.base+1)
			ours := slices.ContainsFunc(names, func(name *regexp.Regexp) bool { return name.MatchString(props) })
			if err == nil && ours && !slices.Contains(nodes, r) {
				nodes = append(nodes, r)
			}
		}
		break
	}
	if len(nodes) == 0 {
		b.t.Fatalf("no %s connection of processes %v on any node", purpose, pids)
	}
	for _, n := range nodes {
		if n != leader {
			return n, false
		}
	}
	return nodes[0], true
}

// follower is a node that does not lead the queue.
func (b haBrokers) follower(queue string) string {
	leader := b.run("leader", queue)
	for i := 1; i <= 3; i++ {
		if r := "rabbit-" + strconv.Itoa(i); r != leader {
			return r
		}
	}
	return ""
}

func leaderNote(leads bool) string {
	if leads {
		return ", the work queue's leader too"
	}
	return ""
}

// lostStatuses are the tasks accepted while the Redis replica was cut off
// from its primary, and how many of their statuses the promoted replica
// lacks.
type lostStatuses struct {
	ids     []string
	missing int
}

// redisFailoverLosingWrites makes Redis lose acknowledged writes, as an
// asynchronous failover can: the replica is stopped (SIGSTOP) and falls so
// far behind that the primary drops it (its replica output buffer
// overflows), errand's status writes go on to the primary alone for a
// second, then the primary is SIGKILLed and the replica resumed; the
// Sentinels promote it without those writes.
func (b haBrokers) redisFailoverLosingWrites(load *submitLoad, prefix string) (lostStatuses, drill) {
	t := b.t
	t.Helper()
	ctx := context.Background()
	sentinel := redis.NewSentinelClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", b.base+25)})
	defer sentinel.Close()
	primaryAddr := func() string {
		a, err := sentinel.GetMasterAddrByName(ctx, "errand").Result()
		if err != nil {
			return ""
		}
		return a[0] + ":" + a[1]
	}
	oldPrimary := primaryAddr()
	names := map[string]string{}
	for i := range 2 {
		names[fmt.Sprintf("127.0.0.1:%d", b.base+20+i)] = "redis-" + strconv.Itoa(i+1)
	}
	var replica string
	for addr := range names {
		if addr != oldPrimary {
			replica = addr
		}
	}
	if names[oldPrimary] == "" {
		t.Fatalf("the Sentinels name %q as primary, none of scripts/ha's", oldPrimary)
	}
	raw, err := os.ReadFile(filepath.Join(b.dir, names[replica], "pid"))
	if err != nil {
		t.Fatal(err)
	}
	replicaPid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	primary := redis.NewClient(&redis.Options{Addr: oldPrimary})
	defer primary.Close()
	if err := primary.ConfigSet(ctx, "client-output-buffer-limit", "replica 256kb 0 0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(replicaPid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			_ = syscall.Kill(replicaPid, syscall.SIGCONT)
		}
	}
	defer resume()
	cutAt := time.Now()
	if err := primary.Set(ctx, "drill:ballast", strings.Repeat("x", 32<<20), 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the primary to drop its replica", func() bool {
		info, _ := primary.Info(ctx, "replication").Result()
		return strings.Contains(info, "connected_slaves:0")
	})
	time.Sleep(time.Second)
	d := drill{name: "Redis: the primary (" + names[oldPrimary] + ") SIGKILLed, its replica behind", at: time.Now(), restartName: names[oldPrimary]}
	b.run("kill", names[oldPrimary])
	resume()
	waitFor(t, 60*time.Second, "the Sentinels to promote the replica", func() bool { return primaryAddr() == replica })
	// Which of the tasks accepted meanwhile the promoted replica knows.
	lost := lostStatuses{ids: load.acceptedIDsBetween(cutAt, d.at)}
	promoted := redis.NewClient(&redis.Options{Addr: replica})
	defer promoted.Close()
	for _, id := range lost.ids {
		if n, err := promoted.Exists(ctx, prefix+"task:"+id).Result(); err == nil && n == 0 {
			lost.missing++
		}
	}
	if len(lost.ids) == 0 || lost.missing == 0 {
		t.Fatalf("%d tasks accepted while the replica was cut off, %d of their statuses missing after the failover: the drill lost nothing to show", len(lost.ids), lost.missing)
	}
	return lost, d
}
