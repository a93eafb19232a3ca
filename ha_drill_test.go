package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

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
	state := upTestStack(t, env, dir, 4*time.Minute)
	if state["QUEUE_TYPE"] != "quorum" || strings.Count(state["AMQP_URL"], "amqp://") != 3 || !strings.Contains(state["REDIS_URL"], "master_name=errand") {
		t.Fatalf("stack.env: QUEUE_TYPE %q, AMQP_URL %q, REDIS_URL %q; want the HA brokers", state["QUEUE_TYPE"], state["AMQP_URL"], state["REDIS_URL"])
	}
	nginx := state["STACK_URL"]
	b := haBrokers{t: t, dir: filepath.Join(dir, "ha"), base: base + 40}
	pids := map[string]int{}
	var apiPids, workerPids []int
	for _, name := range []string{"api-1", "api-2", "api-3", "worker-1", "worker-2", "worker-3"} {
		pids[name] = stackPid(t, dir, name)
		if strings.HasPrefix(name, "api") {
			apiPids = append(apiPids, pids[name])
		} else {
			workerPids = append(workerPids, pids[name])
		}
	}

	load := startSubmitLoad(t, nginx, "drill")
	waitFor(t, 60*time.Second, "submits accepted through nginx", func() bool { return load.acceptedSince(time.Time{}) >= 100 })
	b.checkReplicated(names["QUEUE_NAME"], names["QUEUE_NAME"]+".dead")
	var drills []drill
	// recovered waits until 50 submits are accepted after t0 and the 50th
	// of their tasks is done.
	recovered := func(what string, t0 time.Time) {
		t.Helper()
		waitFor(t, 90*time.Second, "submits accepted again after "+what, func() bool { return load.acceptedSince(t0) >= 50 })
		waitForStatus(t, nginx, load.acceptedIDsSince(t0)[49], stateSuccess, 60*time.Second)
	}

	// killAndRestart SIGKILLs a node, and starts it again once errand is
	// back to work without it.
	killAndRestart := func(node, what string) {
		d := drill{name: "RabbitMQ: " + what + " (" + node + ") SIGKILLed", at: time.Now()}
		b.run("kill", node)
		recovered("the loss of "+node, d.at)
		b.run("start", node)
		recovered("the restart of "+node, time.Now())
		drills = append(drills, d)
	}
	killAndRestart(b.run("leader", names["QUEUE_NAME"]), "the work queue's leader")
	consumerNode, leads := b.nodeWith(names["QUEUE_NAME"], "consumer", workerPids)
	killAndRestart(consumerNode, "a node workers consume through"+leaderNote(leads))

	partition := func(node, what string) {
		d := drill{name: "RabbitMQ: " + what + " (" + node + ") cut off from the other nodes", at: time.Now()}
		b.run("partition", node)
		waitFor(t, 60*time.Second, node+" to pause (pause_minority)", func() bool { return !b.nodeAnswers(node) })
		recovered("the partition", d.at)
		b.run("heal", node)
		healed := time.Now()
		waitFor(t, 60*time.Second, node+" to serve again", func() bool { return b.nodeAnswers(node) })
		recovered("the healing", healed)
		drills = append(drills, d)
	}
	partition(b.run("leader", names["QUEUE_NAME"]), "the work queue's leader")
	if node, leads := b.nodeWith(names["QUEUE_NAME"], "publisher", apiPids); !leads {
		partition(node, "a node APIs publish through")
	} else {
		partition(b.follower(names["QUEUE_NAME"]), "a node no API publishes through")
	}

	lost, d := b.redisFailoverLosingWrites(load, names["REDIS_KEY_PREFIX"])
	recovered("the Redis failover", d.at)
	b.run("start", d.restartName)
	recovered("the old primary's return", time.Now())
	drills = append(drills, d)

	outcomes := load.finish()
	sum := summarize(t, outcomes, drills[0].at)
	ids := map[string]submitOutcome{}
	for _, id := range sum.accepted {
		ids[id] = submitOutcome{id: id, attempts: 1}
	}
	waitAllSucceeded(t, nginx, ids, 2*time.Minute)
	retryUnconfirmed(t, nginx, outcomes)
	completions := haResults(t, state, sum)
	for i := range drills {
		end := time.Now()
		if i+1 < len(drills) {
			end = drills[i+1].at
		}
		drills[i].measure(outcomes, completions, end)
		t.Logf("%s: %s", drills[i].name, drills[i].report())
	}
	// Far less than nginx's and the client's timeouts; what errand spends
	// at most is a status write's deadline, a confirm's and a redial.
	const answerBound = 10 * time.Second
	maxWait := time.Duration(0)
	for _, o := range outcomes {
		maxWait = max(maxWait, o.answered.Sub(o.at))
		if o.answered.Sub(o.at) > answerBound {
			t.Errorf("a submit %s into the drills waited %s for its answer, want at most %s", o.at.Sub(drills[0].at), o.answered.Sub(o.at), answerBound)
		}
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
	restartName string    // what to start again

	refused        int           // submits answered 503 from the failure to the next drill
	submitWindow   time.Duration // the longest time without a 202
	completeWindow time.Duration // the longest time without a task completing
}

// measure reads the windows of the failure, up to end, from the times
// submits were answered 202 and tasks completed: the longest gap between
// two of them that reaches into the failure's time.
func (d *drill) measure(outcomes []loadSubmit, completions []time.Time, end time.Time) {
	var accepted []time.Time
	for _, o := range outcomes {
		switch {
		case o.status == http.StatusAccepted:
			accepted = append(accepted, o.answered)
		case o.status == http.StatusServiceUnavailable && !o.at.Before(d.at) && !o.at.After(end):
			d.refused++
		}
	}
	slices.SortFunc(accepted, func(a, b time.Time) int { return a.Compare(b) })
	d.submitWindow = longestGap(accepted, d.at, end)
	d.completeWindow = longestGap(completions, d.at, end)
}

// longestGap is the longest time between two consecutive sorted times
// where the later one is past from and the earlier one not past to.
func longestGap(times []time.Time, from, to time.Time) time.Duration {
	var gap time.Duration
	for i := 1; i < len(times); i++ {
		if times[i].After(from) && !times[i-1].After(to) {
			gap = max(gap, times[i].Sub(times[i-1]))
		}
	}
	return gap
}

func (d drill) report() string {
	return fmt.Sprintf("%d submits answered 503, longest time without a 202 %s, longest time without a task completing %s",
		d.refused, d.submitWindow.Round(time.Millisecond), d.completeWindow.Round(time.Millisecond))
}

// retryUnconfirmed retries every submit answered "unconfirmed" with its
// Idempotency-Key, as a client told so would: the key is still bound to
// the task it named, so the retry answers with that task (202 once a
// worker took it up, 503 unconfirmed while it may still be queued),
// never with a second one.
func retryUnconfirmed(t *testing.T, base string, outcomes []loadSubmit) {
	t.Helper()
	client := &http.Client{Timeout: 20 * time.Second}
	for _, o := range outcomes {
		if o.errorCode != "unconfirmed" {
			continue
		}
		status, id, code := postSubmit(client, base, o.key, o.body)
		if id != o.taskID || (status != http.StatusAccepted && code != "unconfirmed") {
			t.Errorf("retry of unconfirmed task %s with its key: %d %q, task %q; want 202 or 503 unconfirmed, with the same task", o.taskID, status, code, id)
		}
	}
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
