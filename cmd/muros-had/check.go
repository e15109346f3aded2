package main

import (
	"fmt"
	"io"
)

// cmdCheck is not built yet; the issue that delivers it replaces this file.
func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "muros-had check: not available in this build yet")
	return 1
}
