package main

import (
	"fmt"
	"io"
)

// cmdToken is not built yet; the issue that delivers it replaces this file.
func cmdToken(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "muros-had token: not available in this build yet")
	return 1
}
