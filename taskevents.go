package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// eventStreamHeartbeat is how often an idle event stream sends a comment,
// so that proxies (nginx's proxy_read_timeout is 30 s) keep it open. Every
// other heartbeat also reads the task's status, which catches a status
// whose announcement was lost while the subscription redialled.
const eventStreamHeartbeat = 15 * time.Second

// handleTaskEvents is GET /api/tasks/{task_id}/events: Server-Sent Events
// of the task's status (each event the task as GET /api/tasks/{task_id}
// shows it) until a final one, after which the stream ends. A client that
// reconnects with Last-Event-ID gets the current status again, so it
// never misses the final one; one that already has the final one gets
// 204, which tells an EventSource to stop reconnecting.
//
// Streams end when the server shuts down (shutdown is closed), which
// otherwise waits for every open request.
func handleTaskEvents(reader taskStatusReader, watcher statusWatcher, shutdown <-chan struct{}) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		ctx := r.Context()
		id := r.PathValue("task_id")
		if !taskIDPattern.MatchString(id) {
			return badRequest("invalid_id", "invalid task id")
		}
		// Watch first, then read: a status written in between is in the
		// updates.
		updates := watcher.watch(ctx, id)
		st, err := reader.ownStatus(ctx, id)
		if err != nil {
			return err
		}
		if st.final() && r.Header.Get("Last-Event-ID") == eventID(st) {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		// A stream lasts as long as the task: no write or read deadline.
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(time.Time{})
		_ = rc.SetReadDeadline(time.Time{})
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Accel-Buffering", "no") // nginx: pass each event on at once
		w.WriteHeader(http.StatusOK)
		sent := st
		if err := writeEvent(w, rc, st); err != nil || st.final() {
			return nil
		}
		heartbeat := time.NewTicker(eventStreamHeartbeat)
		defer heartbeat.Stop()
		beats := 0
		for {
			var next taskStatus
			var ok bool
			select {
			case <-ctx.Done():
				return nil
			case <-shutdown:
				return nil
			case <-updates.changed:
				next, ok = updates.take()
			case <-heartbeat.C:
				beats++
				if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil || rc.Flush() != nil {
					return nil
				}
				if beats%2 == 0 {
					next, err = reader.status(ctx, id)
					ok = err == nil
				}
			}
			if !ok || !newer(next, sent) {
				continue
			}
			sent = next
			if err := writeEvent(w, rc, next); err != nil || next.final() {
				return nil
			}
		}
	}
}

// newer reports whether st is a later status than sent.
func newer(st, sent taskStatus) bool {
	if r, s := stateRank(st.Status), stateRank(sent.Status); r != s {
		return r > s
	}
	return st.UpdatedAt.After(sent.UpdatedAt) && !sent.final()
}

// eventID names a status: its time and its state's rank, which together
// only grow.
func eventID(st taskStatus) string {
	return strconv.FormatInt(st.UpdatedAt.UnixMilli(), 10) + "-" + strconv.Itoa(stateRank(st.Status))
}

// writeEvent sends st as one "status" event and flushes it.
func writeEvent(w http.ResponseWriter, rc *http.ResponseController, st taskStatus) error {
	data, err := json.Marshal(newTaskJSON(st))
	if err != nil {
		return fmt.Errorf("encode the status of %s: %w", st.TaskID, err)
	}
	if _, err := fmt.Fprintf(w, "id: %s\nevent: status\ndata: %s\n\n", eventID(st), data); err != nil {
		return err
	}
	return rc.Flush()
}
