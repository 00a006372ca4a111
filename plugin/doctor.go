package main

import (
	"io"

	vxdoctor "github.com/vxsafe/overlay/doctor"
)

// doctor is `vxsafe doctor ...`: see package doctor. It returns the exit status.
func doctor(args []string, stdout, stderr io.Writer, stdin io.Reader) int {
	return vxdoctor.Run(args, stdout, stderr, stdin)
}
