// Package plot draws vxsafe's benchmark figures as PNG: line plots of Join latency against the number of
// endpoints on the host and of gossip convergence against the number of nodes, drawn with the standard
// library and a built-in 5x7 bitmap font (no plotting dependency for two charts).
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
	return writePNG(path, "Join latency", DrawJoinLatency(points, subtitle))
}

func writePNG(path, what string, img image.Image) error {
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("encoding the %s plot: %w", what, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("writing the %s plot: %w", what, err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing the %s plot %s: %w", what, path, err)
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
	points [][2]float64 // x, y
	// Where each point's value is written: left of the point instead of right, below instead of above.
	left, below bool
}

// joinSeries picks the series to draw from the points.
func joinSeries(rows []Point) []plotSeries {
	blue, green := color.RGBA{31, 90, 180, 255}, color.RGBA{40, 150, 70, 255}
	var out []plotSeries
	for _, st := range []struct {
		state, name string
		col         color.RGBA
		tmpfs       bool
	}{{"disk", "state on disk (fsync)", blue, false}, {"tmpfs", "state on tmpfs (no fsync)", green, true}} {
		// Values: disk series left of their points, tmpfs right; tmpfs p50 below its line.
		p50 := plotSeries{label: "p50, " + st.name, col: st.col, left: !st.tmpfs, below: st.tmpfs}
		p99 := plotSeries{label: "p99, " + st.name, col: st.col, dash: 8, left: !st.tmpfs}
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
	return drawChart(chart{
		title: "Join latency against endpoints on the host", subtitle: subtitle,
		xlabel: "endpoints joined on the host (log scale)", ylabel: "milliseconds",
		xlo: 0.6, xhi: 1600, xticks: []float64{1, 10, 100, 1000}, ymin: 12, ystep: 2,
		target: 10, targetLabel: "target: p99 < 10 ms", format: "%.1f", series: joinSeries(rows),
	})
}

// chart is a line plot with a logarithmic x axis from xlo to xhi and a linear y axis from 0.
type chart struct {
	title, subtitle, xlabel, ylabel string
	xlo, xhi                        float64
	xticks                          []float64
	ymin, ystep                     float64 // the y axis reaches at least ymin; its grid steps are ystep doubled as needed
	target                          float64 // drawn as a red dashed line when > 0
	targetLabel                     string
	format                          string // of the values written beside the points
	series                          []plotSeries
}

func drawChart(ch chart) *image.RGBA {
	const W, H = 960, 640
	const left, right, top, bottom = 90, 40, 90, 150
	c := newCanvas(W, H)
	black, grey, red := color.RGBA{30, 30, 30, 255}, color.RGBA{225, 225, 225, 255}, color.RGBA{200, 40, 40, 255}
	series := ch.series
	ymax := ch.ymin
	for _, s := range series {
		for _, p := range s.points {
			ymax = math.Max(ymax, p[1]*1.1)
		}
	}
	step := ch.ystep
	for ymax/step > 8 {
		step *= 2
	}
	ymax = math.Ceil(ymax/step) * step
	lo, hi := math.Log10(ch.xlo), math.Log10(ch.xhi)
	px := func(n float64) int {
		return left + int(math.Round((math.Log10(n)-lo)/(hi-lo)*float64(W-left-right)))
	}
	py := func(v float64) int { return H - bottom - int(math.Round(v/ymax*float64(H-top-bottom))) }

	tx := (W - textWidth(ch.title, 3)) / 2
	c.text(tx, 16, ch.title, 3, black)
	c.text(tx+1, 16, ch.title, 3, black) // bold
	c.text((W-textWidth(ch.subtitle, 2))/2, 54, ch.subtitle, 2, black)
	// Grid, ticks and labels.
	for v := 0.0; v <= ymax+1e-9; v += step {
		y := py(v)
		c.line(left, y, W-right, y, 1, 0, grey)
		l := fmt.Sprintf("%g", v)
		c.text(left-12-textWidth(l, 2), y-7, l, 2, black)
	}
	for _, n := range ch.xticks {
		x := px(n)
		c.line(x, top, x, H-bottom, 1, 0, grey)
		l := fmt.Sprintf("%g", n)
		c.text(x-textWidth(l, 2)/2, H-bottom+12, l, 2, black)
	}
	c.line(left, H-bottom, W-right, H-bottom, 2, 0, black)
	c.line(left, top, left, H-bottom, 2, 0, black)
	c.text(left+(W-left-right-textWidth(ch.xlabel, 2))/2, H-bottom+42, ch.xlabel, 2, black)
	c.vtext(18, top+(H-top-bottom-textWidth(ch.ylabel, 2))/2, ch.ylabel, 2, black)
	// Target.
	if ch.target > 0 && ch.target <= ymax {
		c.line(left, py(ch.target), W-right, py(ch.target), 2, 6, red)
		c.text(W-right-textWidth(ch.targetLabel, 2)-4, py(ch.target)-20, ch.targetLabel, 2, red)
	}
	// Series.
	for _, s := range series {
		for i, p := range s.points {
			x, y := px(p[0]), py(p[1])
			if i > 0 {
				q := s.points[i-1]
				c.line(px(q[0]), py(q[1]), x, y, 3, s.dash, s.col)
			}
			c.dot(x, y, 9, s.col)
		}
		for _, p := range s.points {
			x, y := px(p[0]), py(p[1])
			l := fmt.Sprintf(ch.format, p[1])
			lx := x + 10
			if s.left {
				lx = x - 10 - textWidth(l, 2)
			}
			ly := y - 22
			if s.below { // below the line, but above the x axis
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

// ScalePoint is one size of the gossip scale simulation: nodes, and the convergence p50 and p99 in
// milliseconds.
type ScalePoint struct {
	Nodes    int
	P50, P99 float64
}

// WriteConvergence writes DrawConvergence's plot of points to path as a PNG.
func WriteConvergence(path string, points []ScalePoint, subtitle string) error {
	return writePNG(path, "gossip convergence", DrawConvergence(points, subtitle))
}

// DrawConvergence renders the time for an endpoint published on one node to be known on all, p50 and
// p99, against the number of nodes (log scale), with the 2 s target.
func DrawConvergence(points []ScalePoint, subtitle string) *image.RGBA {
	p50 := plotSeries{label: "p50", col: color.RGBA{31, 90, 180, 255}, below: true}
	p99 := plotSeries{label: "p99", col: color.RGBA{31, 90, 180, 255}, dash: 8, left: true}
	for _, p := range points {
		p50.points = append(p50.points, [2]float64{float64(p.Nodes), p.P50})
		p99.points = append(p99.points, [2]float64{float64(p.Nodes), p.P99})
	}
	return drawChart(chart{
		title: "Gossip convergence against cluster size", subtitle: subtitle,
		xlabel: "nodes (log scale)", ylabel: "milliseconds",
		xlo: 7, xhi: 400, xticks: []float64{10, 25, 50, 100, 250}, ymin: 2200, ystep: 250,
		target: 2000, targetLabel: "target: p99 < 2 s", format: "%.0f", series: []plotSeries{p50, p99},
	})
}
