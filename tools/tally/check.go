package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

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
