package main

import (
	"fmt"
	"io"
)

func doctor(args []string, stdout, stderr io.Writer, stdin io.Reader) int {
	fmt.Fprintln(stderr, "vxsafe doctor: not yet available")
	return 2
}
