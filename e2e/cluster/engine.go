package cluster

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The Docker engine the nodes run. By default it is the machine's (Debian's docker.io: dockerd 20.10
// in /usr/sbin, runc in /usr/bin). VXE2E_ENGINE_DIR names a directory holding another engine's dockerd
// and runc (scripts/install-deps engine current builds one there); it goes first in dockerd's PATH, so
// dockerd, and the containerd it starts, find its runc before the system's. VXE2E_ENGINE names that
// engine in logs and skip messages.
const (
	EngineDirEnv  = "VXE2E_ENGINE_DIR"
	EngineNameEnv = "VXE2E_ENGINE"
)

// EngineDir is the directory of the engine under test, or "" for the machine's own.
func EngineDir() string { return strings.TrimSpace(os.Getenv(EngineDirEnv)) }

// EngineName names the engine under test: VXE2E_ENGINE, else "debian" for the machine's own engine
// or the engine directory's base name.
func EngineName() string {
	if n := strings.TrimSpace(os.Getenv(EngineNameEnv)); n != "" {
		return n
	}
	if d := EngineDir(); d != "" {
		return filepath.Base(d)
	}
	return "debian"
}

// enginePath is the PATH the engine's binaries are looked up in: the engine directory, then the
// system's sbin and bin directories, then the caller's PATH.
func enginePath() string {
	p := sbinPath + ":" + os.Getenv("PATH")
	if d := EngineDir(); d != "" {
		p = d + ":" + p
	}
	return p
}

// EngineVersion is what the engine's dockerd --version prints, e.g. "Docker version 20.10.24+dfsg1,
// build 5d6db84", or the error.
func EngineVersion() string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, dockerdPath(), "--version").CombinedOutput()
	if err != nil {
		return "dockerd --version: " + err.Error()
	}
	return strings.TrimSpace(string(out))
}
