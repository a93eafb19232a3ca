package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

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
