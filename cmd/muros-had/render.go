package main

import (
	"fmt"
	"io"
)

// cmdRender is not built yet; the issue that delivers it replaces this file.
func cmdRender(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "muros-had render: not available in this build yet")
	return 1
}
