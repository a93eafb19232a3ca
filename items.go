package main

import (
	"context"
	"encoding/json"
	"errand/tasks"
	"fmt"
	"math"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Bounds of an item, as the guide's models set them.
const (
	maxItemName        = 200
	maxItemDescription = 2000
	maxMetadataDepth   = 10
)

// item is a document of the items collection.
type item struct {
	ID          string
	Name        string
	Description *string
	Metadata    map[string]any
	// Owner identifies the API key that made the item ("" without keys).
	Owner     string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// itemUpdate holds the fields a PUT sets; nil fields stay as they are.
type itemUpdate struct {
	Name        *string
	Description *string
	Metadata    map[string]any
}

// itemStore is the items collection. Implementations: mongoStore and
// memoryStore. Items belong to the API key that made them: an owner sees
// and changes only its own, and another's are not found. The empty owner
// (no API keys) sees every item.
type itemStore interface {
	createItem(ctx context.Context, it item) (item, error)
	listItems(ctx context.Context, owner string, skip, limit int) ([]item, error)
	getItem(ctx context.Context, owner, id string) (item, error)
	updateItem(ctx context.Context, owner, id string, u itemUpdate, now time.Time) (item, error)
	deleteItem(ctx context.Context, owner, id string) error
	// importBase is when owner's first import of source began: now, if
	// this is the first. Imports build their items' ids on it.
	importBase(ctx context.Context, owner, source string, now time.Time) (time.Time, error)
	// importItems stores items, which carry their ids, and leaves those
	// stored already as they are; it returns how many were new.
	importItems(ctx context.Context, items []item) (int, error)
}

// ownedBy reports whether owner may see an item of itemOwner.
func ownedBy(itemOwner, owner string) bool { return owner == "" || itemOwner == owner }

func handleCreateItem(items itemStore, maxBody int64, now func() time.Time) handlerFunc {
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
		it, err := items.createItem(r.Context(), item{Name: *u.Name, Description: u.Description, Metadata: u.Metadata,
			Owner: taskOwner(r.Context()), CreatedAt: t, UpdatedAt: t})
		if err != nil {
			return fmt.Errorf("create item: %w", err)
		}
		w.Header().Set("Location", "/api/items/"+it.ID)
		writeJSON(w, http.StatusCreated, newItemResponse(it))
		return nil
	}
}

func handleListItems(items itemStore) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		skip, limit, err := pageQuery(r)
		if err != nil {
			return err
		}
		list, err := items.listItems(r.Context(), taskOwner(r.Context()), skip, limit)
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

func handleGetItem(items itemStore) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		it, err := items.getItem(r.Context(), taskOwner(r.Context()), r.PathValue("id"))
		if err != nil {
			return fmt.Errorf("get item: %w", err)
		}
		writeJSON(w, http.StatusOK, newItemResponse(it))
		return nil
	}
}

func handleUpdateItem(items itemStore, maxBody int64, now func() time.Time) handlerFunc {
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
		it, err := items.updateItem(r.Context(), taskOwner(r.Context()), id, u, now())
		if err != nil {
			return fmt.Errorf("update item: %w", err)
		}
		writeJSON(w, http.StatusOK, newItemResponse(it))
		return nil
	}
}

func handleDeleteItem(items itemStore) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		id := r.PathValue("id")
		if err := items.deleteItem(r.Context(), taskOwner(r.Context()), id); err != nil {
			return fmt.Errorf("delete item: %w", err)
		}
		writeJSON(w, http.StatusOK, deletedJSON{Message: "Item deleted successfully", ID: id})
		return nil
	}
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

// deletedJSON is the guide's answer to a delete.
type deletedJSON struct {
	Message string `json:"message"`
	ID      string `json:"id"`
}

type itemResponse struct {
	ID          string         `json:"id"`
	Name        string         `json:"name"`
	Description *string        `json:"description" jsonschema:"nullable"`
	Metadata    map[string]any `json:"metadata"`
	CreatedAt   string         `json:"created_at"`
	UpdatedAt   string         `json:"updated_at"`
}

func newItemResponse(it item) itemResponse {
	return itemResponse{ID: it.ID, Name: it.Name, Description: it.Description, Metadata: it.Metadata,
		CreatedAt: it.CreatedAt.UTC().Format(isoMillis), UpdatedAt: it.UpdatedAt.UTC().Format(isoMillis)}
}

// itemObjectID parses an item id, which is a MongoDB ObjectId in hex in
// every store so ids look the same whichever backend runs.
func itemObjectID(id string) (bson.ObjectID, error) {
	oid, err := bson.ObjectIDFromHex(id)
	if err != nil {
		return bson.ObjectID{}, errInvalidID
	}
	return oid, nil
}

// taskItems is the item store as tasks see it (tasks.Items).
type taskItems struct {
	store itemStore
	now   func() time.Time
}

func (ti taskItems) ImportBase(ctx context.Context, owner, source string) (time.Time, error) {
	return ti.store.importBase(ctx, owner, source, mongoTime(ti.now()))
}

func (ti taskItems) ImportItems(ctx context.Context, owner string, rows []tasks.Item) (int, error) {
	now := mongoTime(ti.now())
	items := make([]item, len(rows))
	for i, r := range rows {
		items[i] = item{ID: r.ID, Name: r.Name, Description: r.Description, Metadata: r.Metadata, Owner: owner, CreatedAt: now, UpdatedAt: now}
	}
	return ti.store.importItems(ctx, items)
}
