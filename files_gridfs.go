package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// gridFiles keeps files in MongoDB's GridFS (the fs.files and fs.chunks
// collections, as the GridFS specification lays them out), so the
// driver's GridFS API and any GridFS tool read, list and delete them.
// errand writes and reads the chunks itself, a few at a time: the
// driver's upload stream holds 16 MiB of a file and allocates about five
// times the file's size on the way, and its download stream cannot start
// at an offset (docs/performance.md, "Files"). A file's fs.files document
// is written after its last chunk, so an upload that did not finish is
// not seen.
type gridFiles struct {
	bucket *mongo.GridFSBucket
	files  *mongo.Collection
	chunks *mongo.Collection
}

func newGridFiles(db *mongo.Database) gridFiles {
	bucket := db.GridFSBucket()
	return gridFiles{bucket: bucket, files: bucket.GetFilesCollection(), chunks: bucket.GetChunksCollection()}
}

// gridFileMeta is the metadata errand keeps in a GridFS file document.
type gridFileMeta struct {
	Owner       string `bson:"owner"`
	ContentType string `bson:"content_type"`
	SHA256      string `bson:"sha256,omitempty"`
}

// gridFileDoc is a GridFS fs.files document.
type gridFileDoc struct {
	ID         string       `bson:"_id"`
	Length     int64        `bson:"length"`
	ChunkSize  int32        `bson:"chunkSize"`
	UploadDate time.Time    `bson:"uploadDate"`
	Filename   string       `bson:"filename"`
	Metadata   gridFileMeta `bson:"metadata"`
}

func (d gridFileDoc) info() fileInfo {
	return fileInfo{ID: d.ID, Owner: d.Metadata.Owner, Filename: d.Filename, ContentType: d.Metadata.ContentType,
		Size: d.Length, SHA256: d.Metadata.SHA256, UploadedAt: d.UploadDate.UTC()}
}

// uploadFinished matches the files errand stored (other GridFS tools
// write no SHA-256).
var uploadFinished = bson.E{Key: "metadata.sha256", Value: bson.D{{Key: "$exists", Value: true}}}

// ensureIndexes makes the indexes GridFS requires (one chunk per file and
// number; files by name and date) and the listing's.
func (g gridFiles) ensureIndexes(ctx context.Context) error {
	_, err := g.chunks.Indexes().CreateOne(ctx, mongo.IndexModel{
		Keys: bson.D{{Key: "files_id", Value: 1}, {Key: "n", Value: 1}}, Options: options.Index().SetUnique(true),
	})
	if err != nil {
		return fmt.Errorf("mongodb: create fs.chunks index: %w", err)
	}
	_, err = g.files.Indexes().CreateMany(ctx, []mongo.IndexModel{
		{Keys: bson.D{{Key: "filename", Value: 1}, {Key: "uploadDate", Value: 1}}},
		{Keys: bson.D{{Key: "metadata.owner", Value: 1}, {Key: "uploadDate", Value: -1}, {Key: "_id", Value: -1}}},
	})
	if err != nil {
		return fmt.Errorf("mongodb: create fs.files indexes: %w", err)
	}
	return nil
}

func (g gridFiles) saveFile(ctx context.Context, f fileInfo, content io.Reader) (fileInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, fileTransferTimeout)
	defer cancel()
	d := newDigestReader(content)
	if err := g.writeChunks(ctx, f.ID, d); err != nil {
		g.removeChunks(ctx, f.ID)
		return fileInfo{}, fmt.Errorf("upload file %s: %w", f.ID, err)
	}
	f.Size, f.SHA256 = d.sum()
	doc := gridFileDoc{ID: f.ID, Length: f.Size, ChunkSize: gridChunkSize, UploadDate: f.UploadedAt, Filename: f.Filename,
		Metadata: gridFileMeta{Owner: f.Owner, ContentType: f.ContentType, SHA256: f.SHA256}}
	if _, err := g.files.InsertOne(ctx, doc); err != nil {
		g.removeChunks(ctx, f.ID)
		return fileInfo{}, fmt.Errorf("mongodb: record file %s: %w", f.ID, err)
	}
	return f, nil
}

// gridChunkSize is the size of a GridFS chunk: the driver's default.
const gridChunkSize = 255 << 10

// writeChunks reads content to its end into chunks of file id,
// gridChunkBatch chunks an insert.
func (g gridFiles) writeChunks(ctx context.Context, id string, content io.Reader) error {
	bufs := make([][]byte, gridChunkBatch)
	for i := range bufs {
		bufs[i] = make([]byte, gridChunkSize)
	}
	var n int32
	batch := make([]any, 0, gridChunkBatch)
	for end := false; !end; {
		batch = batch[:0]
		for !end && len(batch) < gridChunkBatch {
			m, err := fillChunk(content, bufs[len(batch)])
			if err != nil {
				return err
			}
			end = m < gridChunkSize
			if m > 0 {
				batch = append(batch, gridChunkDoc{ID: bson.NewObjectID(), FilesID: id, N: n, Data: bufs[len(batch)][:m]})
				n++
			}
		}
		if len(batch) > 0 {
			if _, err := g.chunks.InsertMany(ctx, batch); err != nil {
				return fmt.Errorf("mongodb: write chunks of file %s: %w", id, err)
			}
		}
	}
	return nil
}

// fillChunk reads from r until buf is full or r ends. Unlike io.ReadFull,
// it returns every error of r's but its end, io.EOF, as it is (a client
// cut short is an io.ErrUnexpectedEOF that must not pass for an end).
func fillChunk(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err == io.EOF { //nolint:errorlint // io.Reader's end is io.EOF itself
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// gridChunkDoc is a GridFS fs.chunks document.
type gridChunkDoc struct {
	ID      bson.ObjectID `bson:"_id"`
	FilesID string        `bson:"files_id"`
	N       int32         `bson:"n"`
	Data    []byte        `bson:"data"`
}

// removeChunks deletes what an upload that failed wrote.
func (g gridFiles) removeChunks(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), mongoOpTimeout)
	defer cancel()
	_, _ = g.chunks.DeleteMany(ctx, bson.D{{Key: "files_id", Value: id}}) // a leftover takes room, nothing else
}

// findFile is the fs.files document of owner's file id.
func (g gridFiles) findFile(ctx context.Context, owner, id string) (gridFileDoc, error) {
	var doc gridFileDoc
	err := g.files.FindOne(ctx, bson.D{{Key: "_id", Value: id}, uploadFinished}).Decode(&doc)
	if errors.Is(err, mongo.ErrNoDocuments) || err == nil && !ownedBy(doc.Metadata.Owner, owner) {
		return gridFileDoc{}, fmt.Errorf("file %s: %w", id, errNotFound)
	}
	if err != nil {
		return gridFileDoc{}, fmt.Errorf("mongodb: read file %s: %w", id, err)
	}
	return doc, nil
}

func (g gridFiles) statFile(ctx context.Context, owner, id string) (fileInfo, error) {
	doc, err := g.findFile(ctx, owner, id)
	return doc.info(), err
}

func (g gridFiles) openFile(ctx context.Context, owner, id string) (fileInfo, fileContent, error) {
	doc, err := g.findFile(ctx, owner, id)
	if err != nil {
		return fileInfo{}, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, fileTransferTimeout)
	return doc.info(), &gridFileReader{ctx: ctx, cancel: cancel, chunks: g.chunks, id: id, size: doc.Length, chunkSize: int64(doc.ChunkSize)}, nil
}

// gridChunkBatch is how many chunks an upload writes, or a download
// fetches, at a time.
const gridChunkBatch = 4

// gridFileReader reads a GridFS file's chunks from any offset. It reads
// fs.chunks itself rather than through the driver's download stream,
// which starts at the first chunk whatever the offset (a Range request
// for a file's end would fetch all of it) and lets the server size its
// batches (MongoDB sends up to 16 MiB at a time; FerretDB sends the rest
// of the file in one reply, which the driver refuses past 48 MB).
type gridFileReader struct {
	ctx       context.Context
	cancel    context.CancelFunc
	chunks    *mongo.Collection
	id        string
	size      int64
	chunkSize int64
	pos       int64

	cursor *mongo.Cursor // nil until the first read after a seek
	next   int64         // the chunk the cursor gives next
	rest   []byte        // what is left of the chunk read last
}

// gridChunk is a GridFS fs.chunks document, without its _id.
type gridChunk struct {
	N    int64  `bson:"n"`
	Data []byte `bson:"data"`
}

func (r *gridFileReader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if len(r.rest) == 0 {
		if err := r.readChunk(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.rest)
	r.rest = r.rest[n:]
	r.pos += int64(n)
	return n, nil
}

// readChunk reads the chunk that holds r.pos into r.rest, from its
// offset on.
func (r *gridFileReader) readChunk() error {
	first := r.pos / r.chunkSize
	if r.cursor == nil {
		cur, err := r.chunks.Find(r.ctx, bson.D{{Key: "files_id", Value: r.id}, {Key: "n", Value: bson.D{{Key: "$gte", Value: first}}}},
			options.Find().SetSort(bson.D{{Key: "n", Value: 1}}).SetBatchSize(gridChunkBatch).
				SetProjection(bson.D{{Key: "_id", Value: 0}, {Key: "n", Value: 1}, {Key: "data", Value: 1}}))
		if err != nil {
			return fmt.Errorf("mongodb: read chunks of file %s: %w", r.id, err)
		}
		r.cursor, r.next = cur, first
	}
	if !r.cursor.Next(r.ctx) {
		if err := r.cursor.Err(); err != nil {
			return fmt.Errorf("mongodb: read chunk %d of file %s: %w", r.next, r.id, err)
		}
		return fmt.Errorf("file %s: chunk %d is missing: %w", r.id, r.next, io.ErrUnexpectedEOF)
	}
	var c gridChunk
	if err := r.cursor.Decode(&c); err != nil {
		return fmt.Errorf("mongodb: decode chunk %d of file %s: %w", r.next, r.id, err)
	}
	if c.N != r.next || c.N != first {
		return fmt.Errorf("file %s: chunk %d where chunk %d belongs: %w", r.id, c.N, r.next, io.ErrUnexpectedEOF)
	}
	r.next++
	offset := r.pos - first*r.chunkSize
	if offset >= int64(len(c.Data)) {
		return fmt.Errorf("file %s: chunk %d is short: %w", r.id, c.N, io.ErrUnexpectedEOF)
	}
	r.rest = c.Data[offset:]
	return nil
}

func (r *gridFileReader) Seek(offset int64, whence int) (int64, error) {
	var pos int64
	switch whence {
	case io.SeekStart:
		pos = offset
	case io.SeekCurrent:
		pos = r.pos + offset
	case io.SeekEnd:
		pos = r.size + offset
	default:
		return 0, fmt.Errorf("seek in file %s: whence %d", r.id, whence)
	}
	if pos < 0 {
		return 0, fmt.Errorf("seek in file %s: to %d, before its start", r.id, pos)
	}
	if pos != r.pos {
		r.closeCursor()
		r.rest = nil
	}
	r.pos = pos
	return pos, nil
}

func (r *gridFileReader) closeCursor() {
	if r.cursor != nil {
		_ = r.cursor.Close(context.WithoutCancel(r.ctx))
		r.cursor = nil
	}
}

func (r *gridFileReader) Close() error {
	r.closeCursor()
	r.cancel()
	return nil
}

func (g gridFiles) listFiles(ctx context.Context, owner string, after *pageKey, limit int) ([]fileInfo, error) {
	filter := bson.D{uploadFinished}
	if owner != "" {
		filter = append(filter, bson.E{Key: "metadata.owner", Value: owner})
	}
	if after != nil {
		filter = append(filter, bson.E{Key: "$or", Value: bson.A{
			bson.D{{Key: "uploadDate", Value: bson.D{{Key: "$lt", Value: after.created}}}},
			bson.D{{Key: "uploadDate", Value: after.created}, {Key: "_id", Value: bson.D{{Key: "$lt", Value: after.id}}}},
		}})
	}
	cur, err := g.bucket.Find(ctx, filter, options.GridFSFind().
		SetSort(bson.D{{Key: "uploadDate", Value: -1}, {Key: "_id", Value: -1}}).SetLimit(int32(limit)))
	if err != nil {
		return nil, fmt.Errorf("mongodb: list files: %w", err)
	}
	var docs []gridFileDoc
	if err := cur.All(ctx, &docs); err != nil {
		return nil, fmt.Errorf("mongodb: read listed files: %w", err)
	}
	list := make([]fileInfo, len(docs))
	for i, d := range docs {
		list[i] = d.info()
	}
	return list, nil
}

func (g gridFiles) deleteFile(ctx context.Context, owner, id string) error {
	if _, err := g.statFile(ctx, owner, id); err != nil {
		return err
	}
	err := g.bucket.Delete(ctx, id)
	if errors.Is(err, mongo.ErrFileNotFound) {
		return fmt.Errorf("file %s: %w", id, errNotFound)
	}
	if err != nil {
		return fmt.Errorf("mongodb: delete file %s: %w", id, err)
	}
	return nil
}
