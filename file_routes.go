package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"time"
)

// fileRoutes serve the files of the request's API key.
type fileRoutes struct {
	store    fileStore
	maxBytes int64 // FILE_MAX_BYTES
	now      func() time.Time
}

// fileJSON is a file as the API shows it.
type fileJSON struct {
	FileID      string    `json:"file_id"`
	Filename    string    `json:"filename"`
	ContentType string    `json:"content_type"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	URL         string    `json:"url"`
	UploadedAt  time.Time `json:"uploaded_at"`
}

func newFileJSON(f fileInfo) fileJSON {
	return fileJSON{FileID: f.ID, Filename: f.Filename, ContentType: f.ContentType, Size: f.Size, SHA256: f.SHA256,
		URL: fileURL(f.ID), UploadedAt: f.UploadedAt}
}

func fileURL(id string) string { return "/api/files/" + id }

// multipartOverhead is what a multipart body may hold beyond its file:
// boundaries, part headers, small form fields.
const multipartOverhead = 64 << 10

// handleUploadFile is POST /api/files: the file is the multipart/form-data
// field "file", or the whole body with its own Content-Type (a file name
// in ?filename=). It is streamed into the store, its size and SHA-256
// taken on the way, and answered 201.
func handleUploadFile(fr fileRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if r.ContentLength > fr.maxBytes+multipartOverhead {
			return tooLarge(fr.maxBytes)
		}
		rc := http.NewResponseController(w)
		_ = rc.SetReadDeadline(fr.now().Add(fileTransferTimeout))
		body := &requestBody{r: http.MaxBytesReader(w, r.Body, fr.maxBytes+multipartOverhead)}
		part, err := uploadedPart(r, body)
		if err != nil {
			return err
		}
		content := bufio.NewReaderSize(newSizeLimited(part.content, fr.maxBytes), 512)
		head, err := content.Peek(512)
		if err != nil && !errors.Is(err, io.EOF) {
			return uploadError(err, fr.maxBytes)
		}
		if len(head) == 0 {
			return badRequest("empty_file", "file: is empty")
		}
		contentType, err := uploadType(part.contentType, head)
		if err != nil {
			return err
		}
		f := fileInfo{ID: newUUID(), Owner: taskOwner(r.Context()), Filename: cleanFilename(part.filename),
			ContentType: contentType, UploadedAt: mongoTime(fr.now())}
		saved, err := fr.store.saveFile(r.Context(), f, content)
		if err != nil {
			return uploadError(err, fr.maxBytes)
		}
		w.Header().Set("Location", fileURL(saved.ID))
		writeJSON(w, http.StatusCreated, newFileJSON(saved))
		return nil
	}
}

// upload is the file part of an upload request.
type upload struct {
	content     io.Reader
	filename    string
	contentType string // as declared; "" when not
}

// uploadedPart finds the file in r: the multipart field "file", or the
// body itself.
func uploadedPart(r *http.Request, body io.Reader) (upload, error) {
	declared := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(declared)
	switch {
	case declared == "":
		return upload{}, unsupportedUpload("no Content-Type")
	case err != nil:
		return upload{}, unsupportedUpload(fmt.Sprintf("Content-Type %q is not a media type", declared))
	case mt == "application/x-www-form-urlencoded":
		// What curl sends with --data-binary and no -H: not a file.
		return upload{}, unsupportedUpload("Content-Type application/x-www-form-urlencoded")
	case mt != "multipart/form-data":
		return upload{content: body, filename: r.URL.Query().Get("filename"), contentType: declared}, nil
	}
	if params["boundary"] == "" {
		return upload{}, badRequest("malformed_upload", "multipart/form-data without a boundary")
	}
	parts := multipart.NewReader(body, params["boundary"])
	for {
		p, err := parts.NextPart()
		if errors.Is(err, io.EOF) {
			// The closing boundary, or a body cut short inside a
			// part's headers (which the multipart reader cannot tell
			// apart): no file came either way.
			return upload{}, badRequest("missing_file", `multipart body has no "file" field, or ends before it`)
		}
		if err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				return upload{}, err
			}
			return upload{}, badRequest("malformed_upload", "multipart body: %v", err)
		}
		if p.FormName() == "file" {
			// The part's errors are the body's: a part cut short is the
			// client's doing.
			return upload{content: &requestBody{r: p}, filename: p.FileName(), contentType: p.Header.Get("Content-Type")}, nil
		}
	}
}

func unsupportedUpload(what string) error {
	return &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type",
		message: what + `: send the file as multipart/form-data (field "file") or as the body with its own Content-Type`}
}

func tooLarge(max int64) error {
	return &apiError{status: http.StatusRequestEntityTooLarge, code: "file_too_large",
		message: fmt.Sprintf("file: larger than the limit of %d bytes (FILE_MAX_BYTES)", max)}
}

// requestBody marks the errors of reading the request's body, so that an
// upload cut short by its client is told from a store that failed.
type requestBody struct{ r io.Reader }

type bodyReadError struct{ err error }

func (e *bodyReadError) Error() string { return "read request body: " + e.err.Error() }
func (e *bodyReadError) Unwrap() error { return e.err }

func (b *requestBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &bodyReadError{err: err}
	}
	return n, err
}

// uploadError is the answer to an upload that failed while its content
// was read or stored.
func uploadError(err error, max int64) error {
	var tooBig *http.MaxBytesError
	var bodyErr *bodyReadError
	switch {
	case errors.Is(err, errFileTooLarge), errors.As(err, &tooBig):
		return tooLarge(max)
	case errors.As(err, &bodyErr):
		return badRequest("malformed_upload", "the upload could not be read to its end: %v", bodyErr.err)
	default:
		return fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
}

// checkedTypes are the content types tasks read: an upload that declares
// one must have bytes of that type. The value is the type sniffing finds.
var checkedTypes = map[string]string{
	"image/jpeg":      "image/jpeg",
	"image/png":       "image/png",
	"image/gif":       "image/gif",
	"application/pdf": "application/pdf",
	"text/csv":        "text/plain",
}

// uploadType is an upload's content type: what the client declared,
// checked against the first bytes (head) for the types tasks read, or
// what the bytes look like when it declared nothing useful.
func uploadType(declared string, head []byte) (string, error) {
	sniffed := http.DetectContentType(head)
	if declared == "" {
		return sniffed, nil
	}
	mt, params, err := mime.ParseMediaType(declared)
	if err != nil {
		return "", unsupportedUpload(fmt.Sprintf("file Content-Type %q is not a media type", declared))
	}
	if mt == "application/octet-stream" {
		return sniffed, nil
	}
	if want, ok := checkedTypes[mt]; ok {
		if got, _, _ := mime.ParseMediaType(sniffed); got != want {
			return "", &apiError{status: http.StatusUnsupportedMediaType, code: "content_type_mismatch", field: "file",
				message: fmt.Sprintf("file: declared %s, but its bytes are %s", mt, sniffed)}
		}
	}
	return mime.FormatMediaType(mt, params), nil
}

// inlineTypes are shown in a browser rather than downloaded.
var inlineTypes = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "application/pdf": true}

// handleGetFile is GET (and HEAD) /api/files/{id}: the file, with its
// type, length, ETag (its SHA-256) and Range support.
func handleGetFile(fr fileRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		info, content, err := fr.store.openFile(r.Context(), taskOwner(r.Context()), r.PathValue("id"))
		if err != nil {
			return storeReadError(err)
		}
		defer content.Close()
		rc := http.NewResponseController(w)
		_ = rc.SetWriteDeadline(fr.now().Add(fileTransferTimeout))
		h := w.Header()
		h.Set("Content-Type", info.ContentType)
		h.Set("ETag", `"`+info.SHA256+`"`)
		h.Set("Cache-Control", "private, max-age=3600")
		// The bytes are a client's: never run them as a page of errand's.
		h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		disposition := "attachment"
		if mt, _, _ := mime.ParseMediaType(info.ContentType); inlineTypes[mt] {
			disposition = "inline"
		}
		h.Set("Content-Disposition", mime.FormatMediaType(disposition, map[string]string{"filename": info.Filename}))
		http.ServeContent(&rangeErrorWriter{ResponseWriter: w, r: r}, r, "", info.UploadedAt, content)
		return nil
	}
}

// storeReadError keeps errNotFound as it is (404) and makes any other
// store error a 503.
func storeReadError(err error) error {
	if errors.Is(err, errNotFound) {
		return err
	}
	return fmt.Errorf("%w: %w", errStoreUnavailable, err)
}

// rangeErrorWriter turns http.ServeContent's plain-text errors (a range
// that is not satisfiable, a failed precondition) into errand's JSON.
type rangeErrorWriter struct {
	http.ResponseWriter
	r          *http.Request
	suppressed bool
}

func (e *rangeErrorWriter) WriteHeader(code int) {
	if code < 400 {
		e.ResponseWriter.WriteHeader(code)
		return
	}
	e.suppressed = true
	e.Header().Del("Content-Disposition")
	e.Header().Del("ETag")
	err := &apiError{status: code, code: "precondition_failed", message: "the request's preconditions (If-Match, If-Unmodified-Since) do not hold"}
	if code == http.StatusRequestedRangeNotSatisfiable {
		err = &apiError{status: code, code: "range_not_satisfiable", field: "Range", message: "Range: not within the file, or malformed"}
	} else if code >= 500 {
		err = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "the file could not be read; try again"}
	}
	writeError(e.ResponseWriter, e.r, err)
}

func (e *rangeErrorWriter) Write(b []byte) (int, error) {
	if e.suppressed {
		return len(b), nil
	}
	return e.ResponseWriter.Write(b)
}

func (e *rangeErrorWriter) Unwrap() http.ResponseWriter { return e.ResponseWriter }

// fileListJSON is a page of GET /api/files.
type fileListJSON struct {
	Files      []fileJSON `json:"files"`
	NextCursor string     `json:"next_cursor,omitempty"`
}

// handleListFiles is GET /api/files?limit=&cursor=: the key's files,
// newest first.
func handleListFiles(fr fileRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		limit, err := queryInt(r, "limit", defaultPageSize, 1, maxPageSize)
		if err != nil {
			return err
		}
		after, err := queryCursor(r)
		if err != nil {
			return err
		}
		list, err := fr.store.listFiles(r.Context(), taskOwner(r.Context()), after, limit+1)
		if err != nil {
			return fmt.Errorf("%w: %w", errStoreUnavailable, err)
		}
		out := fileListJSON{Files: make([]fileJSON, 0, min(limit, len(list)))}
		for _, f := range list[:min(limit, len(list))] {
			out.Files = append(out.Files, newFileJSON(f))
		}
		if len(list) > limit {
			out.NextCursor = encodeCursor(list[limit-1].key())
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
}

// handleDeleteFile is DELETE /api/files/{id}.
func handleDeleteFile(fr fileRoutes) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if err := fr.store.deleteFile(r.Context(), taskOwner(r.Context()), r.PathValue("id")); err != nil {
			return storeReadError(err)
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}
