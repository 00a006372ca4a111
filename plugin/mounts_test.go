package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveStateDirCreatesVxsafeInTheMount(t *testing.T) {
	mount := t.TempDir() // a fresh host's /var/lib: no vxsafe/ yet
	dir, err := resolveStateDir(mount)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(mount, "vxsafe"); dir != want {
		t.Fatalf("state dir %s, want %s", dir, want)
	}
	st, err := os.Stat(dir)
	if err != nil || !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir %s: %v %v", dir, st, err)
	}
	again, err := resolveStateDir(mount) // the next start finds it
	if err != nil || again != dir {
		t.Fatalf("second start: %s %v", again, err)
	}
}

func TestResolveStateDirKeepsADatabaseInTheMountItself(t *testing.T) {
	// Before the parent-directory mount, state.source named the state directory (default
	// /var/lib/vxsafe) and the database sat directly in the mount; an upgrade carries that source over.
	mount := t.TempDir()
	if err := os.WriteFile(filepath.Join(mount, "vxsafe.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir, err := resolveStateDir(mount)
	if err != nil || dir != mount {
		t.Fatalf("state dir %s %v, want the mount %s", dir, err, mount)
	}
	if _, err := os.Stat(filepath.Join(mount, "vxsafe")); !os.IsNotExist(err) {
		t.Fatalf("created vxsafe/ beside an existing database: %v", err)
	}
}

func TestResolveStateDirErrorsNameTheMount(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	taken := t.TempDir()
	if err := os.WriteFile(filepath.Join(taken, "vxsafe"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mount := range []string{filepath.Join(t.TempDir(), "missing"), file, taken} {
		if _, err := resolveStateDir(mount); err == nil || !strings.Contains(err.Error(), mount) {
			t.Errorf("%s: error %v does not name it", mount, err)
		}
	}
}

func TestResolveDockerSocket(t *testing.T) {
	dir := t.TempDir() // the host's /var/run, mounted as a directory
	if got := resolveDockerSocket(dir); got != filepath.Join(dir, "docker.sock") {
		t.Fatalf("directory mount: %s", got)
	}
	sock := filepath.Join(dir, "engine.sock") // docker-socket.source set to a socket
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if got := resolveDockerSocket(sock); got != sock {
		t.Fatalf("socket mount: %s", got)
	}
	if got := resolveDockerSocket(filepath.Join(dir, "none")); got != filepath.Join(dir, "none") {
		t.Fatalf("missing mount: %s", got)
	}
}
