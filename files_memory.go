package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"slices"
	"sync"
)

// memoryFiles keeps files in this process, for the embedded mode: they
// are held whole in memory and vanish when the process stops.
type memoryFiles struct {
	mu    sync.Mutex
	files map[string]memoryFile
}

type memoryFile struct {
	info fileInfo
	data []byte
}

func newMemoryFiles() *memoryFiles { return &memoryFiles{files: map[string]memoryFile{}} }

func (m *memoryFiles) saveFile(_ context.Context, f fileInfo, content io.Reader) (fileInfo, error) {
	d := newDigestReader(content)
	data, err := io.ReadAll(d)
	if err != nil {
		return fileInfo{}, fmt.Errorf("read file %s: %w", f.ID, err)
	}
	f.Size, f.SHA256 = d.sum()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[f.ID] = memoryFile{info: f, data: data}
	return f, nil
}

func (m *memoryFiles) get(owner, id string) (memoryFile, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	file, ok := m.files[id]
	if !ok || !ownedBy(file.info.Owner, owner) {
		return memoryFile{}, fmt.Errorf("file %s: %w", id, errNotFound)
	}
	return file, nil
}

func (m *memoryFiles) statFile(_ context.Context, owner, id string) (fileInfo, error) {
	file, err := m.get(owner, id)
	return file.info, err
}

func (m *memoryFiles) openFile(_ context.Context, owner, id string) (fileInfo, fileContent, error) {
	file, err := m.get(owner, id)
	if err != nil {
		return fileInfo{}, nil, err
	}
	return file.info, nopSeekCloser{bytes.NewReader(file.data)}, nil
}

type nopSeekCloser struct{ io.ReadSeeker }

func (nopSeekCloser) Close() error { return nil }

func (m *memoryFiles) listFiles(_ context.Context, owner string, after *pageKey, limit int) ([]fileInfo, error) {
	m.mu.Lock()
	var list []fileInfo
	for _, file := range m.files {
		if ownedBy(file.info.Owner, owner) && (after == nil || file.info.key().before(*after)) {
			list = append(list, file.info)
		}
	}
	m.mu.Unlock()
	slices.SortFunc(list, func(a, b fileInfo) int { return newestFirst(a.key(), b.key()) })
	return list[:min(limit, len(list))], nil
}

func (m *memoryFiles) deleteFile(_ context.Context, owner, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	file, ok := m.files[id]
	if !ok || !ownedBy(file.info.Owner, owner) {
		return fmt.Errorf("file %s: %w", id, errNotFound)
	}
	delete(m.files, id)
	return nil
}
