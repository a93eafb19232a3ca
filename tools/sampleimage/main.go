// Command sampleimage writes a PNG to stdout for errand's examples: a
// picture with fine detail and smooth colour, so that what process_image
// does to it (resizing, compression, the watermark) shows.
//
//	go run ./tools/sampleimage -width 1600 -height 1000 > photo.png
package main

import (
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
)

func main() {
	width := flag.Int("width", 1600, "width in pixels")
	height := flag.Int("height", 1000, "height in pixels")
	flag.Parse()
	if err := png.Encode(os.Stdout, mandelbrot(*width, *height)); err != nil {
		fmt.Fprintln(os.Stderr, "sampleimage:", err)
		os.Exit(1)
	}
}

// mandelbrot draws the Mandelbrot set's seahorse valley, coloured by a
// smooth escape count.
func mandelbrot(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	const cx, cy, span = -0.7453, 0.1127, 0.03
	scale := span / float64(w)
	for py := range h {
		for px := range w {
			c := complex(cx+float64(px-w/2)*scale, cy+float64(py-h/2)*scale)
			z := complex(0, 0)
			n := 0
			for ; n < 400 && real(z)*real(z)+imag(z)*imag(z) < 256; n++ {
				z = z*z + c
			}
			if n == 400 {
				img.Set(px, py, color.NRGBA{10, 10, 30, 255})
				continue
			}
			smooth := float64(n) + 1 - math.Log2(math.Log2(math.Hypot(real(z), imag(z))))
			t := smooth / 60
			img.Set(px, py, color.NRGBA{
				R: uint8(127 + 127*math.Sin(t*6.28+0.0)),
				G: uint8(127 + 127*math.Sin(t*6.28+2.1)),
				B: uint8(127 + 127*math.Sin(t*6.28+4.2)),
				A: 255,
			})
		}
	}
	return img
}
