package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"errand/tasks"
)

// Bounds of the items API, as the guide's models set them.
const (
	maxItemName        = 200
	maxItemDescription = 2000
	maxMetadataDepth   = 10
	defaultPageSize    = 100
	maxPageSize        = 1000
	maxUserName        = 200
	maxEmailAddress    = 254
)

// isoMillis is the guide's timestamp format.
const isoMillis = "2006-01-02T15:04:05.000Z"

type itemResponse struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Description *string        `json:"description"`
	Metadata    map[string]any `json:"metadata"`
	CreatedAt   string         `json:"created_at"`
	UpdatedAt   string         `json:"updated_at"`
}

func newItemResponse(it item) itemResponse {
	return itemResponse{ID: it.ID, Name: it.Name, Description: it.Description, Metadata: it.Metadata,
		CreatedAt: it.CreatedAt.UTC().Format(isoMillis), UpdatedAt: it.UpdatedAt.UTC().Format(isoMillis)}
}

type itemRequest struct {
	Name        *string         `json:"name"`
	Description *string         `json:"description"`
	Metadata    json.RawMessage `json:"metadata"`
}

// validate checks the fields present; create additionally requires name.
func (req itemRequest) validate(create bool) (itemUpdate, error) {
	var u itemUpdate
	if req.Name == nil {
		if create {
			return u, invalidField("name", "is required")
		}
	} else {
		if n := utf8.RuneCountInString(*req.Name); n < 1 || n > maxItemName {
			return u, invalidField("name", "must be 1 to %d characters", maxItemName)
		}
		u.Name = req.Name
	}
	if req.Description != nil {
		if utf8.RuneCountInString(*req.Description) > maxItemDescription {
			return u, invalidField("description", "must be at most %d characters", maxItemDescription)
		}
		u.Description = req.Description
	}
	if len(req.Metadata) > 0 && string(req.Metadata) != "null" {
		md, err := decodeMetadata(req.Metadata)
		if err != nil {
			return u, err
		}
		u.Metadata = md
	}
	return u, nil
}

// decodeMetadata reads metadata as a JSON object that MongoDB can store:
// keys without a leading $ or a dot, bounded nesting, and integers kept
// as integers rather than rounded through float64.
func decodeMetadata(raw json.RawMessage) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, invalidField("metadata", "must be a JSON object")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, invalidField("metadata", "must be a JSON object")
	}
	normalized, err := normalizeJSON(obj, "metadata", 1)
	if err != nil {
		return nil, err
	}
	return normalized.(map[string]any), nil
}

// normalizeJSON checks keys and nesting and converts json.Number values;
// depth counts the objects and arrays enclosing v.
func normalizeJSON(v any, path string, depth int) (any, error) {
	switch v.(type) {
	case map[string]any, []any:
		if depth > maxMetadataDepth {
			return nil, invalidField(path, "nests deeper than %d levels", maxMetadataDepth)
		}
	}
	switch v := v.(type) {
	case map[string]any:
		for k, child := range v {
			if k == "" || strings.HasPrefix(k, "$") || strings.Contains(k, ".") || strings.ContainsRune(k, 0) {
				return nil, invalidField(path, "key %q is not allowed: keys must be non-empty, not start with $ and not contain . or NUL", k)
			}
			n, err := normalizeJSON(child, path+"."+k, depth+1)
			if err != nil {
				return nil, err
			}
			v[k] = n
		}
		return v, nil
	case []any:
		for i, child := range v {
			n, err := normalizeJSON(child, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			v[i] = n
		}
		return v, nil
	case json.Number:
		if i, err := v.Int64(); err == nil {
			return i, nil
		}
		if !strings.ContainsAny(string(v), ".eE") {
			// An integer too large for int64 would be silently rounded as a
			// float; refuse it instead.
			return nil, invalidField(path, "integer %s is out of range (64-bit signed integers only)", v)
		}
		f, err := v.Float64()
		if err != nil || math.IsInf(f, 0) {
			return nil, invalidField(path, "number %s is out of range", v)
		}
		return f, nil
	default:
		return v, nil
	}
}

func createItem(items itemStore, maxBody int64, now func() time.Time) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req itemRequest
		if err := decodeJSON(w, r, maxBody, &req); err != nil {
			return err
		}
		u, err := req.validate(true)
		if err != nil {
			return err
		}
		t := now()
		it, err := items.createItem(r.Context(), item{Name: *u.Name, Description: u.Description, Metadata: u.Metadata, CreatedAt: t, UpdatedAt: t})
		if err != nil {
			return fmt.Errorf("create item: %w", err)
		}
		w.Header().Set("Location", "/api/items/"+it.ID)
		writeJSON(w, http.StatusCreated, newItemResponse(it))
		return nil
	}
}

// queryInt reads an optional integer query parameter within [lo, hi].
func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	raw := r.URL.Query().Get(name)
	if raw == "" {
		return def, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < lo || n > hi {
		return 0, invalidField(name, "must be an integer from %d to %d", lo, hi)
	}
	return n, nil
}

func listItems(items itemStore) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		skip, err := queryInt(r, "skip", 0, 0, math.MaxInt32)
		if err != nil {
			return err
		}
		limit, err := queryInt(r, "limit", defaultPageSize, 1, maxPageSize)
		if err != nil {
			return err
		}
		list, err := items.listItems(r.Context(), skip, limit)
		if err != nil {
			return fmt.Errorf("list items: %w", err)
		}
		out := make([]itemResponse, len(list))
		for i, it := range list {
			out[i] = newItemResponse(it)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

func getItem(items itemStore) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		it, err := items.getItem(r.Context(), r.PathValue("id"))
		if err != nil {
			return fmt.Errorf("get item: %w", err)
		}
		writeJSON(w, http.StatusOK, newItemResponse(it))
		return nil
	}
}

func updateItem(items itemStore, maxBody int64, now func() time.Time) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		if _, err := itemObjectID(id); err != nil {
			return err
		}
		var req itemRequest
		if err := decodeJSON(w, r, maxBody, &req); err != nil {
			return err
		}
		u, err := req.validate(false)
		if err != nil {
			return err
		}
		it, err := items.updateItem(r.Context(), id, u, now())
		if err != nil {
			return fmt.Errorf("update item: %w", err)
		}
		writeJSON(w, http.StatusOK, newItemResponse(it))
		return nil
	}
}

func deleteItem(items itemStore) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		if err := items.deleteItem(r.Context(), id); err != nil {
			return fmt.Errorf("delete item: %w", err)
		}
		writeJSON(w, http.StatusOK, map[string]string{"message": "Item deleted successfully", "id": id})
		return nil
	}
}

// taskPublisher puts a task on the queue; nil means the broker confirmed it.
type taskPublisher interface {
	publish(ctx context.Context, m taskMessage) error
}

// taskSubmitter records a new task as PENDING and queues it.
type taskSubmitter struct {
	statuses  statusStore
	publisher taskPublisher
	log       *slog.Logger
	now       func() time.Time
	metrics   *metrics
	// keyTTL is how long an Idempotency-Key keeps pointing at its task.
	keyTTL time.Duration
	// staleAfter is how long a reserved, unpublished key may be in flight
	// before another request takes it over (see keyReservation).
	staleAfter time.Duration
	tracing    *tracing
}

// submission is the outcome of a submit.
type submission struct {
	id string
	// replayed is true when an earlier request with the same
	// Idempotency-Key made the task; id is that task's.
	replayed bool
}

// errIdempotencyMismatch is a reused Idempotency-Key with a different request.
var errIdempotencyMismatch = &apiError{status: http.StatusUnprocessableEntity, code: "idempotency_key_reused", field: "Idempotency-Key",
	message: "Idempotency-Key: already used for a different request"}

// submit queues a task and returns its id once the broker has confirmed
// it. The PENDING status is written first, so a fast worker's PROGRESS or
// SUCCESS can never be overwritten by it, and removed again if the publish
// fails, so no status claims a task that was never queued. With an
// idempotency key, the first request reserves the key for its task id and
// every later one with the same key and request gets that id back.
func (s taskSubmitter) submit(ctx context.Context, taskType string, args any, priority, idempotencyKey string) (submission, error) {
	raw, err := json.Marshal(args)
	if err != nil {
		return submission{}, fmt.Errorf("encode %s arguments: %w", taskType, err)
	}
	owner := taskOwner(ctx)
	claim := keyClaim{taskID: newTaskID()}
	if idempotencyKey != "" {
		claim, err = s.claimKey(ctx, owner, idempotencyKey, idempotencyFingerprint(taskType, priority, raw), claim.taskID)
		if err != nil {
			return submission{}, err
		}
		if claim.replay {
			return submission{id: claim.taskID, replayed: true}, nil
		}
	}
	id := claim.taskID
	// The producer span is the parent of the worker's consumer span: its
	// context travels with the message.
	ctx, span := s.tracing.tracer.Start(ctx, "publish "+taskType, trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("messaging.system", "rabbitmq"), attribute.String("messaging.operation.type", "send"),
			attribute.String("messaging.message.id", id), attribute.String("errand.task_type", taskType)))
	defer span.End()
	carrier := propagation.MapCarrier{}
	s.tracing.propagator.Inject(ctx, carrier)
	now := s.now()
	if err := s.statuses.put(ctx, taskStatus{TaskID: id, Status: statePending, TaskType: taskType, Owner: owner, TraceID: traceID(ctx), UpdatedAt: now}, 0); err != nil {
		s.settleKey(ctx, claim, false)
		return submission{}, fmt.Errorf("%w: record pending %s: %v", errStatusUnavailable, id, err)
	}
	publishStart := time.Now()
	err = s.publisher.publish(ctx, taskMessage{ID: id, Type: taskType, Args: raw, Priority: priority, EnqueuedAt: now, Owner: owner, Trace: carrier})
	s.metrics.observePublish(ctx, taskType, priority, publishStart, err)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		// The client may be gone already, but the pending status must
		// still go, so the undo gets a context of its own.
		undoCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeOpTimeout)
		defer cancel()
		if undoErr := s.statuses.deletePending(undoCtx, id); undoErr != nil {
			s.log.Error("pending status of an unqueued task not removed", "task_id", id, "error", undoErr)
		}
		s.settleKey(undoCtx, claim, false)
		return submission{}, fmt.Errorf("queue %s %s: %w", taskType, id, err)
	}
	s.settleKey(ctx, claim, true)
	// The request's access-log line carries the task; a line of its own
	// per submit only at debug level.
	addAccessLogAttrs(ctx, "task_id", id, "task_type", taskType)
	s.log.DebugContext(ctx, "task queued", "task_id", id, "task_type", taskType, "priority", priority, "request_id", requestID(ctx))
	return submission{id: id}, nil
}

// idempotencyKey reads and checks the Idempotency-Key header.
func idempotencyKey(r *http.Request) (string, error) {
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 || !printableASCII(key) {
		return "", invalidField("Idempotency-Key", "must be 1 to 255 printable ASCII characters")
	}
	return key, nil
}

func printableASCII(s string) bool {
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// writeSubmitted answers a submit: 202 with the guide's body, or for an
// idempotent replay the same task id with its current status.
func writeSubmitted(ctx context.Context, w http.ResponseWriter, statuses statusStore, sub submission, message string) {
	status := statePending
	if sub.replayed {
		w.Header().Set("Idempotent-Replayed", "true")
		message = "Task already submitted with this Idempotency-Key. Use /api/async/status/{task_id} to check progress."
		if st, err := statuses.get(ctx, sub.id); err == nil {
			status = st.Status
		}
	}
	w.Header().Set("Location", "/api/async/status/"+sub.id)
	writeJSON(w, http.StatusAccepted, taskAccepted{TaskID: sub.id, Status: status, Message: message})
}

// newTaskID returns a random (version 4) UUID, the form Celery's task ids
// have.
func newTaskID() string {
	b := []byte(newRandomID(16))
	// Set the version (4) and variant (10xx) nibbles in the hex text.
	b[12] = '4'
	b[16] = "89ab"[strings.IndexByte("0123456789abcdef", b[16])%4]
	return fmt.Sprintf("%s-%s-%s-%s-%s", b[0:8], b[8:12], b[12:16], b[16:20], b[20:32])
}

var taskIDPattern = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z_.:-]{0,127}$`)

type taskAccepted struct {
	TaskID  string `json:"task_id"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

type processRequest struct {
	Data       *string `json:"data"`
	Iterations *int    `json:"iterations"`
	Priority   *string `json:"priority"`
}

func submitProcess(sub taskSubmitter, maxBody int64) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req processRequest
		if err := decodeJSON(w, r, maxBody, &req); err != nil {
			return err
		}
		args := tasks.HeavyArgs{Iterations: tasks.DefaultHeavyIt}
		priority := "normal"
		switch {
		case req.Data == nil:
			return invalidField("data", "is required")
		case utf8.RuneCountInString(*req.Data) > tasks.MaxHeavyData:
			return invalidField("data", "must be at most %d characters", tasks.MaxHeavyData)
		}
		args.Data = *req.Data
		if req.Iterations != nil {
			if *req.Iterations < 1 || *req.Iterations > tasks.MaxIterations {
				return invalidField("iterations", "must be from 1 to %d", tasks.MaxIterations)
			}
			args.Iterations = *req.Iterations
		}
		if req.Priority != nil {
			if _, ok := priorityLevels[*req.Priority]; !ok {
				return invalidField("priority", "must be low, normal or high")
			}
			priority = *req.Priority
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		res, err := sub.submit(r.Context(), tasks.HeavyTaskName, args, priority, key)
		if err != nil {
			return err
		}
		writeSubmitted(r.Context(), w, sub.statuses, res, "Task submitted successfully. Use /api/async/status/{task_id} to check progress.")
		return nil
	}
}

type welcomeEmailRequest struct {
	UserEmail *string `json:"user_email"`
	UserName  *string `json:"user_name"`
}

// submitWelcomeEmail takes user_email and user_name from the query, as the
// guide's curl sends them, or from a JSON body; query values win.
func submitWelcomeEmail(sub taskSubmitter, maxBody int64) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var body welcomeEmailRequest
		if r.ContentLength != 0 {
			if err := decodeJSON(w, r, maxBody, &body); err != nil && !isEmptyBody(err) {
				return err
			}
		}
		q := r.URL.Query()
		args := tasks.EmailArgs{UserEmail: q.Get("user_email"), UserName: q.Get("user_name")}
		if args.UserEmail == "" && body.UserEmail != nil {
			args.UserEmail = *body.UserEmail
		}
		if args.UserName == "" && body.UserName != nil {
			args.UserName = *body.UserName
		}
		if err := validateEmailArgs(args); err != nil {
			return err
		}
		key, err := idempotencyKey(r)
		if err != nil {
			return err
		}
		res, err := sub.submit(r.Context(), tasks.WelcomeEmailName, args, "normal", key)
		if err != nil {
			return err
		}
		writeSubmitted(r.Context(), w, sub.statuses, res, fmt.Sprintf("Email queued for %s. Check /api/async/status/%s", args.UserEmail, res.id))
		return nil
	}
}

func isEmptyBody(err error) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.code == "empty_body"
}

func validateEmailArgs(args tasks.EmailArgs) error {
	if args.UserEmail == "" {
		return invalidField("user_email", "is required")
	}
	addr, err := mail.ParseAddress(args.UserEmail)
	if err != nil || addr.Address != args.UserEmail || len(args.UserEmail) > maxEmailAddress || !strings.Contains(args.UserEmail[strings.LastIndexByte(args.UserEmail, '@')+1:], ".") {
		return invalidField("user_email", "must be a plain e-mail address such as john@example.com")
	}
	if n := utf8.RuneCountInString(args.UserName); n < 1 || n > maxUserName {
		return invalidField("user_name", "must be 1 to %d characters", maxUserName)
	}
	if !utf8.ValidString(args.UserName) {
		// A query string can carry any bytes; JSON bodies are UTF-8 already.
		return invalidField("user_name", "must be valid UTF-8")
	}
	if strings.ContainsAny(args.UserName, "\r\n") {
		return invalidField("user_name", "must not contain line breaks")
	}
	return nil
}

// taskStatusReader finds a task's status: the live one in the status
// store, else the durable result once the live entry has expired.
type taskStatusReader struct {
	statuses  statusStore
	results   resultStore
	resultTTL time.Duration
	log       *slog.Logger
	now       func() time.Time
}

// staleAfter is how long a running task's status may go without an update
// before the reader checks whether the task has in fact finished: when the
// status store was down as a worker wrote the final status, the result
// store has the truth, and the reader repairs the status from it.
const staleAfter = 10 * time.Second

func (s taskStatusReader) status(ctx context.Context, id string) (taskStatus, error) {
	st, liveErr := s.statuses.get(ctx, id)
	if liveErr == nil {
		if st.final() || s.now().Sub(st.UpdatedAt) < staleAfter {
			return st, nil
		}
		rec, err := s.results.getResult(ctx, id)
		if err != nil {
			return st, nil // still running, or the result store is down: the live status stands
		}
		if err := s.statuses.put(ctx, rec.status(), s.resultTTL); err != nil {
			s.log.WarnContext(ctx, "stale status not repaired", "task_id", id, "error", err)
		}
		return rec.status(), nil
	}
	if !errors.Is(liveErr, errStatusNotFound) {
		s.log.WarnContext(ctx, "status store failed; trying the result store", "task_id", id, "error", liveErr)
	}
	rec, err := s.results.getResult(ctx, id)
	if err == nil {
		return rec.status(), nil
	}
	liveMissing, storedMissing := errors.Is(liveErr, errStatusNotFound), errors.Is(err, errNotFound)
	switch {
	case liveMissing && storedMissing:
		return taskStatus{}, errStatusNotFound
	case liveMissing:
		// Only a store that failed speaks: "not found" from one store
		// while the other is down is no answer.
		return taskStatus{}, fmt.Errorf("%w: read result of %s: %v", errStoreUnavailable, id, err)
	case storedMissing:
		return taskStatus{}, fmt.Errorf("%w: read status of %s: %v", errStoreUnavailable, id, liveErr)
	default:
		return taskStatus{}, fmt.Errorf("%w: read status of %s: %v", errStoreUnavailable, id, errors.Join(liveErr, err))
	}
}

func getTaskStatus(reader taskStatusReader) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("task_id")
		if !taskIDPattern.MatchString(id) {
			return badRequest("invalid_id", "invalid task id")
		}
		st, err := reader.status(r.Context(), id)
		if err != nil {
			return err
		}
		if st.Owner != taskOwner(r.Context()) {
			// Another key's task: as far as this client knows, it does not exist.
			return errStatusNotFound
		}
		st.Owner = ""
		writeJSON(w, http.StatusOK, st)
		return nil
	}
}

// listTasks lists finished tasks from the result store, newest first:
// GET /api/tasks?status=FAILURE shows the dead-lettered ones.
func listTasks(results resultStore) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		status := r.URL.Query().Get("status")
		if status != "" && status != stateSuccess && status != stateFailure {
			return invalidField("status", "must be SUCCESS or FAILURE (running tasks are read one at a time from /api/async/status/{task_id})")
		}
		skip, err := queryInt(r, "skip", 0, 0, math.MaxInt32)
		if err != nil {
			return err
		}
		limit, err := queryInt(r, "limit", defaultPageSize, 1, maxPageSize)
		if err != nil {
			return err
		}
		records, err := results.listResults(r.Context(), resultFilter{Status: status, Owner: taskOwner(r.Context())}, skip, limit)
		if err != nil {
			return fmt.Errorf("%w: list tasks: %v", errStoreUnavailable, err)
		}
		out := make([]taskStatus, len(records))
		for i, rec := range records {
			out[i] = rec.status()
			out[i].Owner = ""
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

type retryAccepted struct {
	taskAccepted
	RetryOf string `json:"retry_of"`
}

// retryTask runs a failed task again, with its arguments and priority, as
// a new task: the failed one stays on record as it ended.
func retryTask(results resultStore, sub taskSubmitter) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("task_id")
		if !taskIDPattern.MatchString(id) {
			return badRequest("invalid_id", "invalid task id")
		}
		rec, err := results.getResult(r.Context(), id)
		if err == nil && rec.Owner != taskOwner(r.Context()) {
			err = errNotFound
		}
		if errors.Is(err, errNotFound) {
			return &apiError{status: http.StatusNotFound, code: "not_found", message: "no finished task with this id"}
		}
		if err != nil {
			return fmt.Errorf("%w: read result of %s: %v", errStoreUnavailable, id, err)
		}
		if rec.Status != stateFailure {
			return &apiError{status: http.StatusConflict, code: "not_failed", message: "only a FAILURE can be retried; this task ended " + rec.Status}
		}
		if rec.Args == nil {
			return &apiError{status: http.StatusConflict, code: "not_retryable", message: "this task's arguments were not recorded (an undecodable message)"}
		}
		if _, ok := priorityLevels[rec.Priority]; !ok {
			rec.Priority = "normal"
		}
		res, err := sub.submit(r.Context(), rec.TaskType, rec.Args, rec.Priority, "")
		if err != nil {
			return err
		}
		newID := res.id
		w.Header().Set("Location", "/api/async/status/"+newID)
		writeJSON(w, http.StatusAccepted, retryAccepted{
			taskAccepted: taskAccepted{TaskID: newID, Status: statePending,
				Message: fmt.Sprintf("Task %s queued again as %s. Use /api/async/status/%s to check progress.", id, newID, newID)},
			RetryOf: id,
		})
		return nil
	}
}

// pinger is a dependency that /health checks.
type pinger interface {
	ping(ctx context.Context) error
}

type healthResponse struct {
	Status    string            `json:"status"`
	Timestamp string            `json:"timestamp"`
	Services  map[string]string `json:"services"`
	Backends  string            `json:"backends"`
}

// health pings every dependency at once, each with its own deadline, and
// answers 503 naming the ones that failed.
func health(deps map[string]pinger, backends string, timeout time.Duration, log *slog.Logger, now func() time.Time) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		resp := healthResponse{Status: "healthy", Services: map[string]string{}, Backends: backends}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for name, dep := range deps {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(r.Context(), timeout)
				defer cancel()
				state := "connected"
				if err := dep.ping(ctx); err != nil {
					state = "disconnected"
					log.WarnContext(ctx, "health check failed", "service", name, "error", err, "request_id", requestID(r.Context()))
				}
				mu.Lock()
				resp.Services[name] = state
				mu.Unlock()
			}()
		}
		wg.Wait()
		code := http.StatusOK
		for _, state := range resp.Services {
			if state != "connected" {
				resp.Status, code = "unhealthy", http.StatusServiceUnavailable
			}
		}
		resp.Timestamp = now().UTC().Format(isoMillis)
		writeJSON(w, code, resp)
		return nil
	}
}
