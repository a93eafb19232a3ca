package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.mongodb.org/mongo-driver/v2/bson"
)

func TestFileStoreContract(t *testing.T) {
	t.Run("memory", func(t *testing.T) { fileStoreContract(t, newMemoryFiles()) })
	t.Run("mongodb", func(t *testing.T) {
		db := connectTestMongo(t).items.Database()
		files := newGridFiles(db)
		if err := files.ensureIndexes(context.Background()); err != nil {
			t.Fatal(err)
		}
		failed := fileStoreContract(t, files)
		// The driver's own GridFS download reads what errand stored.
		data := testFileBytes(600_000, 9)
		f, err := files.saveFile(context.Background(), fileInfo{ID: newUUID(), Filename: "x", ContentType: "a/b", UploadedAt: mongoTime(time.Now())}, bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		var read bytes.Buffer
		if _, err := files.bucket.DownloadToStream(context.Background(), f.ID, &read); err != nil || !bytes.Equal(read.Bytes(), data) {
			t.Errorf("the driver's GridFS download of errand's file: %d bytes, %v; want the %d stored", read.Len(), err, len(data))
		}
		// A failed upload leaves no chunks behind either.
		n, err := db.Collection("fs.chunks").CountDocuments(context.Background(), bson.D{{Key: "files_id", Value: failed}})
		if err != nil || n != 0 {
			t.Errorf("chunks of the failed upload: %d, %v; want none", n, err)
		}
	})
}

// testFileBytes are n pseudo-random bytes: several GridFS chunks (255 KiB
// each) for the sizes the tests use.
func testFileBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fileStoreContract checks s and returns the id of an upload that failed.
func fileStoreContract(t *testing.T, s fileStore) (failedID string) {
	ctx := context.Background()
	owner := "files-" + newRandomID(4)
	t0 := mongoTime(time.Now())
	data := testFileBytes(3*255<<10+1000, 1)
	sum := sha256.Sum256(data)
	f := fileInfo{ID: newUUID(), Owner: owner, Filename: "data.bin", ContentType: "application/octet-stream", UploadedAt: t0}
	saved, err := s.saveFile(ctx, f, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	want := f
	want.Size, want.SHA256 = int64(len(data)), hex.EncodeToString(sum[:])
	if diff := cmp.Diff(want, saved); diff != "" {
		t.Errorf("saved file (-want +got):\n%s", diff)
	}
	for _, as := range []string{owner, ""} {
		got, err := s.statFile(ctx, as, f.ID)
		if err != nil {
			t.Fatalf("stat as %q: %v", as, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("stat as %q (-want +got):\n%s", as, diff)
		}
	}
	if _, err := s.statFile(ctx, owner+"-x", f.ID); !errors.Is(err, errNotFound) {
		t.Errorf("stat as another owner: %v, want errNotFound", err)
	}
	if _, _, err := s.openFile(ctx, owner+"-x", f.ID); !errors.Is(err, errNotFound) {
		t.Errorf("open as another owner: %v, want errNotFound", err)
	}
	if _, err := s.statFile(ctx, owner, newUUID()); !errors.Is(err, errNotFound) {
		t.Errorf("stat of no file: %v, want errNotFound", err)
	}

	// The content, whole and from offsets, as Range requests read it.
	info, content, err := s.openFile(ctx, owner, f.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(data)) {
		t.Errorf("opened file's size %d, want %d", info.Size, len(data))
	}
	read := func(what string, n int64) []byte {
		t.Helper()
		b, err := io.ReadAll(io.LimitReader(content, n))
		if err != nil {
			t.Fatalf("read %s: %v", what, err)
		}
		return b
	}
	if got := read("all", int64(len(data))+10); !bytes.Equal(got, data) {
		t.Errorf("read %d bytes, want the %d stored", len(got), len(data))
	}
	for _, seek := range []struct {
		offset int64
		whence int
		at, n  int
	}{
		{300_000, io.SeekStart, 300_000, 1000},
		{-10, io.SeekEnd, len(data) - 10, 10},
		{5, io.SeekStart, 5, 5},
		{255 << 10, io.SeekCurrent, 10 + 255<<10, 300_000},
	} {
		pos, err := content.Seek(seek.offset, seek.whence)
		if err != nil || pos != int64(seek.at) {
			t.Fatalf("seek %+v: %d, %v; want %d", seek, pos, err, seek.at)
		}
		if got := read("after a seek", int64(seek.n)); !bytes.Equal(got, data[seek.at:seek.at+seek.n]) {
			t.Errorf("after seek %+v: %d bytes that differ from the stored ones", seek, len(got))
		}
	}
	if err := content.Close(); err != nil {
		t.Errorf("close: %v", err)
	}

	// A save whose content fails midway leaves nothing.
	failedID = newUUID()
	_, err = s.saveFile(ctx, fileInfo{ID: failedID, Owner: owner, Filename: "big", ContentType: "text/plain", UploadedAt: t0},
		io.MultiReader(bytes.NewReader(data[:600_000]), failingReader{errFileTooLarge}))
	if !errors.Is(err, errFileTooLarge) {
		t.Errorf("save of content that fails: %v, want the content's error", err)
	}
	if _, err := s.statFile(ctx, "", failedID); !errors.Is(err, errNotFound) {
		t.Errorf("stat of the failed save: %v, want errNotFound", err)
	}

	// Listing: newest first, ties by id, one owner's only, in pages.
	var ids []string
	for i, at := range []time.Duration{time.Millisecond, 2 * time.Millisecond, 2 * time.Millisecond} {
		g := fileInfo{ID: newUUID(), Owner: owner, Filename: "f", ContentType: "text/plain", UploadedAt: t0.Add(at)}
		if _, err := s.saveFile(ctx, g, bytes.NewReader(testFileBytes(100, uint64(i)))); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, g.ID)
	}
	if _, err := s.saveFile(ctx, fileInfo{ID: newUUID(), Owner: owner + "-x", Filename: "f", ContentType: "text/plain", UploadedAt: t0.Add(time.Hour)},
		bytes.NewReader(data[:10])); err != nil {
		t.Fatal(err)
	}
	newest := []string{max(ids[1], ids[2]), min(ids[1], ids[2]), ids[0], f.ID}
	var listed []string
	var after *pageKey
	for range 3 {
		page, err := s.listFiles(ctx, owner, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range page {
			listed = append(listed, g.ID)
		}
		if len(page) < 2 {
			break
		}
		k := page[len(page)-1].key()
		after = &k
	}
	if diff := cmp.Diff(newest, listed); diff != "" {
		t.Errorf("listing in pages of 2 (-want +got):\n%s", diff)
	}

	if err := s.deleteFile(ctx, owner+"-x", f.ID); !errors.Is(err, errNotFound) {
		t.Errorf("delete as another owner: %v, want errNotFound", err)
	}
	if err := s.deleteFile(ctx, owner, f.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.statFile(ctx, owner, f.ID); !errors.Is(err, errNotFound) {
		t.Errorf("stat after delete: %v, want errNotFound", err)
	}
	if err := s.deleteFile(ctx, owner, f.ID); !errors.Is(err, errNotFound) {
		t.Errorf("second delete: %v, want errNotFound", err)
	}
	return failedID
}

// failingReader fails every read with err.
type failingReader struct{ err error }

func (r failingReader) Read([]byte) (int, error) { return 0, r.err }

func TestSizeLimited(t *testing.T) {
	for _, tc := range []struct {
		size, max int
		tooLarge  bool
	}{{10, 10, false}, {11, 10, true}, {0, 10, false}, {1 << 20, 1000, true}} {
		got, err := io.ReadAll(newSizeLimited(bytes.NewReader(make([]byte, tc.size)), int64(tc.max)))
		if errors.Is(err, errFileTooLarge) != tc.tooLarge {
			t.Errorf("%d bytes under a limit of %d: %v", tc.size, tc.max, err)
		}
		if !tc.tooLarge && len(got) != tc.size {
			t.Errorf("%d bytes under a limit of %d: read %d", tc.size, tc.max, len(got))
		}
	}
}

func TestCleanFilename(t *testing.T) {
	for in, want := range map[string]string{
		"photo.png":              "photo.png",
		"../../etc/passwd":       "passwd",
		`C:\Users\me\report.pdf`: "report.pdf",
		"a\x00b\nc\"d.txt":       "abcd.txt",
		"":                       "file",
		"..":                     "file",
		"dir/":                   "dir",
	} {
		if got := cleanFilename(in); got != want {
			t.Errorf("cleanFilename(%q) = %q, want %q", in, got, want)
		}
	}
}
