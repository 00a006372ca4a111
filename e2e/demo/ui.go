package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// ui prints the demo: step headers with the elapsed time, commands as a prompt would show them, their
// output indented below. Colour only on a terminal (and not with NO_COLOR or TERM=dumb).
type ui struct {
	w     io.Writer
	color bool
	start time.Time
	mu    sync.Mutex
}

func newUI(f *os.File) *ui {
	return &ui{w: f, color: wantColor(f), start: time.Now()}
}

// wantColor tells whether f is a terminal that should get colour.
func wantColor(f *os.File) bool {
	if os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" || os.Getenv("TERM") == "" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

const (
	bold   = "1"
	dim    = "2"
	red    = "31"
	green  = "32"
	yellow = "33"
	cyan   = "36"
)

// paint wraps s in an SGR sequence when colour is on.
func (u *ui) paint(code, s string) string {
	if !u.color || s == "" {
		return s
	}
	return "\x1b[" + code + "m" + s + "\x1b[0m"
}

func (u *ui) elapsed() time.Duration { return time.Since(u.start) }

func (u *ui) printf(format string, args ...any) {
	u.mu.Lock()
	defer u.mu.Unlock()
	fmt.Fprintf(u.w, format, args...)
}

// stamp is the elapsed-time column: "[  12.3s] ", as wide as indent0.
func (u *ui) stamp() string { return fmt.Sprintf("[%6.1fs] ", u.elapsed().Seconds()) }

// step prints a step's progress line.
func (u *ui) step(i, of int, title string) {
	u.printf("\n%s%s\n", u.paint(dim, u.stamp()), u.paint(bold, fmt.Sprintf("step %d/%d  %s", i, of, title)))
}

// say prints a line of narration under a step.
func (u *ui) say(format string, args ...any) {
	u.printf("%s%s\n", indent0, fmt.Sprintf(format, args...))
}

// event prints a timestamped line under a step.
func (u *ui) event(format string, args ...any) {
	u.printf("%s%s\n", u.paint(dim, u.stamp()), fmt.Sprintf(format, args...))
}

// cmd prints a command as typed on a node: "n2$ docker ..." (Docker CLI) or "n2# ip ..." (a root shell
// in the node's namespaces).
func (u *ui) cmd(prompt string, args ...string) {
	u.printf("%s%s %s\n", indent0, u.paint(cyan, prompt), shellJoin(args))
}

// out prints command output (or a log excerpt) indented below its command.
func (u *ui) out(text string) {
	text = strings.TrimRight(text, "\n")
	if text == "" {
		return
	}
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		b.WriteString(indent1)
		b.WriteString(strings.TrimRight(line, " \t\r"))
		b.WriteByte('\n')
	}
	u.printf("%s", b.String())
}

// good and bad print a verdict line below a command: what the story expects, or a deviation from it.
func (u *ui) good(format string, args ...any) {
	u.printf("%s%s %s\n", indent1, u.paint(green, "=>"), fmt.Sprintf(format, args...))
}

func (u *ui) bad(format string, args ...any) {
	u.printf("%s%s %s\n", indent1, u.paint(red, "=>"), u.paint(red, fmt.Sprintf(format, args...)))
}

func (u *ui) expectedFailure(format string, args ...any) {
	u.printf("%s%s %s\n", indent1, u.paint(yellow, "=>"), fmt.Sprintf(format, args...))
}

const (
	indent0 = "          " // as wide as the "[  12.3s] " column
	indent1 = indent0 + "    "
)

// shellJoin quotes args as a POSIX shell would need them.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=,+@%") == "" {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// cell is one table cell: its text and an optional colour.
type cell struct {
	text, color string
}

// table prints rows aligned in columns, padding by the visible text (colour codes are added after
// padding, so alignment holds with and without colour).
func (u *ui) table(header []string, rows [][]cell) {
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = utf8.RuneCountInString(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if n := utf8.RuneCountInString(c.text); i < len(width) && n > width[i] {
				width[i] = n
			}
		}
	}
	line := func(cells []cell, headerRow bool) string {
		var b strings.Builder
		b.WriteString(indent0)
		for i, c := range cells {
			text := c.text
			if i < len(cells)-1 {
				text += strings.Repeat(" ", width[i]-utf8.RuneCountInString(c.text)+2)
			}
			switch {
			case headerRow:
				text = u.paint(bold, text)
			case c.color != "":
				// colour the text, not the padding
				text = u.paint(c.color, c.text) + text[len(c.text):]
			}
			b.WriteString(text)
		}
		return strings.TrimRight(b.String(), " ") + "\n"
	}
	hc := make([]cell, len(header))
	for i, h := range header {
		hc[i] = cell{text: h}
	}
	var b strings.Builder
	b.WriteString(line(hc, true))
	for _, r := range rows {
		b.WriteString(line(r, false))
	}
	u.printf("%s", b.String())
}

// logMessage renders a line of dockerd's log readably. dockerd logs in logrus' text format; a plugin's
// lines arrive wrapped in one of dockerd's (msg="<the plugin's own logrus line>" plugin=<id>). It returns
// the level and the innermost message, unquoted (with dockerd's error field appended, as swarmkit's task
// manager puts the cause there), and the plugin ID when the line is a plugin's.
func logMessage(line string) (level, msg, plugin string) {
	f := logFields(line)
	level, msg, plugin = f["level"], f["msg"], f["plugin"]
	if plugin != "" {
		if inner := logFields(msg); inner["msg"] != "" {
			level, msg = inner["level"], inner["msg"]
		}
	}
	if e := f["error"]; e != "" && plugin == "" {
		msg += ": " + e
	}
	if msg == "" {
		msg = line
	}
	return level, msg, plugin
}

// logFields parses a logrus text line: key=value pairs separated by spaces, values optionally in Go
// quotes. Parsing stops at the first thing that is not such a pair.
func logFields(line string) map[string]string {
	f := map[string]string{}
	for rest := strings.TrimSpace(line); rest != ""; rest = strings.TrimLeft(rest, " ") {
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 || strings.ContainsAny(rest[:eq], " \"") {
			break
		}
		key, val := rest[:eq], rest[eq+1:]
		if strings.HasPrefix(val, `"`) {
			q, err := strconv.QuotedPrefix(val)
			if err != nil {
				break
			}
			v, err := strconv.Unquote(q)
			if err != nil {
				break
			}
			f[key], rest = v, val[len(q):]
			continue
		}
		end := strings.IndexByte(val, ' ')
		if end < 0 {
			end = len(val)
		}
		f[key], rest = val[:end], val[end:]
	}
	return f
}
