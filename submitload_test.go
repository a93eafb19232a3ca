package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// loadSubmit is one submit of a load, as the client saw it.
type loadSubmit struct {
	at, answered time.Time
	key, body    string // its Idempotency-Key and request body
	status       int
	taskID       string
	errorCode    string // of an error answer
}

// submitLoad posts a process_heavy_task to an errand every 20 ms, one at
// a time, each with an Idempotency-Key of its own, and keeps what each
// answered, until it is stopped (at the latest when the test ends).
type submitLoad struct {
	mu       sync.Mutex
	outcomes []loadSubmit
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
	run      string // in every key, so two loads never share one
}

// postSubmit posts one guide submit with an Idempotency-Key and reads the
// answer: status 0 when none came.
func postSubmit(client *http.Client, base, key, body string) (status int, taskID, errorCode string) {
	req, err := http.NewRequest(http.MethodPost, base+"/api/async/process", strings.NewReader(body))
	if err != nil {
		return 0, "", err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	var a submitAnswer
	_ = json.NewDecoder(resp.Body).Decode(&a)
	return resp.StatusCode, a.TaskID, a.Error
}

func startSubmitLoad(t *testing.T, base, tag string) *submitLoad {
	l := &submitLoad{stop: make(chan struct{}), done: make(chan struct{}), run: newRandomID(4)}
	go func() {
		defer close(l.done)
		client := &http.Client{Timeout: 20 * time.Second}
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			o := loadSubmit{at: time.Now(), key: fmt.Sprintf("%s-%s-%d", tag, l.run, i), body: fmt.Sprintf(`{"data": "%s %d", "iterations": 1}`, tag, i)}
			o.status, o.taskID, o.errorCode = postSubmit(client, base, o.key, o.body)
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

// acceptedIDsSince is the tasks of the submits sent after t0 that were
// answered 202, in order.
func (l *submitLoad) acceptedIDsSince(t0 time.Time) []string {
	return l.acceptedIDsBetween(t0, time.Now().Add(time.Hour))
}

// acceptedIDsBetween is the tasks of the submits sent between from and to
// that were answered 202, in order.
func (l *submitLoad) acceptedIDsBetween(from, to time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for _, o := range l.outcomes {
		if o.at.After(from) && o.at.Before(to) && o.status == http.StatusAccepted {
			ids = append(ids, o.taskID)
		}
	}
	return ids
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
			if o.errorCode == "" {
				t.Errorf("a submit %s after the failure answered 503 without errand's JSON error", o.at.Sub(failedAt))
			}
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
