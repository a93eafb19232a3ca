package main

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Listings (tasks, files) page newest first with keyset cursors: a page
// starts after the last entry of the previous one, so entries added while
// a client pages do not shift its pages.

// pageKey orders the entries of a listing, newest first: by creation time
// in milliseconds (what the stores keep), then by id.
type pageKey struct {
	created time.Time
	id      string
}

// before reports whether k comes after other in the listing (is older).
func (k pageKey) before(other pageKey) bool {
	if c := k.created.Compare(other.created); c != 0 {
		return c < 0
	}
	return k.id < other.id
}

// newestFirst orders keys as a listing shows them, for slices.SortFunc.
func newestFirst(a, b pageKey) int {
	switch {
	case b.before(a):
		return -1
	case a.before(b):
		return 1
	}
	return 0
}

// encodeCursor makes the opaque cursor of the page after k.
func encodeCursor(k pageKey) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(k.created.UnixMilli(), 10) + "." + k.id))
}

func decodeCursor(s string) (pageKey, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return pageKey{}, err
	}
	ms, id, ok := strings.Cut(string(raw), ".")
	if !ok || !taskIDPattern.MatchString(id) {
		return pageKey{}, errors.New("malformed cursor")
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return pageKey{}, err
	}
	return pageKey{created: time.UnixMilli(n).UTC(), id: id}, nil
}

// queryCursor reads the request's cursor parameter: nil for the first page.
func queryCursor(r *http.Request) (*pageKey, error) {
	v := r.URL.Query().Get("cursor")
	if v == "" {
		return nil, nil
	}
	after, err := decodeCursor(v)
	if err != nil {
		return nil, invalidField("cursor", "is not a cursor this listing gave")
	}
	return &after, nil
}
