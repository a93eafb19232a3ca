// Command tally audits a run of errand tasks: given the ids of the tasks
// errand accepted (answered 202), it counts how many ended with a result
// in MongoDB, how many failed, how many are still running, how many are
// lost (no result and not running), and how many have more than one result
// document. It exits 1 when any task is lost or duplicated.
//
//	tally check  --ids FILE [--url URL] [--mongodb-uri URI] [--database DB] [--wait 1m] [--stack DIR]
//	tally submit N [--ids FILE] [--url URL] [--concurrency 8] [--iterations 1] [--check ...]
//
// It lives in its own module (like tools/mongowire) so errand's go.mod does
// not carry a command-line tool; scripts/tally builds and runs it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// exitLost is the exit status of a tally that found lost or duplicated
// tasks; exitInFlight of one whose tasks are not all finished yet.
const (
	exitLost     = 1
	exitUsage    = 2
	exitInFlight = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) < 2 {
		fmt.Fprintln(stderr, usage)
		return exitUsage
	}
	var err error
	code := 0
	switch args[1] {
	case "check":
		code, err = runCheck(ctx, args[2:], getenv, stdout, stderr)
	case "submit":
		code, err = runSubmit(ctx, args[2:], getenv, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintln(stdout, usage)
		return 0
	default:
		err = fmt.Errorf("unknown command %q", args[1])
		code = exitUsage
	}
	if err != nil {
		fmt.Fprintln(stderr, "tally:", err)
		if code == 0 {
			code = exitUsage
		}
	}
	return code
}

const usage = `usage:
  tally check  --ids FILE [--url URL] [--mongodb-uri URI] [--database DB] [--wait 1m] [--stack DIR]
  tally submit N [--ids FILE] [--url URL] [--concurrency 8] [--iterations 1] [--check] [check flags]

check reads accepted task ids from FILE (one per line; lines of k6's
--console-output with "accepted_task_id=<id>" work too), looks up their
results in MongoDB (task_results, by task_id) and asks the API about those
without one, waiting up to --wait for tasks still running. It prints
accepted, completed (SUCCESS), failed (FAILURE), in_flight, lost and
duplicated, and exits 1 if any task is lost or duplicated, 3 if some are
still running after the wait, else 0.

submit posts N process_heavy_task tasks (Idempotency-Key on each, retried
on connection errors, 502, 503 and 504), writes the accepted ids to FILE,
and with --check tallies them.

Settings not given as flags come from the environment (ERRAND_URL or
STACK_URL, MONGODB_URI, MONGODB_DATABASE), then from DIR/stack.env written
by scripts/stack up (--stack, default /tmp/errand-stack).`

// settings are where the API and the results are.
type settings struct {
	url      string
	mongoURI string
	database string
}

// addSettingFlags registers the flags that say where errand is.
func addSettingFlags(fs *flag.FlagSet) (url, mongoURI, database, stackDir *string) {
	url = fs.String("url", "", "errand API base URL (default $ERRAND_URL, $STACK_URL, the stack's, or http://127.0.0.1:8080)")
	mongoURI = fs.String("mongodb-uri", "", "MongoDB URI (default $MONGODB_URI or the stack's)")
	database = fs.String("database", "", "MongoDB database (default $MONGODB_DATABASE or the stack's)")
	stackDir = fs.String("stack", "/tmp/errand-stack", "scripts/stack directory whose stack.env fills in what is not set")
	return url, mongoURI, database, stackDir
}

// resolveSettings picks each setting from the flag, then the environment,
// then the stack's stack.env.
func resolveSettings(url, mongoURI, database, stackDir string, getenv func(string) string) settings {
	stack := readStackEnv(filepath.Join(stackDir, "stack.env"))
	first := func(vals ...string) string {
		for _, v := range vals {
			if v != "" {
				return v
			}
		}
		return ""
	}
	return settings{
		url:      strings.TrimRight(first(url, getenv("ERRAND_URL"), getenv("STACK_URL"), stack["STACK_URL"], "http://127.0.0.1:8080"), "/"),
		mongoURI: first(mongoURI, getenv("MONGODB_URI"), stack["MONGODB_URI"]),
		database: first(database, getenv("MONGODB_DATABASE"), stack["MONGODB_DATABASE"]),
	}
}

// readStackEnv reads scripts/stack's shell assignments (values quoted
// with printf %q, which for these values only escapes spaces).
func readStackEnv(path string) map[string]string {
	out := map[string]string{}
	raw, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = strings.ReplaceAll(v, `\`, "")
		}
	}
	return out
}

// ---------------------------------------------------------------- check

func runCheck(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("tally check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	idsPath := fs.String("ids", "", "file of accepted task ids, one per line (- for stdin)")
	wait := fs.Duration("wait", time.Minute, "how long to wait for tasks that are still running")
	url, mongoURI, database, stackDir := addSettingFlags(fs)
	if err := fs.Parse(args); err != nil {
		return exitUsage, err
	}
	if *idsPath == "" {
		return exitUsage, errors.New("check needs --ids FILE")
	}
	s := resolveSettings(*url, *mongoURI, *database, *stackDir, getenv)
	ids, err := readIDs(*idsPath)
	if err != nil {
		return exitUsage, err
	}
	return check(ctx, s, ids, *wait, stdout)
}

// idInLine finds a task id in a line of k6's console output.
var idInLine = regexp.MustCompile(`accepted_task_id=([0-9A-Za-z][0-9A-Za-z_.:-]*)`)

// readIDs reads task ids, one per line, dropping blank lines, comments and
// repeats.
func readIDs(path string) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read ids: %w", err)
		}
		defer f.Close()
		r = f
	}
	seen := map[string]bool{}
	var ids []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := idInLine.FindStringSubmatch(line); m != nil {
			line = m[1]
		} else if strings.Contains(line, " ") || strings.Contains(line, "=") {
			continue // another log line of k6's console output
		}
		if line == "" || strings.HasPrefix(line, "#") || seen[line] {
			continue
		}
		seen[line] = true
		ids = append(ids, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read ids: %w", err)
	}
	return ids, nil
}

// tally is the outcome of a check.
type tally struct {
	accepted, completed, failed, inFlight, lost, duplicated, extraDocs int
	lostIDs, inFlightIDs                                               []string
	why                                                                map[string]string // lost id -> what the API said
}

func check(ctx context.Context, s settings, ids []string, wait time.Duration, stdout io.Writer) (int, error) {
	if s.mongoURI == "" || s.database == "" {
		return exitUsage, errors.New("no MongoDB: set --mongodb-uri and --database (or MONGODB_URI and MONGODB_DATABASE, or run against a scripts/stack directory)")
	}
	client, err := mongo.Connect(options.Client().ApplyURI(s.mongoURI).SetServerSelectionTimeout(10 * time.Second))
	if err != nil {
		return exitUsage, fmt.Errorf("connect mongodb: %w", err)
	}
	defer client.Disconnect(context.WithoutCancel(ctx))
	results := client.Database(s.database).Collection("task_results")

	docs, err := resultDocs(ctx, results, ids)
	if err != nil {
		return exitUsage, err
	}
	// Tasks without a result may still be queued or running: ask the API
	// and look again until none is running or the wait is over.
	apiSaid := map[string]string{}
	deadline := time.Now().Add(wait)
	for {
		missing := withoutResult(ids, docs)
		if len(missing) == 0 {
			break
		}
		apiSaid = askAPI(ctx, s.url, missing)
		running := 0
		for _, said := range apiSaid {
			if inFlight(said) {
				running++
			}
		}
		if running == 0 || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		more, err := resultDocs(ctx, results, missing)
		if err != nil {
			return exitUsage, err
		}
		for id, d := range more {
			docs[id] = d
		}
	}

	t := tally{accepted: len(ids), why: map[string]string{}}
	for _, id := range ids {
		statuses := docs[id]
		switch {
		case len(statuses) == 0 && inFlight(apiSaid[id]):
			t.inFlight++
			t.inFlightIDs = append(t.inFlightIDs, id)
			continue
		case len(statuses) == 0:
			t.lost++
			t.lostIDs = append(t.lostIDs, id)
			t.why[id] = apiSaid[id]
			continue
		case len(statuses) > 1:
			t.duplicated++
			t.extraDocs += len(statuses) - 1
		}
		if statuses[0] == "FAILURE" {
			t.failed++
		} else {
			t.completed++
		}
	}
	printTally(stdout, t, s, wait)
	switch {
	case t.lost > 0 || t.duplicated > 0:
		return exitLost, nil
	case t.inFlight > 0:
		return exitInFlight, nil
	}
	return 0, nil
}

// resultDocs returns the statuses of the task_results documents of ids,
// collapsed by task_id: more than one entry is a duplicated result.
func resultDocs(ctx context.Context, results *mongo.Collection, ids []string) (map[string][]string, error) {
	out := map[string][]string{}
	const batch = 500
	for start := 0; start < len(ids); start += batch {
		part := ids[start:min(start+batch, len(ids))]
		cur, err := results.Find(ctx, bson.D{{Key: "task_id", Value: bson.D{{Key: "$in", Value: part}}}},
			options.Find().SetProjection(bson.D{{Key: "task_id", Value: 1}, {Key: "status", Value: 1}}))
		if err != nil {
			return nil, fmt.Errorf("read task_results: %w", err)
		}
		var docs []struct {
			TaskID string `bson:"task_id"`
			Status string `bson:"status"`
		}
		if err := cur.All(ctx, &docs); err != nil {
			return nil, fmt.Errorf("read task_results: %w", err)
		}
		for _, d := range docs {
			out[d.TaskID] = append(out[d.TaskID], d.Status)
		}
	}
	return out, nil
}

func withoutResult(ids []string, docs map[string][]string) []string {
	var out []string
	for _, id := range ids {
		if len(docs[id]) == 0 {
			out = append(out, id)
		}
	}
	return out
}

// inFlight reports whether what the API said of a task means it has not
// ended yet.
func inFlight(said string) bool {
	switch said {
	case "PENDING", "PROGRESS", "RETRY":
		return true
	}
	return false
}

// askAPI asks the status of each task, 8 at a time: its status, or "404"
// (unknown to errand), or the error.
func askAPI(ctx context.Context, base string, ids []string) map[string]string {
	client := &http.Client{Timeout: 10 * time.Second}
	out := make(map[string]string, len(ids))
	var mu sync.Mutex
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			said := statusOf(ctx, client, base, id)
			mu.Lock()
			out[id] = said
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func statusOf(ctx context.Context, client *http.Client, base, id string) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/async/status/"+id, nil)
	if err != nil {
		return err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return "API error: " + err.Error()
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		return strconv.Itoa(resp.StatusCode)
	}
	var st struct {
		Status string `json:"status"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return "API error: " + err.Error()
	}
	return st.Status
}

func printTally(w io.Writer, t tally, s settings, wait time.Duration) {
	fmt.Fprintf(w, "accepted   %d\n", t.accepted)
	fmt.Fprintf(w, "completed  %d   (result SUCCESS)\n", t.completed)
	fmt.Fprintf(w, "failed     %d   (result FAILURE)\n", t.failed)
	fmt.Fprintf(w, "in_flight  %d   (no result yet; errand says PENDING, PROGRESS or RETRY after waiting up to %v)\n", t.inFlight, wait)
	fmt.Fprintf(w, "lost       %d   (no result, not in flight)\n", t.lost)
	fmt.Fprintf(w, "duplicated %d   (task ids with more than one result document; %d extra)\n", t.duplicated, t.extraDocs)
	fmt.Fprintf(w, "tally accepted=%d completed=%d failed=%d in_flight=%d lost=%d duplicated=%d database=%s\n",
		t.accepted, t.completed, t.failed, t.inFlight, t.lost, t.duplicated, s.database)
	const show = 20
	for i, id := range t.lostIDs {
		if i == show {
			fmt.Fprintf(w, "... and %d more lost\n", len(t.lostIDs)-show)
			break
		}
		said := t.why[id]
		if said == "404" {
			said = "404: errand does not know the task"
		}
		fmt.Fprintf(w, "lost %s (API: %s)\n", id, said)
	}
	for i, id := range t.inFlightIDs {
		if i == show {
			fmt.Fprintf(w, "... and %d more in flight\n", len(t.inFlightIDs)-show)
			break
		}
		fmt.Fprintf(w, "in flight %s\n", id)
	}
}

// ---------------------------------------------------------------- submit

func runSubmit(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (int, error) {
	if len(args) < 1 {
		return exitUsage, errors.New("submit needs the number of tasks")
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return exitUsage, fmt.Errorf("submit %q: want a positive number of tasks", args[0])
	}
	fs := flag.NewFlagSet("tally submit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	idsPath := fs.String("ids", "", "file to append the accepted task ids to (default tally-ids-TIME.txt)")
	concurrency := fs.Int("concurrency", 8, "submits in flight at once")
	iterations := fs.Int("iterations", 1, "iterations of each process_heavy_task")
	thenCheck := fs.Bool("check", false, "tally the tasks once they are submitted")
	wait := fs.Duration("wait", 5*time.Minute, "with --check: how long to wait for tasks that are still running")
	url, mongoURI, database, stackDir := addSettingFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return exitUsage, err
	}
	if *concurrency < 1 {
		return exitUsage, errors.New("--concurrency must be at least 1")
	}
	s := resolveSettings(*url, *mongoURI, *database, *stackDir, getenv)
	if *idsPath == "" {
		*idsPath = "tally-ids-" + time.Now().UTC().Format("20060102T150405Z") + ".txt"
	}
	out, err := os.OpenFile(*idsPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return exitUsage, fmt.Errorf("open ids file: %w", err)
	}
	defer out.Close()

	run := fmt.Sprintf("tally-%d-%08x", time.Now().Unix(), rand.Uint32())
	client := &http.Client{Timeout: 35 * time.Second}
	var (
		mu                 sync.Mutex
		accepted, requests atomic.Int64
		refused            []string
	)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range *concurrency {
		wg.Go(func() {
			for i := range jobs {
				key := fmt.Sprintf("%s-%d", run, i)
				body := fmt.Sprintf(`{"data": "tally %d", "iterations": %d}`, i, *iterations)
				id, sent, err := submitOne(ctx, client, s.url, key, body)
				requests.Add(int64(sent))
				mu.Lock()
				if err != nil {
					refused = append(refused, fmt.Sprintf("task %d: %v", i, err))
				} else {
					accepted.Add(1)
					fmt.Fprintln(out, id) // one write per line: a crash leaves whole lines
				}
				mu.Unlock()
			}
		})
	}
	start := time.Now()
feed:
	for i := range n {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "submitted %d tasks to %s in %v: %d accepted with %d requests; ids in %s\n",
		n, s.url, elapsed.Round(time.Millisecond), accepted.Load(), requests.Load(), *idsPath)
	sort.Strings(refused)
	for _, r := range refused {
		fmt.Fprintln(stderr, "not accepted:", r)
	}
	if !*thenCheck {
		if len(refused) > 0 {
			return exitLost, nil
		}
		return 0, nil
	}
	ids, err := readIDs(*idsPath)
	if err != nil {
		return exitUsage, err
	}
	return check(ctx, s, ids, *wait, stdout)
}

// submitOne posts a task until errand answers 202, retrying what a
// restart or a dependency outage answers (no connection, 502, 503, 504)
// with the same Idempotency-Key, for up to 2 minutes. It returns the task
// id and the number of requests sent.
func submitOne(ctx context.Context, client *http.Client, base, key, body string) (string, int, error) {
	deadline := time.Now().Add(2 * time.Minute)
	backoff := 50 * time.Millisecond
	for sent := 1; ; sent++ {
		id, code, err := postOnce(ctx, client, base, key, body)
		if err == nil && code == http.StatusAccepted {
			return id, sent, nil
		}
		retryable := err != nil || code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
		if !retryable || time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = fmt.Errorf("status %d", code)
			}
			return "", sent, err
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func postOnce(ctx context.Context, client *http.Client, base, key, body string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/api/async/process", strings.NewReader(body))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		_, _ = io.Copy(io.Discard, resp.Body)
		return "", resp.StatusCode, nil
	}
	var acc struct {
		TaskID string `json:"task_id"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&acc); err != nil || acc.TaskID == "" {
		return "", resp.StatusCode, fmt.Errorf("202 without a task id (%v)", err)
	}
	return acc.TaskID, resp.StatusCode, nil
}
