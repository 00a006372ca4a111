package plot

import (
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestJoinLatency(t *testing.T) {
	rows := []Point{
		{State: "disk", Endpoints: 1, P50: 1.1, P99: 3.2},
		{State: "disk", Endpoints: 100, P50: 1.3, P99: 4.0},
		{State: "disk", Endpoints: 1000, P50: 1.4, P99: 4.5},
		{State: "tmpfs", Endpoints: 1, P50: 0.7, P99: 1.5},
		{State: "tmpfs", Endpoints: 100, P50: 0.8, P99: 1.9},
		{State: "tmpfs", Endpoints: 1000, P50: 0.8, P99: 2.0},
	}
	path := filepath.Join(t.TempDir(), "join.png")
	if err := WriteJoinLatency(path, rows, "vxsafe/overlay, 400 Joins per point, machine load 0.52-0.61; p99 dashed"); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 960 || b.Dy() != 640 {
		t.Fatalf("size %v", b)
	}
	// Each series' colour and the target line's are drawn.
	want := map[color.RGBA]int{{31, 90, 180, 255}: 0, {40, 150, 70, 255}: 0, {200, 40, 40, 255}: 0}
	for y := 0; y < 640; y++ {
		for x := 0; x < 960; x++ {
			r, g, b, a := img.At(x, y).RGBA()
			p := color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8), uint8(a >> 8)}
			if _, ok := want[p]; ok {
				want[p]++
			}
		}
	}
	for col, n := range want {
		if n < 200 {
			t.Errorf("colour %v: %d pixels", col, n)
		}
	}
	// Every character of the labels has a glyph.
	for _, s := range []string{"Join latency against endpoints on the host", "vxsafe/overlay, 400 Joins per point, machine load 0.52-0.61; p99 dashed",
		"endpoints joined on the host (log scale)", "milliseconds", "target: p99 < 10 ms",
		"p99, state on tmpfs (no fsync)", "0123456789."} {
		for _, r := range s {
			if _, ok := glyphs[r]; !ok {
				t.Errorf("no glyph for %q in %q", r, s)
			}
		}
	}
	if os.Getenv("VXSAFE_PLOT_SAMPLE") != "" {
		_ = os.WriteFile(os.Getenv("VXSAFE_PLOT_SAMPLE"), mustRead(t, path), 0o644)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConvergence(t *testing.T) {
	img := DrawConvergence([]ScalePoint{{10, 1, 3}, {50, 10, 35}, {100, 40, 400}, {250, 90, 1500}}, "vxsafe gossip, 20 probes per size")
	if b := img.Bounds(); b.Dx() != 960 || b.Dy() != 640 {
		t.Fatalf("size %v", b)
	}
	want := map[color.RGBA]int{{31, 90, 180, 255}: 0, {200, 40, 40, 255}: 0}
	for y := 0; y < 640; y++ {
		for x := 0; x < 960; x++ {
			if _, ok := want[img.RGBAAt(x, y)]; ok {
				want[img.RGBAAt(x, y)]++
			}
		}
	}
	for col, n := range want {
		if n < 200 {
			t.Errorf("colour %v: %d pixels", col, n)
		}
	}
	for _, s := range []string{"Gossip convergence against cluster size", "nodes (log scale)", "target: p99 < 2 s", "p50", "p99"} {
		for _, r := range s {
			if _, ok := glyphs[r]; !ok {
				t.Errorf("no glyph for %q in %q", r, s)
			}
		}
	}
	if p := os.Getenv("VXSAFE_PLOT_SAMPLE"); p != "" {
		if err := WriteConvergence(p+".convergence.png", []ScalePoint{{10, 1, 3}, {50, 10, 35}, {100, 40, 400}, {250, 90, 1500}}, "sample"); err != nil {
			t.Fatal(err)
		}
	}
}
