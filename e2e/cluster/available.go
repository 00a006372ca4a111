package cluster

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// InstallHint is the command that installs what the harness needs on Debian.
const InstallHint = "apt-get update && apt-get install -y docker.io busybox-static iproute2 util-linux"

// Available returns nil when the harness can run here: root, dockerd,
// containerd, runc and the docker CLI, nsenter, and a static busybox.
// Otherwise the error says what is missing and the apt-get line installing it.
func Available() error {
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, "must run as root (network namespaces, mounts, dockerd)")
	}
	if d := EngineDir(); d != "" {
		for _, bin := range []string{"dockerd", "runc"} {
			if _, err := lookPathIn(bin, d); err != nil {
				problems = append(problems, fmt.Sprintf("engine %s: no %s in %s=%s (scripts/install-deps engine current builds it)", EngineName(), bin, EngineDirEnv, d))
			}
		}
	}
	path := enginePath()
	for _, bin := range []string{"dockerd", "containerd", "runc", "nsenter"} {
		if _, err := lookPathIn(bin, path); err != nil {
			problems = append(problems, bin+" not found")
		}
	}
	if _, err := exec.LookPath(dockerCLI()); err != nil {
		problems = append(problems, "docker CLI not found")
	}
	if err := checkStatic(busyboxPath); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("e2e cluster unavailable: %s; install with: %s", strings.Join(problems, "; "), InstallHint)
}

func lookPathIn(bin, path string) (string, error) {
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			continue
		}
		p := dir + "/" + bin
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not in %s", bin, path)
}
