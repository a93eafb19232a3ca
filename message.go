package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// taskMessage is the body of a task on the queue.
type taskMessage struct {
	ID         string          `json:"id"`
	Type       string          `json:"type"`
	Args       json.RawMessage `json:"args"`
	Priority   string          `json:"priority"`
	EnqueuedAt time.Time       `json:"enqueued_at"`
	// ETA is when a scheduled task is due; zero for a task due at once. A
	// worker that gets the task early (see delayFor) puts it back to wait
	// for the rest.
	ETA time.Time `json:"eta,omitzero"`
	// RateSlot is the start its type's rate limit reserved for the task
	// (see throttle.go); zero before it has one. Like ETA, a worker that
	// gets the task earlier puts it back to wait.
	RateSlot time.Time `json:"rate_slot,omitzero"`
	// Parked counts the times the task was parked for a slot of its
	// concurrency key, and ParkedAt is when it first was (its place in
	// the key's line).
	Parked   int       `json:"parked,omitempty"`
	ParkedAt time.Time `json:"parked_at,omitzero"`
	// Attempt counts the retries already made after failed runs.
	Attempt   int    `json:"attempt,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Deliveries counts the times the message came back unsettled (its
	// worker died or lost its connection mid-run). RabbitMQ's classic
	// queues do not count redeliveries, so errand carries the count in the
	// message itself; see workerPool.process.
	Deliveries int `json:"deliveries,omitempty"`
	// Owner identifies the API key that submitted the task.
	Owner string `json:"owner,omitempty"`
	// CallbackURL is where the task's final status is POSTed (webhooks.go).
	CallbackURL string `json:"callback_url,omitempty"`
	// ConcurrencyKey groups tasks that share a limit on how many of them
	// run at once (concurrency.go); "" for none.
	ConcurrencyKey string `json:"concurrency_key,omitempty"`
	// Workflow places a step of a workflow; nil for a task of its own.
	Workflow *workflowRef `json:"workflow,omitempty"`
	// Previous is the result a workflow's step gets from the step (or
	// group) before it: the handler's tasks.Task.Previous.
	Previous json.RawMessage `json:"previous,omitempty"`
	// Trace is the W3C trace context of the submit (traceparent,
	// tracestate). It travels in the body so every broker carries it; the
	// AMQP broker also sets it as message headers, where other tools look.
	Trace map[string]string `json:"trace,omitempty"`
}

// Priorities by name, mapped onto AMQP message priorities as the guide's
// Celery configuration maps them (a higher number is served first).
var priorityLevels = map[string]uint8{"low": 1, "normal": 5, "high": 9}

// maxPriority is the queue's x-max-priority. RabbitMQ's classic queues
// keep one sub-queue per level, so it stays small.
const maxPriority = 10

// due is when the task may start: its ETA or its rate slot, whichever is
// later; zero for at once.
func (m taskMessage) due() time.Time {
	if m.RateSlot.After(m.ETA) {
		return m.RateSlot
	}
	return m.ETA
}

func decodeTaskMessage(body []byte) (taskMessage, error) {
	var m taskMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return taskMessage{}, fmt.Errorf("decode task message: %w", err)
	}
	if m.ID == "" || m.Type == "" {
		return taskMessage{}, errors.New("decode task message: id and type are required")
	}
	return m, nil
}

// delivery is one task handed to the worker pool by a broker. Exactly one
// of ack or reject must be called. The functions belong to the connection
// the message arrived on: after a reconnect they fail rather than settle a
// different message, and the broker redelivers the original.
type delivery struct {
	body        []byte
	headers     map[string]string // string-valued message headers, if the broker has any
	redelivered bool
	ack         func() error
	reject      func(requeue bool) error
}

func encodeTaskMessage(m taskMessage) ([]byte, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode task message %s: %w", m.ID, err)
	}
	return body, nil
}
