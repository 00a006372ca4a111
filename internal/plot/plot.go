// Package plot draws vxsafe's benchmark figures as PNG: a line plot of Join latency against the number of
// endpoints on the host, drawn with the standard library and a built-in 5x7 bitmap font (no plotting
// dependency for one chart).
package plot

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
)

// Point is one measurement: where the state was kept ("disk" or "tmpfs"), the endpoints joined on the
// host, and Join's p50 and p99 in milliseconds.
type Point struct {
	State     string
	Endpoints int
	P50, P99  float64
}

// WriteJoinLatency writes DrawJoinLatency's plot of points to path as a PNG.
func WriteJoinLatency(path string, points []Point, subtitle string) error {
	img := DrawJoinLatency(points, subtitle)
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("encoding the Join latency plot: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing the Join latency plot: %w", err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing the Join latency plot %s: %w", path, err)
	}
	return nil
}

// glyphs are 5 pixels wide and 7 high; letters with a descender have 2 more rows below the baseline.
var glyphs = map[rune][]string{
	' ': {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'0': {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1': {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2': {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3': {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."},
	'4': {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5': {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6': {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7': {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8': {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9': {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'A': {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B': {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C': {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D': {"###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F': {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G': {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H': {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I': {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J': {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K': {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L': {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M': {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N': {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O': {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q': {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S': {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U': {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V': {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W': {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X': {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y': {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z': {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'a': {".....", ".....", ".###.", "....#", ".####", "#...#", ".####"},
	'b': {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "####."},
	'c': {".....", ".....", ".###.", "#....", "#....", "#...#", ".###."},
	'd': {"....#", "....#", ".##.#", "#..##", "#...#", "#...#", ".####"},
	'e': {".....", ".....", ".###.", "#...#", "#####", "#....", ".###."},
	'f': {"..##.", ".#..#", ".#...", "###..", ".#...", ".#...", ".#..."},
	'g': {".....", ".....", ".####", "#...#", "#...#", "#...#", ".####", "....#", ".###."},
	'h': {"#....", "#....", "#.##.", "##..#", "#...#", "#...#", "#...#"},
	'i': {"..#..", ".....", ".##..", "..#..", "..#..", "..#..", ".###."},
	'j': {"...#.", ".....", "..##.", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'k': {"#....", "#....", "#..#.", "#.#..", "##...", "#.#..", "#..#."},
	'l': {".##..", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'm': {".....", ".....", "##.#.", "#.#.#", "#.#.#", "#...#", "#...#"},
	'n': {".....", ".....", "#.##.", "##..#", "#...#", "#...#", "#...#"},
	'o': {".....", ".....", ".###.", "#...#", "#...#", "#...#", ".###."},
	'p': {".....", ".....", "####.", "#...#", "#...#", "#...#", "####.", "#....", "#...."},
	'q': {".....", ".....", ".####", "#...#", "#...#", "#...#", ".####", "....#", "....#"},
	'r': {".....", ".....", "#.##.", "##..#", "#....", "#....", "#...."},
	's': {".....", ".....", ".###.", "#....", ".###.", "....#", "####."},
	't': {".#...", ".#...", "###..", ".#...", ".#...", ".#..#", "..##."},
	'u': {".....", ".....", "#...#", "#...#", "#...#", "#..##", ".##.#"},
	'v': {".....", ".....", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'w': {".....", ".....", "#...#", "#...#", "#.#.#", "#.#.#", ".#.#."},
	'x': {".....", ".....", "#...#", ".#.#.", "..#..", ".#.#.", "#...#"},
	'y': {".....", ".....", "#...#", "#...#", "#...#", "#...#", ".####", "....#", ".###."},
	'z': {".....", ".....", "#####", "...#.", "..#..", ".#...", "#####"},
	'.': {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',': {".....", ".....", ".....", ".....", ".....", ".##..", ".##..", "..#..", ".#..."},
	';': {".....", ".##..", ".##..", ".....", ".##..", ".##..", "..#..", ".#..."},
	':': {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'(': {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')': {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'-': {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'/': {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."},
	'<': {"...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."},
	'>': {".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."},
	'=': {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'%': {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"},
	'+': {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	'_': {".....", ".....", ".....", ".....", ".....", ".....", "#####"},
}

type canvas struct{ img *image.RGBA }

func newCanvas(w, h int) *canvas {
	c := &canvas{img: image.NewRGBA(image.Rect(0, 0, w, h))}
	c.fillRect(0, 0, w, h, color.RGBA{255, 255, 255, 255})
	return c
}

func (c *canvas) fillRect(x0, y0, x1, y1 int, col color.RGBA) {
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			c.img.SetRGBA(x, y, col)
		}
	}
}

// dot draws a w x w square centred on (x, y).
func (c *canvas) dot(x, y, w int, col color.RGBA) {
	c.fillRect(x-w/2, y-w/2, x-w/2+w, y-w/2+w, col)
}

// line draws from (x0, y0) to (x1, y1) with width w; dash > 0 draws dash pixels on, dash off.
func (c *canvas) line(x0, y0, x1, y1, w, dash int, col color.RGBA) {
	dx, dy := float64(x1-x0), float64(y1-y0)
	n := int(math.Max(math.Abs(dx), math.Abs(dy)))
	for i := 0; i <= n; i++ {
		if dash > 0 && (i/dash)%2 == 1 {
			continue
		}
		t := 0.0
		if n > 0 {
			t = float64(i) / float64(n)
		}
		c.dot(x0+int(math.Round(dx*t)), y0+int(math.Round(dy*t)), w, col)
	}
}

// text draws s with its top left corner at (x, y), each font pixel scale x scale; it returns the width.
func (c *canvas) text(x, y int, s string, scale int, col color.RGBA) int {
	for i, r := range []rune(s) {
		g, ok := glyphs[r]
		if !ok {
			g = []string{"#####", "#...#", "#...#", "#...#", "#...#", "#...#", "#####"}
		}
		for row, bits := range g {
			for colIdx, b := range bits {
				if b == '#' {
					px, py := x+(i*6+colIdx)*scale, y+row*scale
					c.fillRect(px, py, px+scale, py+scale, col)
				}
			}
		}
	}
	return textWidth(s, scale)
}

func textWidth(s string, scale int) int { return (len([]rune(s))*6 - 1) * scale }

// vtext draws s rotated 90 degrees counter-clockwise, reading bottom to top, its left edge at x and its
// end at y.
func (c *canvas) vtext(x, y int, s string, scale int, col color.RGBA) {
	w := textWidth(s, scale)
	tmp := newCanvas(w, 9*scale)
	tmp.text(0, 0, s, scale, col)
	for ty := 0; ty < 9*scale; ty++ {
		for tx := 0; tx < w; tx++ {
			if p := tmp.img.RGBAAt(tx, ty); p != (color.RGBA{255, 255, 255, 255}) {
				c.img.SetRGBA(x+ty, y+w-tx, p)
			}
		}
	}
}

// plotSeries is one line of the plot.
type plotSeries struct {
	label  string
	col    color.RGBA
	dash   int
	points [][2]float64 // endpoints, ms
}

// joinSeries picks the series to draw from the points.
func joinSeries(rows []Point) []plotSeries {
	blue, green := color.RGBA{31, 90, 180, 255}, color.RGBA{40, 150, 70, 255}
	var out []plotSeries
	for _, st := range []struct {
		state, name string
		col         color.RGBA
	}{{"disk", "state on disk (fsync)", blue}, {"tmpfs", "state on tmpfs (no fsync)", green}} {
		p50 := plotSeries{label: "p50, " + st.name, col: st.col}
		p99 := plotSeries{label: "p99, " + st.name, col: st.col, dash: 8}
		for _, r := range rows {
			if r.State == st.state {
				p50.points = append(p50.points, [2]float64{float64(r.Endpoints), r.P50})
				p99.points = append(p99.points, [2]float64{float64(r.Endpoints), r.P99})
			}
		}
		if len(p50.points) > 0 {
			out = append(out, p50, p99)
		}
	}
	return out
}

// DrawJoinLatency renders Join p50 and p99 against endpoints on the host (log scale) with the 10 ms
// target, subtitle under the title.
func DrawJoinLatency(rows []Point, subtitle string) *image.RGBA {
	const W, H = 960, 640
	const left, right, top, bottom = 90, 40, 90, 150
	c := newCanvas(W, H)
	black, grey, red := color.RGBA{30, 30, 30, 255}, color.RGBA{225, 225, 225, 255}, color.RGBA{200, 40, 40, 255}
	series := joinSeries(rows)
	ymax := 12.0
	for _, s := range series {
		for _, p := range s.points {
			ymax = math.Max(ymax, p[1]*1.1)
		}
	}
	step := 2.0
	for ymax/step > 8 {
		step *= 2
	}
	ymax = math.Ceil(ymax/step) * step
	// x: log10 from 0.6 to 1600, so that the points at 1 and 1000 and their labels stay inside.
	lo, hi := math.Log10(0.6), math.Log10(1600)
	px := func(n float64) int {
		return left + int(math.Round((math.Log10(n)-lo)/(hi-lo)*float64(W-left-right)))
	}
	py := func(ms float64) int { return H - bottom - int(math.Round(ms/ymax*float64(H-top-bottom))) }

	title := "Join latency against endpoints on the host"
	tx := (W - textWidth(title, 3)) / 2
	c.text(tx, 16, title, 3, black)
	c.text(tx+1, 16, title, 3, black) // bold
	c.text((W-textWidth(subtitle, 2))/2, 54, subtitle, 2, black)
	// Grid, ticks and labels.
	for v := 0.0; v <= ymax+1e-9; v += step {
		y := py(v)
		c.line(left, y, W-right, y, 1, 0, grey)
		l := fmt.Sprintf("%g", v)
		c.text(left-12-textWidth(l, 2), y-7, l, 2, black)
	}
	for _, n := range []float64{1, 10, 100, 1000} {
		x := px(n)
		c.line(x, top, x, H-bottom, 1, 0, grey)
		l := fmt.Sprintf("%g", n)
		c.text(x-textWidth(l, 2)/2, H-bottom+12, l, 2, black)
	}
	c.line(left, H-bottom, W-right, H-bottom, 2, 0, black)
	c.line(left, top, left, H-bottom, 2, 0, black)
	xl := "endpoints joined on the host (log scale)"
	c.text(left+(W-left-right-textWidth(xl, 2))/2, H-bottom+42, xl, 2, black)
	c.vtext(18, top+(H-top-bottom-textWidth("milliseconds", 2))/2, "milliseconds", 2, black)
	// Target.
	if 10 <= ymax {
		c.line(left, py(10), W-right, py(10), 2, 6, red)
		c.text(W-right-textWidth("target: p99 < 10 ms", 2)-4, py(10)-20, "target: p99 < 10 ms", 2, red)
	}
	// Series.
	for k, s := range series {
		for i, p := range s.points {
			x, y := px(p[0]), py(p[1])
			if i > 0 {
				q := s.points[i-1]
				c.line(px(q[0]), py(q[1]), x, y, 3, s.dash, s.col)
			}
			c.dot(x, y, 9, s.col)
		}
		// Values: disk series above left of their points; tmpfs right, p50 below the line, p99 above.
		for _, p := range s.points {
			x, y := px(p[0]), py(p[1])
			l := fmt.Sprintf("%.1f", p[1])
			lx := x + 10
			if k < 2 {
				lx = x - 10 - textWidth(l, 2)
			}
			ly := y - 22
			if k >= 2 && s.dash == 0 { // tmpfs p50 below its line, but above the x axis
				ly = min(y+8, H-bottom-18)
			}
			c.text(lx, ly, l, 2, s.col)
		}
	}
	// Legend, below the x axis label: two columns.
	for i, s := range series {
		x := left + 10 + (i/2)*((W-left-right)/2)
		y := H - bottom + 80 + (i%2)*26
		c.line(x, y, x+44, y, 3, s.dash, s.col)
		c.dot(x+22, y, 9, s.col)
		c.text(x+56, y-7, s.label, 2, black)
	}
	return c.img
}
