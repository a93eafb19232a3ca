package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// acceptFunc keeps the promises for one task before its 202; nil keeps
// none (-mode bare).
type acceptFunc func(ctx context.Context, task taskMessage) error

// submitBody is the guide's submit: the fields errand's
// /api/async/process takes.
type submitBody struct {
	Data       string `json:"data"`
	Iterations int    `json:"iterations"`
	Priority   string `json:"priority"`
}

// taskMessage is what goes on the queue: the task and its arguments.
type taskMessage struct {
	ID         string     `json:"id"`
	Type       string     `json:"type"`
	Args       submitBody `json:"args"`
	Priority   string     `json:"priority"`
	EnqueuedAt time.Time  `json:"enqueued_at"`
}

func newHandler(accept acceptFunc) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("POST /api/async/process", func(w http.ResponseWriter, r *http.Request) {
		var body submitBody
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&body); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "malformed JSON body: " + err.Error()})
			return
		}
		id := newTaskID()
		if accept != nil {
			priority := body.Priority
			if priority == "" {
				priority = "normal"
			}
			task := taskMessage{ID: id, Type: "process_heavy_task", Args: body, Priority: priority, EnqueuedAt: time.Now().UTC()}
			if err := accept(r.Context(), task); err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
				return
			}
		}
		writeJSON(w, http.StatusAccepted, map[string]string{"task_id": id, "status": "PENDING", "message": "Task queued"})
	})
	return mux
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do about it
}

// newTaskID is a random (version 4) UUID, as errand's task ids are.
func newTaskID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
