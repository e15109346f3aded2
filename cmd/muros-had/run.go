package main

import (
	"fmt"
	"io"
)

// cmdRun is not built yet; the issue that delivers it replaces this file.
func cmdRun(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "muros-had run: not available in this build yet")
	return 1
}
