package main

import (
	"fmt"
	"io"
)

// cmdInspect is not built yet; the issue that delivers it replaces this file.
func cmdInspect(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "muros-had inspect: not available in this build yet")
	return 1
}
