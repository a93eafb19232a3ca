package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errand/tasks"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// fileInfo describes a stored file. Files do not change once stored: they
// are uploaded (or made by a task), read, and deleted.
type fileInfo struct {
	ID          string
	Owner       string
	Filename    string
	ContentType string
	Size        int64
	SHA256      string // hex
	UploadedAt  time.Time
}

func (f fileInfo) key() pageKey { return pageKey{created: f.UploadedAt, id: f.ID} }

// fileContent is a stored file's bytes, read from the start or from an
// offset (a Range request) without holding the file in memory.
type fileContent interface {
	io.ReadSeekCloser
}

// fileStore keeps files: GridFS on MongoDB, or memory when embedded. As
// with items, an owner sees only its own files; the empty owner (no API
// keys) sees every file.
type fileStore interface {
	// saveFile stores f's content, read to its end, and returns f with
	// its Size and SHA256. f carries ID, Owner, Filename, ContentType and
	// UploadedAt. When reading content fails (a size limit, a client that
	// went away), nothing of the file stays and the error wraps content's.
	saveFile(ctx context.Context, f fileInfo, content io.Reader) (fileInfo, error)
	// statFile is a file's description; errNotFound when there is no such
	// file of owner.
	statFile(ctx context.Context, owner, id string) (fileInfo, error)
	// openFile is statFile and the file's content, to be closed. The
	// content reads under ctx.
	openFile(ctx context.Context, owner, id string) (fileInfo, fileContent, error)
	// listFiles is a page of owner's files, newest first, after the key
	// (all when after is nil).
	listFiles(ctx context.Context, owner string, after *pageKey, limit int) ([]fileInfo, error)
	deleteFile(ctx context.Context, owner, id string) error
}

// fileTransferTimeout bounds one upload or download, which may be large
// and slow: the server's 30 s read and write timeouts are lifted for
// file transfers, and this applies instead.
const fileTransferTimeout = 15 * time.Minute

// errFileTooLarge: an upload went past FILE_MAX_BYTES.
var errFileTooLarge = errors.New("file too large")

// sizeLimited reads r and fails with errFileTooLarge once more than max
// bytes have come.
type sizeLimited struct {
	r    io.Reader
	left int64
}

func newSizeLimited(r io.Reader, max int64) *sizeLimited { return &sizeLimited{r: r, left: max} }

func (l *sizeLimited) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, errFileTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, errFileTooLarge
	}
	return n, err
}

// digestReader counts and hashes what is read through it: a store learns
// a file's size and SHA-256 as it stores it, in one pass.
type digestReader struct {
	r    io.Reader
	hash hash.Hash
	n    int64
}

func newDigestReader(r io.Reader) *digestReader { return &digestReader{r: r, hash: sha256.New()} }

func (d *digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.hash.Write(p[:n])
	d.n += int64(n)
	return n, err
}

// sum is the size and hex SHA-256 of what was read.
func (d *digestReader) sum() (int64, string) { return d.n, hex.EncodeToString(d.hash.Sum(nil)) }

// cleanFilename keeps a client's file name printable and without a path:
// it is shown back, and sent in Content-Disposition.
func cleanFilename(name string) string {
	name = path.Base(strings.ReplaceAll(name, `\`, "/"))
	name = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) || r == '"' {
			return -1
		}
		return r
	}, name)
	for len(name) > 255 {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	if name == "" || name == "." || name == ".." || name == "/" {
		return "file"
	}
	return name
}

// taskFiles is the file store as tasks see it (tasks.Files).
type taskFiles struct {
	store fileStore
	now   func() time.Time
}

func (tf taskFiles) Open(ctx context.Context, owner, id string) (tasks.File, io.ReadCloser, error) {
	info, content, err := tf.store.openFile(ctx, owner, id)
	if errors.Is(err, errNotFound) {
		return tasks.File{}, nil, fmt.Errorf("%w: %w", tasks.ErrFileNotFound, err)
	}
	if err != nil {
		return tasks.File{}, nil, err
	}
	return info.taskFile(), content, nil
}

func (tf taskFiles) Save(ctx context.Context, owner, filename, contentType string, content io.Reader) (tasks.File, error) {
	info, err := tf.store.saveFile(ctx, fileInfo{
		ID: newUUID(), Owner: owner, Filename: cleanFilename(filename), ContentType: contentType, UploadedAt: mongoTime(tf.now()),
	}, content)
	if err != nil {
		return tasks.File{}, err
	}
	return info.taskFile(), nil
}

func (f fileInfo) taskFile() tasks.File {
	return tasks.File{ID: f.ID, Filename: f.Filename, ContentType: f.ContentType, Size: f.Size, SHA256: f.SHA256}
}
