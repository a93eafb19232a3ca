package tasks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"path"
	"strings"
	"time"

	"golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/gofont/goregular"
	"golang.org/x/image/font/opentype"
	"golang.org/x/image/math/fixed"
)

// ProcessImageName is the guide's process_image (Part 6).
const ProcessImageName = "process_image"

// DefaultImageMaxPixels is IMAGE_MAX_PIXELS's default: a larger image is
// refused before it is decoded (its decoded pixels alone take 4 bytes
// each).
const DefaultImageMaxPixels = 50_000_000

// ImageArgs are process_image's arguments.
type ImageArgs struct {
	FileID    string `json:"file_id,omitempty" jsonschema:"minLength=1,maxLength=100" jsonschema_description:"The image to process, a file uploaded to /api/files (JPEG, PNG or GIF). Give this or image_url."`
	ImageURL  string `json:"image_url,omitempty" jsonschema:"maxLength=2048" jsonschema_description:"An http or https URL to fetch the image from, instead of file_id."`
	Width     int    `json:"width" jsonschema:"minimum=16,maximum=4096" jsonschema_description:"Width of the output in pixels; the height keeps the aspect ratio. A smaller image is not enlarged."`
	Quality   int    `json:"quality" jsonschema:"minimum=1,maximum=100" jsonschema_description:"JPEG quality of the output."`
	Watermark string `json:"watermark,omitempty" jsonschema:"maxLength=100" jsonschema_description:"Text drawn in the lower right corner."`
	Format    string `json:"format" jsonschema:"enum=jpeg,enum=png" jsonschema_description:"Format of the output."`
	UserID    UserID `json:"user_id,omitempty"`
}

// Validate checks what the schema cannot: exactly one source.
func (a ImageArgs) Validate() error {
	if (a.FileID == "") == (a.ImageURL == "") {
		return &FieldError{Field: "file_id", Reason: "give either file_id or image_url"}
	}
	if a.ImageURL != "" {
		return checkFetchURL("image_url", a.ImageURL)
	}
	return nil
}

// ImageResult is process_image's result: the guide's processed_url, and
// the file behind it.
type ImageResult struct {
	ProcessedFileID string `json:"processed_file_id"`
	ProcessedURL    string `json:"processed_url"`
	Width           int    `json:"width"`
	Height          int    `json:"height"`
	Bytes           int64  `json:"bytes"`
	Format          string `json:"format"`
	SourceWidth     int    `json:"source_width"`
	SourceHeight    int    `json:"source_height"`
	SourceFormat    string `json:"source_format"`
	CompletedAt     string `json:"completed_at"`
}

// processImageTask resizes, compresses and watermarks an image, reporting
// the guide's progress (33, 66, 90), and stores the output as a file. An
// input that is not a usable image fails at once: no retry would change
// it.
func processImageTask(cfg Config) Type[ImageArgs] {
	// Decoded images are large (4 bytes a pixel), so no more of them are
	// in memory at once than there are slots.
	slots := make(chan struct{}, cfg.ImageSlots)
	return Type[ImageArgs]{
		Name:        ProcessImageName,
		Description: "The guide's image processing: resize (keeping the aspect ratio), watermark and compress a JPEG, PNG or GIF, stored as a new file.",
		Defaults:    ImageArgs{Width: 800, Quality: 85, Format: "jpeg"},
		// Retries are for fetches that timed out and stores that were
		// down; bad images fail without them.
		Policy: Policy{MaxRetries: 3, BackoffBase: 2 * time.Second, BackoffMax: time.Minute, TimeLimit: 5 * time.Minute},
		Run: func(ctx context.Context, task Task, args ImageArgs) (any, error) {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			in, err := openInput(ctx, cfg, task, args.FileID, args.ImageURL)
			if err != nil {
				return nil, err
			}
			src, format, err := decodeImage(in, cfg.ImageMaxPixels)
			in.body.Close()
			if err != nil {
				return nil, err
			}
			sb := src.Bounds()
			w := min(args.Width, sb.Dx())
			h := max(1, (sb.Dy()*w+sb.Dx()/2)/sb.Dx())

			task.Report(ctx, Progress{Percent: 33, Status: fmt.Sprintf("Resizing %dx%d to %dx%d", sb.Dx(), sb.Dy(), w, h)})
			dst := resize(src, w, h, args.Format == "jpeg")
			src = nil // the decoded source is the largest thing held; let it go

			task.Report(ctx, Progress{Percent: 66, Status: "Compressing"})
			var out bytes.Buffer
			if args.Watermark != "" {
				drawWatermark(dst, args.Watermark)
			}
			if err := encodeImage(&out, dst, args.Format, args.Quality); err != nil {
				return nil, err
			}

			task.Report(ctx, Progress{Percent: 90, Status: "Storing the processed image"})
			size := int64(out.Len())
			f, err := saveOutput(ctx, cfg, task, outputName(in.name, w, args.Format), "image/"+args.Format, &out)
			if err != nil {
				return nil, err
			}
			return ImageResult{
				ProcessedFileID: f.ID, ProcessedURL: f.URL(), Width: w, Height: h, Bytes: size, Format: args.Format,
				SourceWidth: sb.Dx(), SourceHeight: sb.Dy(), SourceFormat: format, CompletedAt: Timestamp(cfg.Now()),
			}, nil
		},
	}
}

// resize scales src to w×h with Catmull-Rom, a sharp bicubic filter.
// An opaque output (JPEG has no transparency) shows white where src was
// transparent.
func resize(src image.Image, w, h int, opaque bool) *image.NRGBA {
	dst := image.NewNRGBA(image.Rect(0, 0, w, h))
	if opaque {
		draw.Draw(dst, dst.Bounds(), image.White, image.Point{}, draw.Src)
		draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Over, nil)
	} else {
		draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	}
	return dst
}

// errNotAnImage: the input is not a JPEG, PNG or GIF, or is damaged.
var errNotAnImage = errors.New("not a JPEG, PNG or GIF image")

// decodeImage reads in whole (it is at most the fetch or upload limit),
// checks its dimensions against maxPixels before decoding, so a small
// file that would decode to gigabytes (a decompression bomb) is refused
// cheaply, and decodes it (a GIF's first frame).
func decodeImage(in input, maxPixels int) (image.Image, string, error) {
	data, err := io.ReadAll(in.body)
	if err != nil {
		return nil, "", fmt.Errorf("read the image: %w", err)
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, "", Permanent(fmt.Errorf("%w: %v", errNotAnImage, err))
	}
	if format != "jpeg" && format != "png" && format != "gif" {
		return nil, "", Permanent(fmt.Errorf("%w: it is %s", errNotAnImage, format))
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > int64(maxPixels) {
		return nil, "", Permanent(fmt.Errorf("the image is %dx%d, more than the limit of %d pixels (IMAGE_MAX_PIXELS)", cfg.Width, cfg.Height, maxPixels))
	}
	var img image.Image
	switch format {
	case "jpeg":
		img, err = jpeg.Decode(bytes.NewReader(data))
	case "png":
		img, err = png.Decode(bytes.NewReader(data))
	case "gif":
		img, err = gif.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, "", Permanent(fmt.Errorf("%w: %s damaged or truncated: %v", errNotAnImage, format, err))
	}
	return img, format, nil
}

func encodeImage(w io.Writer, img image.Image, format string, quality int) error {
	var err error
	if format == "png" {
		err = (&png.Encoder{CompressionLevel: png.BestCompression}).Encode(w, img)
	} else {
		err = jpeg.Encode(w, img, &jpeg.Options{Quality: quality})
	}
	if err != nil {
		return fmt.Errorf("encode %s: %w", format, err)
	}
	return nil
}

// outputName names the processed file after its source: photo.png at 800
// pixels in JPEG is photo_800w.jpg.
func outputName(source string, width int, format string) string {
	base := strings.TrimSuffix(path.Base(source), path.Ext(source))
	if base == "" || base == "." || base == "/" {
		base = "image"
	}
	ext := ".jpg"
	if format == "png" {
		ext = ".png"
	}
	return fmt.Sprintf("%s_%dw%s", base, width, ext)
}

// watermarkFont is Go's own sans-serif, embedded in the binary.
var watermarkFont = mustParseFont(goregular.TTF)

func mustParseFont(ttf []byte) *opentype.Font {
	f, err := opentype.Parse(ttf)
	if err != nil {
		panic(fmt.Sprintf("parse the embedded font: %v", err))
	}
	return f
}

// drawWatermark writes text in the lower right corner of img, in white
// over a soft dark shadow so that it reads on light and dark images
// alike, sized to the image and shrunk until it fits.
func drawWatermark(img draw.Image, text string) {
	b := img.Bounds()
	margin := max(4, b.Dx()/40)
	size := max(10, float64(b.Dx())/20)
	for {
		face, err := opentype.NewFace(watermarkFont, &opentype.FaceOptions{Size: size, DPI: 72, Hinting: font.HintingFull})
		if err != nil {
			return // a size opentype refuses: no watermark rather than no image
		}
		d := &font.Drawer{Dst: img, Face: face}
		width := d.MeasureString(text).Ceil()
		if width+2*margin <= b.Dx() || size <= 6 {
			x := b.Max.X - margin - width
			y := b.Max.Y - margin - face.Metrics().Descent.Ceil()
			shadow := max(1, int(size/16))
			d.Src = image.NewUniform(color.NRGBA{0, 0, 0, 140})
			d.Dot = fixed.P(x+shadow, y+shadow)
			d.DrawString(text)
			d.Src = image.NewUniform(color.NRGBA{255, 255, 255, 200})
			d.Dot = fixed.P(x, y)
			d.DrawString(text)
			face.Close()
			return
		}
		face.Close()
		size *= 0.85
	}
}
