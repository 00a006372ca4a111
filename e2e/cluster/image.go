package cluster

import (
	"archive/tar"
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

const (
	busyboxPath = "/bin/busybox"
	iperf3Path  = "/usr/bin/iperf3"
)

// BuildImageTar writes a root filesystem tarball for `docker import`: static
// busybox with all its applet links, /etc/passwd, /etc/group and /tmp; with
// iperf3 also /usr/bin/iperf3 and the libraries ldd lists for it.
func BuildImageTar(dst string, withIperf3 bool) error {
	if err := checkStatic(busyboxPath); err != nil {
		return err
	}
	applets, err := exec.Command(busyboxPath, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("image: %s --list-full: %w", busyboxPath, err)
	}
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("image tarball %s: %w", dst, err)
	}
	bw := bufio.NewWriter(f)
	w := &tarWriter{tw: tar.NewWriter(bw), dirs: map[string]bool{}}

	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "var", "run"} {
		w.dir(d, 0o755)
	}
	w.dir("tmp", 0o1777)
	w.dir("var/tmp", 0o1777)
	w.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"))
	w.file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	w.hostFile("bin/busybox", busyboxPath, 0o755)
	for _, a := range strings.Fields(string(applets)) {
		a = strings.TrimPrefix(path.Clean(a), "/")
		if a == "bin/busybox" || a == "." {
			continue
		}
		w.symlink(a, "/bin/busybox")
	}
	if withIperf3 {
		w.hostFile(strings.TrimPrefix(iperf3Path, "/"), iperf3Path, 0o755)
		libs, err := lddLibs(iperf3Path)
		if err != nil {
			w.err = err
		}
		for _, l := range libs {
			w.hostFile(strings.TrimPrefix(l, "/"), l, 0o755)
		}
	}
	if w.err == nil {
		w.err = w.tw.Close()
	}
	if w.err == nil {
		w.err = bw.Flush()
	}
	if err := f.Close(); err != nil && w.err == nil {
		w.err = err
	}
	if w.err != nil {
		os.Remove(dst)
		return fmt.Errorf("image tarball %s: %w", dst, w.err)
	}
	return nil
}

type tarWriter struct {
	tw   *tar.Writer
	dirs map[string]bool
	err  error
}

func (w *tarWriter) parents(name string) {
	d := path.Dir(name)
	if d == "." || w.dirs[d] {
		return
	}
	w.dir(d, 0o755)
}

func (w *tarWriter) dir(name string, mode int64) {
	if w.err != nil || w.dirs[name] {
		return
	}
	w.parents(name)
	w.dirs[name] = true
	w.err = w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode, ModTime: time.Unix(0, 0)})
}

func (w *tarWriter) file(name string, mode int64, data []byte) {
	if w.err != nil {
		return
	}
	w.parents(name)
	if w.err = w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); w.err != nil {
		return
	}
	_, w.err = w.tw.Write(data)
}

func (w *tarWriter) hostFile(name, src string, mode int64) {
	if w.err != nil {
		return
	}
	data, err := os.ReadFile(src) // follows symlinks: the image gets the real content
	if err != nil {
		w.err = err
		return
	}
	w.file(name, mode, data)
}

func (w *tarWriter) symlink(name, target string) {
	if w.err != nil {
		return
	}
	w.parents(name)
	w.err = w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: time.Unix(0, 0)})
}

// checkStatic makes sure a binary needs no shared libraries.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w (install with: apt-get install -y busybox-static)", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the image needs the static one (install with: apt-get install -y busybox-static)", p)
		}
	}
	return nil
}

// lddLibs lists the absolute library paths (and the ELF interpreter) ldd
// prints for a binary.
func lddLibs(bin string) ([]string, error) {
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", bin, err)
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		// "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
		fields := strings.Fields(line)
		for i, f := range fields {
			if strings.HasPrefix(f, "/") && (i == 0 || fields[i-1] == "=>") {
				seen[filepath.Clean(f)] = true
			}
		}
	}
	var libs []string
	for l := range seen {
		libs = append(libs, l)
	}
	sort.Strings(libs)
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s: no libraries found in %q", bin, out)
	}
	return libs, nil
}

func (c *Cluster) buildImage() error {
	began := time.Now()
	c.imageTar = filepath.Join(c.dir, "image.tar")
	if err := BuildImageTar(c.imageTar, c.opts.WithIperf3); err != nil {
		return err
	}
	st, _ := os.Stat(c.imageTar)
	var size int64
	if st != nil {
		size = st.Size()
	}
	c.logf("image tarball %s (%d KiB) built in %.2fs", c.imageTar, size/1024, time.Since(began).Seconds())
	return nil
}

// importImage loads the tarball into the node's daemon as name.
func (n *Node) importImage(ctx context.Context, tarball, name string) error {
	f, err := os.Open(tarball)
	if err != nil {
		return fmt.Errorf("node %s: image tarball: %w", n.Name, err)
	}
	defer f.Close()
	_, err = n.DockerInput(ctx, f, "import",
		"--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"--change", `CMD ["/bin/sh"]`,
		"-", name)
	return err
}
