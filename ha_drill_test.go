package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// TestHighAvailabilityDrills runs the guide's topology (nginx, three API
// and three worker processes) through scripts/stack on highly available
// brokers (STACK_HA=1: scripts/ha's three-node RabbitMQ cluster with
// quorum queues, Redis with three Sentinels), under a steady load of
// submits through nginx, and inflicts one failure after another:
//
//  1. SIGKILL of the RabbitMQ node leading the work queue, then its restart;
//  2. SIGKILL of a node a worker consumes through, then its restart;
//  3. a network partition cutting the queue's leader off from the other
//     two nodes (it pauses, pause_minority), then its healing; and the
//     same for a node that does not lead (one an API publishes through,
//     when there is one);
//  4. SIGKILL of the Redis primary after its replica fell behind, so the
//     Sentinels promote a replica that lacks status writes the old primary
//     acknowledged.
//
// Every submit is answered 202 or a JSON 503, never held past the request
// timeout; every task answered 202 ends SUCCESS with exactly one result
// (scripts/tally: lost 0, duplicated 0), including those whose statuses
// the failover lost; a task answered "unconfirmed" ran at most once and
// no other task ran at all; errand's processes never restart. Each
// failure's windows are printed.
func TestHighAvailabilityDrills(t *testing.T) {
	needsServices(t)
	requireNginx(t)
	requireIptables(t)
	names := realStack(t)
	// The RabbitMQ nodes run as the rabbitmq user, which must enter the
	// directory (t.TempDir's is private to root).
	dir, err := os.MkdirTemp("", "errand-ha-drill-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	base := freeStackPorts(t, true)
	env := stackTestEnv(names, base, "STACK_HA=1", "STACK_PROMETHEUS=0", "STACK_HEAVY_TASK_DELAY=10ms",
		"STACK_DRAIN_TIMEOUT=5s", "PUBLISH_TIMEOUT=3s")
	t.Cleanup(func() {
		if out, err := runStack(env, 3*time.Minute, "down", "--dir", dir); err != nil {
			t.Errorf("scripts/stack down: %v\n%s", err, out)
		}
	})
	if out, err := runStack(env, 4*time.Minute, "up", "--dir", dir); err != nil {
		dumpStackLogs(t, dir)
		t.Fatalf("scripts/stack up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpStackLogs(t, dir)
		}
	})
	state := readStackEnv(t, dir)
	if state["QUEUE_TYPE"] != "quorum" || strings.Count(state["AMQP_URL"], "amqp://") != 3 || !strings.Contains(state["REDIS_URL"], "master_name=errand") {
		t.Fatalf("stack.env: QUEUE_TYPE %q, AMQP_URL %q, REDIS_URL %q; want the HA brokers", state["QUEUE_TYPE"], state["AMQP_URL"], state["REDIS_URL"])
	}
	t.Cleanup(func() { dropDatabase(t, state["MONGODB_URI"], state["MONGODB_DATABASE"]) })
	nginx := state["STACK_URL"]
	b := haBrokers{t: t, dir: filepath.Join(dir, "ha"), base: base + 40}
	pids := map[string]int{}
	for _, name := range []string{"api-1", "api-2", "api-3", "worker-1", "worker-2", "worker-3"} {
		pids[name] = stackPid(t, dir, name)
	}

	load := startSubmitLoad(t, nginx, "drill")
	waitFor(t, 60*time.Second, "submits accepted through nginx", func() bool { return load.acceptedSince(time.Time{}) >= 100 })
	var drills []drill
	// recovered waits until submits are accepted again after t0 and the
	// tasks they queued are done.
	recovered := func(what string, t0 time.Time) {
		t.Helper()
		waitFor(t, 90*time.Second, "submits accepted again after "+what, func() bool { return load.acceptedSince(t0) >= 50 })
		waitForStatus(t, nginx, load.acceptedIDsSince(t0)[49], stateSuccess, 60*time.Second)
	}

	leader := b.run("leader", names["QUEUE_NAME"])
	d := drill{name: "RabbitMQ: the work queue's leader (" + leader + ") SIGKILLed", at: time.Now()}
	b.run("kill", leader)
	recovered("the leader's loss", d.at)
	b.run("start", leader)
	d.restartedAt = time.Now()
	recovered("the leader's restart", d.restartedAt)
	drills = append(drills, d)

	consumerNode, leads := b.nodeWith(names["QUEUE_NAME"], "consumer")
	d = drill{name: "RabbitMQ: a node workers consume through (" + consumerNode + leaderNote(leads) + ") SIGKILLed", at: time.Now()}
	b.run("kill", consumerNode)
	recovered("the consumers' node's loss", d.at)
	b.run("start", consumerNode)
	d.restartedAt = time.Now()
	recovered("the consumers' node's restart", d.restartedAt)
	drills = append(drills, d)

	partition := func(node, what string) {
		d := drill{name: "RabbitMQ: " + what + " (" + node + ") cut off from the other nodes", at: time.Now()}
		b.run("partition", node)
		waitFor(t, 60*time.Second, node+" to pause (pause_minority)", func() bool { return !b.nodeAnswers(node) })
		recovered("the partition", d.at)
		b.run("heal", node)
		d.restartedAt = time.Now()
		waitFor(t, 60*time.Second, node+" to serve again", func() bool { return b.nodeAnswers(node) })
		recovered("the healing", d.restartedAt)
		drills = append(drills, d)
	}
	partition(b.run("leader", names["QUEUE_NAME"]), "the work queue's leader")
	if node, leads := b.nodeWith(names["QUEUE_NAME"], "publisher"); !leads {
		partition(node, "a node APIs publish through")
	} else {
		partition(b.follower(names["QUEUE_NAME"]), "a node no API publishes through")
	}

	lost, d := b.redisFailoverLosingWrites(load, names["REDIS_KEY_PREFIX"])
	recovered("the Redis failover", d.at)
	b.run("start", d.restartName)
	d.restartedAt = time.Now()
	recovered("the old primary's return", d.restartedAt)
	drills = append(drills, d)

	outcomes := load.finish()
	sum := summarize(t, outcomes, drills[0].at)
	ids := map[string]submitOutcome{}
	for _, id := range sum.accepted {
		ids[id] = submitOutcome{id: id, attempts: 1}
	}
	waitAllSucceeded(t, nginx, ids, 2*time.Minute)
	completions := haResults(t, state, sum)
	for i := range drills {
		end := time.Now()
		if i+1 < len(drills) {
			end = drills[i+1].at
		}
		drills[i].measure(outcomes, completions, end)
		t.Logf("%s: %s", drills[i].name, drills[i].report())
	}
	maxWait := time.Duration(0)
	for _, o := range outcomes {
		maxWait = max(maxWait, o.answered.Sub(o.at))
	}
	t.Logf("%d submits through nginx: %d accepted, %d answered 503 (%d of them unconfirmed); the slowest answer took %s; "+
		"%d tasks whose statuses the Redis failover lost (of %d accepted while the replica was cut off) ended SUCCESS",
		len(outcomes), len(sum.accepted), sum.refused, len(sum.unconfirmed), maxWait.Round(time.Millisecond), lost.missing, len(lost.ids))
	for name, pid := range pids {
		if syscall.Kill(pid, 0) != nil || stackPid(t, dir, name) != pid {
			t.Errorf("%s (pid %d) did not run through the drills: errand's processes must ride failures out", name, pid)
		}
	}
	tallyStack(t, env, dir, ids)
}

// drill is one failure inflicted on the brokers and what it cost.
type drill struct {
	name        string
	at          time.Time // the failure
	restartedAt time.Time // the node back (or the partition healed)
	restartName string    // what to start again

	refused        int           // submits answered 503 from the failure to the next drill
	submitWindow   time.Duration // the longest time without a 202
	completeWindow time.Duration // the longest time without a task completing
}

// measure reads the windows of the failure from every submit's outcome
// and every task's completion time, up to end.
func (d *drill) measure(outcomes []loadSubmit, completions []time.Time, end time.Time) {
	last := time.Time{}
	for _, o := range outcomes {
		if o.at.Before(d.at) || o.at.After(end) {
			if o.status == http.StatusAccepted && o.answered.Before(d.at) {
				last = o.answered
			}
			continue
		}
		switch o.status {
		case http.StatusServiceUnavailable:
			d.refused++
		case http.StatusAccepted:
			if !last.IsZero() {
				d.submitWindow = max(d.submitWindow, o.answered.Sub(last))
			}
			last = o.answered
		}
	}
	last = time.Time{}
	for _, c := range completions {
		if c.After(end) {
			break
		}
		if !c.Before(d.at) && !last.IsZero() {
			d.completeWindow = max(d.completeWindow, c.Sub(last))
		}
		last = c
	}
}

func (d drill) report() string {
	return fmt.Sprintf("%d submits answered 503, longest time without a 202 %s, longest time without a task completing %s",
		d.refused, d.submitWindow.Round(time.Millisecond), d.completeWindow.Round(time.Millisecond))
}

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

// nodeWith is a node errand has a connection for purpose on ("consumer",
// "publisher"); one that does not lead the queue when there is one, so
// its loss is not the leader's loss again.
func (b haBrokers) nodeWith(queue, purpose string) (node string, leads bool) {
	b.t.Helper()
	leader := b.run("leader", queue)
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
			if err == nil && strings.Contains(props, "errand-"+purpose+" ") && !slices.Contains(nodes, r) {
				nodes = append(nodes, r)
			}
		}
		break
	}
	if len(nodes) == 0 {
		b.t.Fatalf("no errand %s connection on any node", purpose)
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

// haResults checks the result documents against what the load was
// answered: one per task answered 202, at most one per task answered
// unconfirmed, none for any other task. It returns the completion times
// in order.
func haResults(t *testing.T, state map[string]string, sum loadSummary) []time.Time {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := mongo.Connect(options.Client().ApplyURI(state["MONGODB_URI"]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Disconnect(ctx)
	cur, err := c.Database(state["MONGODB_DATABASE"]).Collection("task_results").Find(ctx, bson.D{})
	if err != nil {
		t.Fatal(err)
	}
	var docs []struct {
		TaskID      string    `bson:"task_id"`
		CompletedAt time.Time `bson:"completed_at"`
	}
	if err := cur.All(ctx, &docs); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	var completions []time.Time
	for _, d := range docs {
		count[d.TaskID]++
		completions = append(completions, d.CompletedAt)
	}
	for _, id := range sum.accepted {
		if count[id] != 1 {
			t.Errorf("task %s (answered 202) has %d result documents, want 1", id, count[id])
		}
	}
	for id, n := range count {
		if !slices.Contains(sum.accepted, id) && (!slices.Contains(sum.unconfirmed, id) || n > 1) {
			t.Errorf("task %s has %d result documents, but was not answered 202 (nor unconfirmed, once)", id, n)
		}
	}
	slices.SortFunc(completions, func(a, b time.Time) int { return a.Compare(b) })
	return completions
}

// requireIptables installs iptables (Debian's package) when it is missing:
// scripts/ha partitions a node with it.
func requireIptables(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err == nil {
		return
	}
	out, err := exec.Command("bash", "-c", "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables").CombinedOutput()
	if _, lookErr := exec.LookPath("iptables"); lookErr != nil {
		t.Fatalf("iptables is not installed and could not be installed (%v):\n%s", err, tail(string(out), 20))
	}
}
