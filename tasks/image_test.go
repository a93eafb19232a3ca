package tasks

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"
)

// gradient is a w×h image whose every pixel differs from its neighbours,
// so a resize that dropped or stretched it would show.
func gradient(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.NRGBA{R: uint8(x * 255 / w), G: uint8(y * 255 / h), B: 90, A: 255})
		}
	}
	return img
}

func encoded(t *testing.T, format string, img image.Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	var err error
	switch format {
	case "png":
		err = png.Encode(&buf, img)
	case "jpeg":
		err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
	case "gif":
		err = gif.Encode(&buf, img, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// runType runs the registered task type name with args as the worker
// would, for owner-a, and returns its result and progress reports.
func runType[R any](t *testing.T, cfg Config, name, args string) (R, []Progress, error) {
	t.Helper()
	var zero R
	def, ok := NewRegistry(cfg).Lookup(name)
	if !ok {
		t.Fatalf("%s is not registered", name)
	}
	checked, err := def.CheckArgs(json.RawMessage(args))
	if err != nil {
		t.Fatalf("arguments %s: %v", args, err)
	}
	var reports []Progress
	v, err := def.Run(context.Background(), Task{ID: "t-1", Owner: "owner-a", Report: func(_ context.Context, p Progress) { reports = append(reports, p) }}, checked)
	if err != nil {
		return zero, reports, err
	}
	return v.(R), reports, nil
}

func runImage(t *testing.T, cfg Config, args string) (ImageResult, []Progress, error) {
	t.Helper()
	return runType[ImageResult](t, cfg, ProcessImageName, args)
}

func TestProcessImageResizesCompressesAndWatermarks(t *testing.T) {
	for _, tc := range []struct {
		source, format, args  string
		srcW, srcH            int
		wantW, wantH          int
		wantOutput, wantWater bool
	}{
		{source: "png", args: `"width": 300`, srcW: 1200, srcH: 900, wantW: 300, wantH: 225, wantOutput: true},
		{source: "jpeg", args: `"width": 400, "quality": 60, "watermark": "© errand"`, srcW: 1000, srcH: 500, wantW: 400, wantH: 200, wantOutput: true, wantWater: true},
		{source: "gif", args: `"format": "png", "watermark": "errand"`, srcW: 320, srcH: 200, wantW: 320, wantH: 200, wantOutput: true, wantWater: true},
	} {
		t.Run(tc.source, func(t *testing.T) {
			files := newMemFiles()
			src := encoded(t, tc.source, gradient(tc.srcW, tc.srcH))
			id := files.add(t, "owner-a", "photo."+tc.source, "image/"+tc.source, src)
			res, reports, err := runImage(t, Config{Files: files}, `{"file_id": "`+id+`", `+tc.args+`}`)
			if err != nil {
				t.Fatal(err)
			}
			if res.Width != tc.wantW || res.Height != tc.wantH || res.SourceWidth != tc.srcW || res.SourceHeight != tc.srcH || res.SourceFormat != tc.source {
				t.Errorf("result %+v, want %dx%d from a %dx%d %s", res, tc.wantW, tc.wantH, tc.srcW, tc.srcH, tc.source)
			}
			var percents []int
			for _, p := range reports {
				percents = append(percents, p.Percent)
			}
			if len(percents) != 3 || percents[0] != 33 || percents[1] != 66 || percents[2] != 90 {
				t.Errorf("progress %v, want the guide's 33, 66, 90", percents)
			}
			out := files.data(t, res.ProcessedFileID)
			if int64(len(out)) != res.Bytes || res.ProcessedURL != "/api/files/"+res.ProcessedFileID {
				t.Errorf("result says %d bytes at %s; the stored file has %d", res.Bytes, res.ProcessedURL, len(out))
			}
			img, format, err := image.Decode(bytes.NewReader(out))
			if err != nil {
				t.Fatalf("the output does not decode: %v", err)
			}
			if format != res.Format || img.Bounds().Dx() != tc.wantW || img.Bounds().Dy() != tc.wantH {
				t.Errorf("output is a %dx%d %s, want %dx%d %s", img.Bounds().Dx(), img.Bounds().Dy(), format, tc.wantW, tc.wantH, res.Format)
			}
			// The watermark is in the lower right corner: there the output
			// differs from the same image resized without one.
			plain := resize(gradient(tc.srcW, tc.srcH), tc.wantW, tc.wantH, res.Format == "jpeg")
			if n := markedPixels(img, plain); (n >= 30) != tc.wantWater || (!tc.wantWater && n > 0) {
				t.Errorf("%d pixels of the lower right corner differ from the plain resize; watermark wanted: %v", n, tc.wantWater)
			}
		})
	}
}

// markedPixels counts the pixels of the lower right corner of a (half
// its width, an eighth of its height) that differ from b's by more than
// 64 levels in a channel: the lossy compression of a smooth image moves
// a pixel by a few levels, white text over it by far more.
func markedPixels(a, b image.Image) int {
	r := a.Bounds()
	n := 0
	for y := r.Max.Y - r.Dy()/8; y < r.Max.Y; y++ {
		for x := r.Max.X - r.Dx()/2; x < r.Max.X; x++ {
			ar, ag, ab, _ := a.At(x, y).RGBA()
			br, bg, bb, _ := b.At(x, y).RGBA()
			if max(absDiff(ar, br), absDiff(ag, bg), absDiff(ab, bb)) > 64*257 {
				n++
			}
		}
	}
	return n
}

func absDiff(a, b uint32) uint32 {
	if a > b {
		return a - b
	}
	return b - a
}

func TestProcessImageDoesNotEnlarge(t *testing.T) {
	files := newMemFiles()
	id := files.add(t, "owner-a", "small.png", "image/png", encoded(t, "png", gradient(100, 50)))
	res, _, err := runImage(t, Config{Files: files}, `{"file_id": "`+id+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Width != 100 || res.Height != 50 || res.Format != "jpeg" {
		t.Errorf("a 100x50 PNG at the default width 800 became %dx%d %s, want 100x50 jpeg", res.Width, res.Height, res.Format)
	}
}

// bombPNG is a real 1x1 PNG whose header claims w×h pixels: what
// DecodeConfig sees of a decompression bomb.
func bombPNG(t *testing.T, w, h uint32) []byte {
	t.Helper()
	b := encoded(t, "png", gradient(1, 1))
	// IHDR's data starts after the 8-byte signature, 4-byte length and
	// 4-byte type; its CRC covers the type and the 13 bytes of data.
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

func TestProcessImageFailsBadImagesWithoutRetry(t *testing.T) {
	good := encoded(t, "jpeg", gradient(200, 200))
	for _, tc := range []struct {
		name    string
		data    []byte
		want    string
		maxPixs int
	}{
		{name: "not an image", data: []byte("name,description\nlamp,a lamp\n"), want: "not a JPEG, PNG or GIF image"},
		{name: "truncated", data: good[:len(good)/2], want: "damaged or truncated"},
		{name: "decompression bomb", data: bombPNG(t, 100_000, 100_000), want: "100000x100000, more than the limit of 50000000 pixels"},
		{name: "over a configured limit", data: encoded(t, "png", gradient(200, 100)), maxPixs: 10_000, want: "200x100, more than the limit of 10000 pixels"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := newMemFiles()
			id := files.add(t, "owner-a", "upload.bin", "application/octet-stream", tc.data)
			_, _, err := runImage(t, Config{Files: files, ImageMaxPixels: tc.maxPixs}, `{"file_id": "`+id+`"}`)
			if err == nil || !strings.Contains(err.Error(), tc.want) || Retryable(err) {
				t.Errorf("error %v, want a permanent failure saying %q", err, tc.want)
			}
		})
	}
	t.Run("unknown file", func(t *testing.T) {
		_, _, err := runImage(t, Config{Files: newMemFiles()}, `{"file_id": "nope"}`)
		if !errors.Is(err, ErrFileNotFound) || Retryable(err) {
			t.Errorf("error %v, want a permanent file not found", err)
		}
	})
	t.Run("another owner's file", func(t *testing.T) {
		files := newMemFiles()
		id := files.add(t, "owner-b", "photo.jpg", "image/jpeg", good)
		_, _, err := runImage(t, Config{Files: files}, `{"file_id": "`+id+`"}`)
		if !errors.Is(err, ErrFileNotFound) {
			t.Errorf("error %v, want file not found: owner-a may not read owner-b's file", err)
		}
	})
}

func TestImageArgsNeedOneSource(t *testing.T) {
	def, _ := NewRegistry(Config{}).Lookup(ProcessImageName)
	for args, field := range map[string]string{
		`{}`: "file_id",
		`{"file_id": "a", "image_url": "http://example.com/a.png"}`: "file_id",
		`{"image_url": "file:///etc/passwd"}`:                       "image_url",
		`{"file_id": "a", "width": 8}`:                              "width",
		`{"file_id": "a", "width": 5000}`:                           "width",
		`{"file_id": "a", "format": "webp"}`:                        "format",
		`{"file_id": "a", "quality": 0}`:                            "quality",
	} {
		_, err := def.CheckArgs(json.RawMessage(args))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != field {
			t.Errorf("arguments %s: error %v, want one about %s", args, err, field)
		}
	}
	if _, err := def.CheckArgs(json.RawMessage(`{"image_url": "https://example.com/a.png", "user_id": 42}`)); err != nil {
		t.Errorf("an image_url and the guide's integer user_id: %v", err)
	}
}
