package tasks

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// File is a stored file as tasks see it.
type File struct {
	ID          string
	Filename    string
	ContentType string
	Size        int64
	SHA256      string // hex
}

// URL is where the API serves the file.
func (f File) URL() string { return "/api/files/" + f.ID }

// Files is where tasks read their input files and keep their outputs:
// errand's file store, the one behind /api/files.
type Files interface {
	// Open returns the owner's file id with its content, to be closed;
	// an error wrapping ErrFileNotFound when the owner has no such file.
	Open(ctx context.Context, owner, id string) (File, io.ReadCloser, error)
	// Save stores content, read to its end, as a new file of the owner.
	Save(ctx context.Context, owner, filename, contentType string, content io.Reader) (File, error)
}

// ErrFileNotFound: a task names a file its owner does not have. It is
// permanent: the file will not appear by trying again.
var ErrFileNotFound = errors.New("file not found")

// errNoFileStore is what a file task says when its process was built
// without a file store, which only a test or an embedding program does.
var errNoFileStore = errors.New("this process has no file store")

// input is a task's input file, from the store or fetched from a URL.
type input struct {
	name        string
	contentType string
	size        int64 // -1 when not known before reading
	body        io.ReadCloser
}

// openInput opens the file fileID of the task's owner, or fetches url
// when fileID is empty (Validate of each task's arguments has made sure
// exactly one is given). A missing file and a refused URL are permanent
// failures; a fetch that timed out or met a server error is retried.
func openInput(ctx context.Context, cfg Config, task Task, fileID, url string) (input, error) {
	if fileID != "" {
		f, body, err := openStored(ctx, cfg, task, fileID)
		if err != nil {
			return input{}, err
		}
		return input{name: f.Filename, contentType: f.ContentType, size: f.Size, body: body}, nil
	}
	return cfg.Fetcher.fetch(ctx, url)
}

// openStored opens the task owner's file id; a file that is not there
// is a permanent failure.
func openStored(ctx context.Context, cfg Config, task Task, id string) (File, io.ReadCloser, error) {
	if cfg.Files == nil {
		return File{}, nil, Permanent(errNoFileStore)
	}
	f, body, err := cfg.Files.Open(ctx, task.Owner, id)
	if errors.Is(err, ErrFileNotFound) {
		return File{}, nil, Permanent(fmt.Errorf("file %s: %w", id, ErrFileNotFound))
	}
	if err != nil {
		return File{}, nil, fmt.Errorf("open file %s: %w", id, err)
	}
	return f, body, nil
}

// saveOutput stores a task's output file.
func saveOutput(ctx context.Context, cfg Config, task Task, filename, contentType string, content io.Reader) (File, error) {
	if cfg.Files == nil {
		return File{}, Permanent(errNoFileStore)
	}
	f, err := cfg.Files.Save(ctx, task.Owner, filename, contentType, content)
	if err != nil {
		return File{}, fmt.Errorf("store %s: %w", filename, err)
	}
	return f, nil
}
