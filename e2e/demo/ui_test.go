package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

func TestLogMessagePluginLine(t *testing.T) {
	// A vxsafe line as it appears in a node's dockerd log (seen in the e2e suite).
	line := `time="2026-11-22T04:14:43Z" level=info msg="time=\"2026-11-22T04:14:43Z\" level=warning msg=\"deleted stale vxlan interface \\\"vx-100000-uah2o\\\" (ifindex 17, VNI 1048576, port 4789, host namespace): it is down\" ifindex=17 interface=vx-100000-uah2o namespace=\"host namespace\" reason=\"is down\"" plugin=58890721eb9025dbcd1d722563026395ca994220099618cdb814698a304f3cce`
	level, msg, plugin := logMessage(line)
	if level != "warning" {
		t.Errorf("level %q, want the plugin's own level warning", level)
	}
	want := `deleted stale vxlan interface "vx-100000-uah2o" (ifindex 17, VNI 1048576, port 4789, host namespace): it is down`
	if msg != want {
		t.Errorf("msg\n got %q\nwant %q", msg, want)
	}
	if plugin != "58890721eb9025dbcd1d722563026395ca994220099618cdb814698a304f3cce" {
		t.Errorf("plugin %q", plugin)
	}
}

func TestLogMessageDockerdLine(t *testing.T) {
	line := `time="2026-11-22T04:23:01.123Z" level=error msg="fatal task error" error="network sandbox join failed: subnet sandbox join failed for \"10.0.1.0/24\": error creating vxlan interface: file exists" module=node/agent/taskmanager node.id=abc`
	level, msg, plugin := logMessage(line)
	want := `fatal task error: network sandbox join failed: subnet sandbox join failed for "10.0.1.0/24": error creating vxlan interface: file exists`
	if level != "error" || msg != want || plugin != "" {
		t.Errorf("got (%q, %q, %q), want (error, %q, \"\")", level, msg, plugin, want)
	}
	// Not logrus at all: the line itself.
	if _, msg, _ := logMessage("plain text line"); msg != "plain text line" {
		t.Errorf("plain line rendered as %q", msg)
	}
}

func TestTableAlignsWithAndWithoutColour(t *testing.T) {
	rows := [][]cell{
		{{text: "3"}, {text: "docker run on n2"}, {text: "FAILED after 20.1s", color: red}, {text: "running", color: green}, {text: "20.1s"}},
		{{text: ""}, {text: "x"}, {text: "-"}, {text: "refused, named vxlive1", color: green}, {text: "0.5s"}},
	}
	var plain, coloured bytes.Buffer
	(&ui{w: &plain, start: time.Now()}).table([]string{"step", "what", "Docker overlay", "vxsafe/overlay", "time"}, rows)
	(&ui{w: &coloured, color: true, start: time.Now()}).table([]string{"step", "what", "Docker overlay", "vxsafe/overlay", "time"}, rows)
	if strings.Contains(plain.String(), "\x1b") {
		t.Fatalf("colour codes without colour:\n%s", plain.String())
	}
	stripped := ansiRE(coloured.String())
	if stripped != plain.String() {
		t.Errorf("coloured table differs from the plain one once codes are removed:\n%s\nvs\n%s", stripped, plain.String())
	}
	lines := strings.Split(strings.TrimRight(plain.String(), "\n"), "\n")
	col := strings.Index(lines[0], "time")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("time column not starting at %d: %q", col, l)
		}
	}
}

// ansiRE removes SGR sequences.
func ansiRE(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := strings.IndexByte(s[i:], 'm')
			if j > 0 {
				i += j
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestNoColourWhenNotATerminal(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	t.Setenv("TERM", "xterm")
	t.Setenv("NO_COLOR", "")
	if wantColor(f) {
		t.Error("a regular file gets colour")
	}
	u := newUI(f)
	if got := u.paint(red, "x"); got != "x" {
		t.Errorf("paint on a file: %q", got)
	}
}

func TestShellJoin(t *testing.T) {
	got := shellJoin([]string{"docker", "ps", "--format", "table {{.Names}}\t{{.Status}}", "it's", ""})
	want := `docker ps --format 'table {{.Names}}	{{.Status}}' 'it'\''s' ''`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestMissingMessageSaysWhatToInstall(t *testing.T) {
	msg := missingMessage([]string{"dockerd not found", "/bin/busybox: no such file"})
	for _, w := range []string{"  - dockerd not found\n", "sudo make demo", "installs what is missing"} {
		if !strings.Contains(msg, w) {
			t.Errorf("message lacks %q:\n%s", w, msg)
		}
	}
}
