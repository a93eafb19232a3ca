package tasks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync"
	"testing"
)

// memFiles is a Files of the tests: the main package's own stores are
// tested against it by their contract tests, and the tasks here against
// this.
type memFiles struct {
	mu    sync.Mutex
	files map[string]memFile
	next  int
}

type memFile struct {
	File
	owner string
	data  []byte
}

func newMemFiles() *memFiles { return &memFiles{files: map[string]memFile{}} }

func (m *memFiles) Open(_ context.Context, owner, id string) (File, io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[id]
	if !ok || (owner != "" && f.owner != owner) {
		return File{}, nil, fmt.Errorf("file %s: %w", id, ErrFileNotFound)
	}
	return f.File, io.NopCloser(bytes.NewReader(f.data)), nil
}

func (m *memFiles) Save(_ context.Context, owner, filename, contentType string, content io.Reader) (File, error) {
	data, err := io.ReadAll(content)
	if err != nil {
		return File{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.next++
	sum := sha256.Sum256(data)
	f := File{ID: fmt.Sprintf("f%d", m.next), Filename: filename, ContentType: contentType, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}
	m.files[f.ID] = memFile{File: f, owner: owner, data: data}
	return f, nil
}

// add stores data as owner's file and returns its id.
func (m *memFiles) add(t *testing.T, owner, filename, contentType string, data []byte) string {
	t.Helper()
	f, err := m.Save(context.Background(), owner, filename, contentType, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return f.ID
}

func (m *memFiles) data(t *testing.T, id string) []byte {
	t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.files[id]
	if !ok {
		t.Fatalf("no file %s", id)
	}
	return f.data
}
