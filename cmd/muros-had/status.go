package main

import (
	"fmt"
	"io"
)

// cmdStatus is not built yet; the issue that delivers it replaces this file.
func cmdStatus(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "muros-had status: not available in this build yet")
	return 1
}
