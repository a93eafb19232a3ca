package main

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// testPNG is a small PNG image.
func testPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		for y := range h {
			img.Set(x, y, color.RGBA{R: uint8(x), G: uint8(y), B: 128, A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// multipartUpload is a multipart/form-data body with data as its field
// "file" (or field), and the Content-Type header to send it with.
func multipartUpload(t testing.TB, field, filename, contentType string, data []byte) (string, map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("note", "a form field before the file"); err != nil {
		t.Fatal(err)
	}
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, field, filename))
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	pw, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	pw.Write(data)
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.String(), map[string]string{"Content-Type": mw.FormDataContentType()}
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestFilesUploadDownloadListDelete(t *testing.T) {
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			base := startErrand(t, env(t))
			pic := testPNG(t, 40, 30)
			csv := []byte("name,description,color\nlamp,a desk lamp,red\nchair,,blue\n")

			upload := func(body string, headers map[string]string, query string) fileJSON {
				t.Helper()
				var f fileJSON
				resp := apiCall(t, "POST", base+"/api/files"+query, body, headers, &f)
				if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != f.URL {
					t.Fatalf("upload: %d %s (Location %q), want 201 with the file's url", resp.StatusCode, resp.body, resp.Header.Get("Location"))
				}
				return f
			}
			body, h := multipartUpload(t, "file", "pixels.png", "image/png", pic)
			first := upload(body, h, "")
			if first.Filename != "pixels.png" || first.ContentType != "image/png" || first.Size != int64(len(pic)) ||
				first.SHA256 != sha256Hex(pic) || first.URL != "/api/files/"+first.FileID || first.UploadedAt.IsZero() {
				t.Errorf("multipart upload answered %+v", first)
			}
			rows := upload(string(csv), map[string]string{"Content-Type": "text/csv"}, "?filename=rows.csv")
			if rows.Filename != "rows.csv" || rows.ContentType != "text/csv" || rows.Size != int64(len(csv)) {
				t.Errorf("raw upload answered %+v", rows)
			}
			// Declared as octet-stream: the type is what the bytes are.
			sniffed := upload(string(pic), map[string]string{"Content-Type": "application/octet-stream"}, "")
			if sniffed.ContentType != "image/png" || sniffed.Filename != "file" {
				t.Errorf("octet-stream upload of a PNG answered %+v, want image/png named file", sniffed)
			}

			// Download: whole, a range, revalidation, HEAD.
			resp := apiCall(t, "GET", base+first.URL, "", nil, nil)
			if resp.StatusCode != http.StatusOK || resp.body != string(pic) || resp.Header.Get("Content-Type") != "image/png" ||
				resp.Header.Get("Content-Length") != strconv.Itoa(len(pic)) || resp.Header.Get("ETag") != `"`+first.SHA256+`"` ||
				resp.Header.Get("Content-Disposition") != `inline; filename=pixels.png` || resp.Header.Get("Accept-Ranges") != "bytes" {
				t.Errorf("download: %d %v, %d bytes", resp.StatusCode, resp.Header, len(resp.body))
			}
			if got := apiCall(t, "GET", base+rows.URL, "", nil, nil); got.body != string(csv) || got.Header.Get("Content-Disposition") != "attachment; filename=rows.csv" {
				t.Errorf("download of the CSV: %q %v", got.body, got.Header)
			}
			resp = apiCall(t, "GET", base+first.URL, "", map[string]string{"Range": "bytes=10-19"}, nil)
			if resp.StatusCode != http.StatusPartialContent || resp.body != string(pic[10:20]) ||
				resp.Header.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(pic)) {
				t.Errorf("range 10-19: %d %q %v", resp.StatusCode, resp.body, resp.Header)
			}
			if resp := apiCall(t, "GET", base+first.URL, "", map[string]string{"If-None-Match": `"` + first.SHA256 + `"`}, nil); resp.StatusCode != http.StatusNotModified {
				t.Errorf("If-None-Match with the ETag: %d, want 304", resp.StatusCode)
			}
			if resp := apiCall(t, "HEAD", base+first.URL, "", nil, nil); resp.StatusCode != http.StatusOK || resp.body != "" ||
				resp.Header.Get("Content-Length") != strconv.Itoa(len(pic)) {
				t.Errorf("HEAD: %d %q %v", resp.StatusCode, resp.body, resp.Header)
			}
			resp = apiCall(t, "GET", base+first.URL, "", map[string]string{"Range": "bytes=999999-"}, nil)
			checkJSONError(t, resp, http.StatusRequestedRangeNotSatisfiable, "range_not_satisfiable")

			// Listing, newest first, in pages.
			var ids []string
			query := "?limit=2"
			for range 3 {
				var page fileListJSON
				if resp := apiCall(t, "GET", base+"/api/files"+query, "", nil, &page); resp.StatusCode != http.StatusOK {
					t.Fatalf("list: %d %s", resp.StatusCode, resp.body)
				}
				for _, f := range page.Files {
					ids = append(ids, f.FileID)
				}
				if page.NextCursor == "" {
					break
				}
				query = "?limit=2&cursor=" + page.NextCursor
			}
			// Newest first; uploads in one millisecond by id, descending.
			want := []fileJSON{sniffed, rows, first}
			slices.SortStableFunc(want, func(a, b fileJSON) int {
				return cmp.Or(b.UploadedAt.Compare(a.UploadedAt), strings.Compare(b.FileID, a.FileID))
			})
			if want := []string{want[0].FileID, want[1].FileID, want[2].FileID}; strings.Join(ids, " ") != strings.Join(want, " ") {
				t.Errorf("listed %v, want %v", ids, want)
			}
			checkJSONError(t, apiCall(t, "GET", base+"/api/files?cursor=nope", "", nil, nil), http.StatusUnprocessableEntity, "validation_error")

			if resp := apiCall(t, "DELETE", base+first.URL, "", nil, nil); resp.StatusCode != http.StatusNoContent {
				t.Errorf("delete: %d %s", resp.StatusCode, resp.body)
			}
			checkJSONError(t, apiCall(t, "GET", base+first.URL, "", nil, nil), http.StatusNotFound, "not_found")
			checkJSONError(t, apiCall(t, "DELETE", base+first.URL, "", nil, nil), http.StatusNotFound, "not_found")
		})
	}
}

// checkJSONError fails unless resp is errand's JSON error with status
// and code.
func checkJSONError(t *testing.T, resp apiAnswer, status int, code string) {
	t.Helper()
	if resp.StatusCode != status || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") ||
		!strings.Contains(resp.body, `"error":"`+code+`"`) {
		t.Errorf("%s %s: %d %s %q, want %d JSON error %s", resp.Request.Method, resp.Request.URL.Path,
			resp.StatusCode, resp.Header.Get("Content-Type"), resp.body, status, code)
	}
}

func TestFilesRefuseBadUploads(t *testing.T) {
	const limit = 1 << 20
	for name, env := range backendModes {
		t.Run(name, func(t *testing.T) {
			e := env(t)
			e["FILE_MAX_BYTES"] = strconv.Itoa(limit)
			base := startErrand(t, e)
			pic := testPNG(t, 8, 8)
			noFile, noFileHeaders := multipartUpload(t, "attachment", "x.png", "image/png", pic)
			jpegClaim, jpegHeaders := multipartUpload(t, "file", "x.jpg", "image/jpeg", pic)
			big, bigHeaders := multipartUpload(t, "file", "big.bin", "", testFileBytes(limit+1, 7))
			for _, tc := range []struct {
				name    string
				body    string
				headers map[string]string
				status  int
				code    string
			}{
				{"a multipart body without a file field", noFile, noFileHeaders, http.StatusBadRequest, "missing_file"},
				{"no content type", string(pic), map[string]string{"Content-Type": ""}, http.StatusUnsupportedMediaType, "unsupported_media_type"},
				{"a form, as curl --data-binary sends", string(pic), map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType, "unsupported_media_type"},
				{"text declared a PNG", "just text", map[string]string{"Content-Type": "image/png"}, http.StatusUnsupportedMediaType, "content_type_mismatch"},
				{"a PNG declared a JPEG", jpegClaim, jpegHeaders, http.StatusUnsupportedMediaType, "content_type_mismatch"},
				{"a PNG declared CSV", string(pic), map[string]string{"Content-Type": "text/csv"}, http.StatusUnsupportedMediaType, "content_type_mismatch"},
				{"an empty file", "", map[string]string{"Content-Type": "text/plain"}, http.StatusBadRequest, "empty_file"},
				{"a multipart body without its boundary", noFile, map[string]string{"Content-Type": "multipart/form-data"}, http.StatusBadRequest, "malformed_upload"},
				{"a multipart body cut short before its file", big[:200], bigHeaders, http.StatusBadRequest, "missing_file"},
				{"a file cut short", big[:len(big)/2], bigHeaders, http.StatusBadRequest, "malformed_upload"},
				{"a file over the limit", big, bigHeaders, http.StatusRequestEntityTooLarge, "file_too_large"},
				{"a body declared over the limit", string(testFileBytes(limit+100<<10, 8)), map[string]string{"Content-Type": "application/octet-stream"}, http.StatusRequestEntityTooLarge, "file_too_large"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					checkJSONError(t, apiCall(t, "POST", base+"/api/files", tc.body, tc.headers, nil), tc.status, tc.code)
				})
			}
			// Over the limit without a declared length (chunked): read
			// up to the limit, then refused, and nothing stays.
			req, err := http.NewRequest("POST", base+"/api/files", io.MultiReader(strings.NewReader(big)))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", bigHeaders["Content-Type"])
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(raw), "file_too_large") {
				t.Errorf("chunked upload over the limit: %d %s", resp.StatusCode, raw)
			}
			var list fileListJSON
			apiCall(t, "GET", base+"/api/files", "", nil, &list)
			if len(list.Files) != 0 {
				t.Errorf("files after refused uploads: %+v, want none", list.Files)
			}
		})
	}
}
