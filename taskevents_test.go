package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sseEvent is one event of a stream.
type sseEvent struct {
	id, name string
	task     taskJSON
	at       time.Time // when it arrived
}

// readEvents reads the events of an open stream until it ends.
func readEvents(t *testing.T, resp *http.Response) []sseEvent {
	t.Helper()
	var events []sseEvent
	var ev sseEvent
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		line := s.Text()
		switch {
		case line == "":
			if ev.name != "" {
				ev.at = time.Now()
				events = append(events, ev)
			}
			ev = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.task); err != nil {
				t.Fatalf("event data %q: %v", line, err)
			}
		}
	}
	return events
}

func openEvents(t *testing.T, url, lastEventID string) *http.Response {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestTaskEventsFollowATaskToItsEnd: the stream sends the task's statuses
// as they are written, in order, ends after the final one, and a client
// that reconnects never misses the final one.
func TestTaskEventsFollowATaskToItsEnd(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			e := env(t)
			e["HEAVY_TASK_DELAY"] = "100ms"
			base := startErrand(t, e)
			id := submitTask(t, base, `{"data": "streamed", "iterations": 5}`)
			opened := time.Now()
			resp := openEvents(t, base+"/api/tasks/"+id+"/events", "")
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("events: %d %s, want 200 text/event-stream", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			events := readEvents(t, resp)
			took := time.Since(opened)
			if len(events) < 4 {
				t.Fatalf("%d events, want the progress of 5 iterations and the end: %+v", len(events), events)
			}
			last := events[len(events)-1]
			if last.task.Status != stateSuccess || last.task.Result == nil {
				t.Errorf("last event %+v, want SUCCESS with the result", last.task)
			}
			sawProgress := false
			for i, ev := range events {
				if ev.name != "status" || ev.task.TaskID != id || ev.id == "" {
					t.Errorf("event %d: %+v, want a status event of %s with an id", i, ev, id)
				}
				if i > 0 && stateRank(ev.task.Status) < stateRank(events[i-1].task.Status) {
					t.Errorf("event %d went back from %s to %s", i, events[i-1].task.Status, ev.task.Status)
				}
				sawProgress = sawProgress || (ev.task.Progress != nil && ev.task.Progress.Current > 0)
			}
			if !sawProgress {
				t.Errorf("no progress among %d events", len(events))
			}
			if took > 5*time.Second {
				t.Errorf("the stream ended %v after it opened, want soon after the task (half a second of work)", took)
			}

			// A client that lost the stream before the end gets the final
			// status on reconnecting; one that has it is told to stop.
			again := readEvents(t, openEvents(t, base+"/api/tasks/"+id+"/events", events[0].id))
			if len(again) != 1 || again[0].task.Status != stateSuccess {
				t.Errorf("reconnect from the first event: %+v, want the final status alone", again)
			}
			if resp := openEvents(t, base+"/api/tasks/"+id+"/events", last.id); resp.StatusCode != http.StatusNoContent {
				t.Errorf("reconnect with the final event's id: %d, want 204", resp.StatusCode)
			}
			if resp := openEvents(t, base+"/api/tasks/6d1f1c2e-0000-4000-8000-000000000000/events", ""); resp.StatusCode != http.StatusNotFound {
				t.Errorf("events of an unknown task: %d, want 404", resp.StatusCode)
			}
		})
	}
}

// TestTaskEventsEndAtShutdown: an open stream does not hold shutdown up;
// it ends cleanly as the server stops, and the client reconnects elsewhere.
func TestTaskEventsEndAtShutdown(t *testing.T) {
	addr := freeAddr(t)
	env := map[string]string{"ADDR": addr, "LOG_LEVEL": "warn", "SHUTDOWN_TIMEOUT": "60s"}
	var logs lockedBuffer
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"errand"}, func(k string) string { return env[k] }, &logs, &logs) }()
	base := "http://" + addr
	waitForHTTP(t, base+"/health", done)
	var acc taskAccepted
	apiCall(t, "POST", base+"/api/tasks", `{"type": "process_heavy_task", "args": {"data": "d"}, "countdown": 3600}`, nil, &acc)

	stream := bufio.NewReader(openEvents(t, base+"/api/tasks/"+acc.TaskID+"/events", "").Body)
	for {
		line, err := stream.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before its first event: %v", err)
		}
		if line == "\n" {
			break // the first event (SCHEDULED) is in; the handler waits for the next
		}
	}
	rest := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(stream)
		rest <- err
	}()
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run returned %v", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("errand did not stop")
	}
	if strings.Contains(logs.String(), "http shutdown incomplete") {
		t.Fatalf("shutdown waited out its timeout for the open stream:\n%s", logs.String())
	}
	select {
	case err := <-rest:
		if err != nil {
			t.Errorf("stream ended with %v, want a clean end", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the stream stayed open after the server stopped")
	}
}
