package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// rabbitNode is a RabbitMQ node a test started beside the machine's own,
// with its own name, ports and directories, run as the rabbitmq user
// (Debian's rabbitmq-server drops to it), so it shares the machine's
// Erlang cookie and can cluster.
type rabbitNode struct {
	name string // errand-…@localhost
	port int    // AMQP
	env  []string
	dir  string // its configuration, data and logs
}

func (n rabbitNode) url() string { return fmt.Sprintf("amqp://guest:guest@127.0.0.1:%d/", n.port) }

// ctl runs rabbitmqctl against the node.
func (n rabbitNode) ctl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command("rabbitmqctl", append([]string{"-n", n.name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl -n %s %v: %v\n%s", n.name, args, err, out)
	}
	return string(out)
}

// start starts the node (again, after a kill: its data directory makes it
// a member of its cluster still) and waits until it runs.
func (n rabbitNode) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command("rabbitmq-server", "-detached")
	cmd.Env = append(os.Environ(), n.env...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start RabbitMQ node %s: %v\n%s", n.name, err, out)
	}
	// A detached node takes a moment to be reachable at all, and
	// await_startup gives up on a node it cannot reach.
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := exec.Command("rabbitmqctl", "-n", n.name, "await_startup", "--timeout", "10").CombinedOutput()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			logs, _ := filepath.Glob(filepath.Join(n.dir, "log", "*"))
			var tails []string
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				tails = append(tails, l+":\n"+tail(string(b), 30))
			}
			t.Fatalf("RabbitMQ node %s did not start: %v\n%s\n%s", n.name, err, out, strings.Join(tails, "\n"))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// stop stops the node, SIGKILLing its VM if it does not stop in time.
func (n rabbitNode) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pid, err := exec.CommandContext(ctx, "rabbitmqctl", "-n", n.name, "eval", "os:getpid().").Output()
	if err != nil {
		return // not running
	}
	if exec.CommandContext(ctx, "rabbitmqctl", "-n", n.name, "stop").Run() != nil {
		if p, err := strconv.Atoi(strings.Trim(strings.TrimSpace(string(pid)), `"`)); err == nil {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
}

// kill SIGKILLs the node's Erlang VM.
func (n rabbitNode) kill(t testing.TB) {
	t.Helper()
	pid, err := strconv.Atoi(strings.Trim(strings.TrimSpace(n.ctl(t, "eval", "os:getpid().")), `"`))
	if err != nil {
		t.Fatalf("pid of %s: %v", n.name, err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s (pid %d): %v", n.name, pid, err)
	}
	waitFor(t, 30*time.Second, n.name+" to stop answering", func() bool {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), 200*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

// startRabbitCluster starts size RabbitMQ nodes on loopback and joins them
// into one cluster; they are stopped and removed when the test ends.
func startRabbitCluster(t *testing.T, size int) []rabbitNode {
	t.Helper()
	needsServices(t)
	owner, err := user.Lookup("rabbitmq")
	if err != nil {
		t.Fatalf("the rabbitmq user (Debian's rabbitmq-server package) is needed: %v", err)
	}
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)
	root, err := os.MkdirTemp("", "errand-rabbit-cluster-")
	if err != nil {
		t.Fatal(err)
	}
	id := newRandomID(4)
	var nodes []rabbitNode
	t.Cleanup(func() {
		for _, n := range nodes {
			n.stop()
		}
		os.RemoveAll(root)
	})
	for i := range size {
		dir := filepath.Join(root, strconv.Itoa(i))
		port, dist := freePort(t), freePort(t)
		files := map[string]string{
			"enabled_plugins": "[].\n",
			"rabbitmq.conf":   fmt.Sprintf("listeners.tcp.default = 127.0.0.1:%d\n", port),
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range []string{root, dir, filepath.Join(dir, "enabled_plugins"), filepath.Join(dir, "rabbitmq.conf")} {
			if err := os.Chown(p, uid, gid); err != nil {
				t.Fatal(err)
			}
		}
		n := rabbitNode{name: fmt.Sprintf("errand-%s-%d@localhost", id, i), port: port, dir: dir, env: []string{
			"RABBITMQ_NODENAME=" + fmt.Sprintf("errand-%s-%d@localhost", id, i),
			"RABBITMQ_NODE_PORT=" + strconv.Itoa(port), "RABBITMQ_DIST_PORT=" + strconv.Itoa(dist),
			"RABBITMQ_MNESIA_BASE=" + filepath.Join(dir, "mnesia"), "RABBITMQ_LOG_BASE=" + filepath.Join(dir, "log"),
			"RABBITMQ_ENABLED_PLUGINS_FILE=" + filepath.Join(dir, "enabled_plugins"),
			"RABBITMQ_CONFIG_FILE=" + filepath.Join(dir, "rabbitmq"), "RABBITMQ_PID_FILE=" + filepath.Join(dir, "pid"),
		}}
		nodes = append(nodes, n)
		n.start(t)
	}
	for _, n := range nodes[1:] {
		n.ctl(t, "stop_app")
		n.ctl(t, "join_cluster", nodes[0].name)
		n.ctl(t, "start_app")
	}
	status := nodes[0].ctl(t, "cluster_status", "--formatter", "json")
	var cs struct {
		Running []string `json:"running_nodes"`
	}
	if err := json.Unmarshal([]byte(status[max(0, strings.Index(status, "{")):]), &cs); err != nil || len(cs.Running) != size {
		t.Fatalf("cluster of %d: running %v (%v)\n%s", size, cs.Running, err, status)
	}
	return nodes
}

func freePort(t testing.TB) int {
	_, port, _ := net.SplitHostPort(freeAddr(t))
	p, _ := strconv.Atoi(port)
	return p
}

// queueLeader is the node that leads a quorum queue.
func queueLeader(t testing.TB, via rabbitNode, queue string) string {
	t.Helper()
	for _, line := range strings.Split(via.ctl(t, "-q", "list_queues", "name", "leader"), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == queue {
			return f[1]
		}
	}
	t.Fatalf("no leader of %s among the queues of %s", queue, via.name)
	return ""
}

// TestRabbitClusterLeaderLoss: errand on a three-node RabbitMQ cluster
// with quorum queues, under a steady load of submits: the node that leads
// the work queue (the one errand is connected to) is SIGKILLed, then
// started again. errand moves to a live node; submits answer 202 or a
// JSON 503 meanwhile, never hang; every submit answered 202 ends SUCCESS
// with exactly one result, and every one answered "unconfirmed" ran at
// most once. The windows are printed.
func TestRabbitClusterLeaderLoss(t *testing.T) {
	nodes := startRabbitCluster(t, 3)
	env := realStack(t)
	urls := make([]string, len(nodes))
	for i, n := range nodes {
		urls[i] = n.url()
	}
	env["AMQP_URL"], env["QUEUE_TYPE"] = strings.Join(urls, ","), "quorum"
	env["HEAVY_TASK_DELAY"], env["WORKERS"], env["PUBLISH_TIMEOUT"] = "10ms", "8", "3s"
	base := startErrand(t, env)

	load := startSubmitLoad(t, base, "leader")
	waitFor(t, 30*time.Second, "submits accepted on the cluster", func() bool { return load.acceptedSince(time.Time{}) >= 50 })

	leaderName := queueLeader(t, nodes[0], env["QUEUE_NAME"])
	var leader rabbitNode
	for _, n := range nodes {
		if n.name == leaderName {
			leader = n
		}
	}
	if leader.name == "" {
		t.Fatalf("the work queue's leader %s is none of the test's nodes", leaderName)
	}
	killedAt := time.Now()
	leader.kill(t)
	waitFor(t, 60*time.Second, "submits accepted again after the leader's loss", func() bool { return load.acceptedSince(killedAt) >= 50 })
	leader.start(t)
	restartedAt := time.Now()
	waitFor(t, 60*time.Second, "submits accepted after the node's return", func() bool { return load.acceptedSince(restartedAt) >= 50 })
	outcomes := load.finish()
	sum := summarize(t, outcomes, killedAt)
	var firstAfterKill time.Time
	for _, o := range outcomes {
		if o.status == http.StatusAccepted && o.at.After(killedAt) {
			firstAfterKill = o.answered
			break
		}
	}
	t.Logf("%d submits: %d accepted, %d answered 503 (%d of them unconfirmed); the work queue's leader %s was SIGKILLed, and the first submit after it was accepted %s later; the longest time without a 202 was %s; the node was started again and rejoined under the load",
		len(outcomes), len(sum.accepted), sum.refused, len(sum.unconfirmed), leaderName, firstAfterKill.Sub(killedAt).Round(time.Millisecond),
		sum.window.Round(time.Millisecond))
	// One deadline for them all: hundreds of tasks one after another.
	deadline := time.Now().Add(90 * time.Second)
	for _, id := range sum.accepted {
		waitForStatus(t, base, id, stateSuccess, max(time.Until(deadline), time.Second))
	}
	results := testMongo(t).Database(env["MONGODB_DATABASE"]).Collection("task_results")
	for _, id := range append(sum.accepted, sum.unconfirmed...) {
		n, err := results.CountDocuments(context.Background(), bson.D{{Key: "task_id", Value: id}})
		if err != nil {
			t.Fatal(err)
		}
		if n > 1 || (n == 0 && !slices.Contains(sum.unconfirmed, id)) {
			t.Errorf("task %s has %d result documents", id, n)
		}
	}
}
