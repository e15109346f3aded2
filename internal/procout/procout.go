// Package procout keeps what a child program writes, bounded: the first N
// bytes of it, the rest read and dropped (so a chatty or crashing child,
// a Go panic dump of many kilobytes, never blocks on a full pipe nor
// grows the daemon), and the first line of it for a log line or an error.
// The programs the daemon runs (health checks, nft, the password
// stretch) report through it.
package procout

import (
	"bytes"
	"strings"
)

// Capture is an io.Writer that keeps the first N bytes written to it.
type Capture struct {
	N   int
	buf bytes.Buffer
}

// Write keeps what fits under N and reports every byte written.
func (c *Capture) Write(p []byte) (int, error) {
	if room := c.N - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// Bytes is what was kept (aliases the buffer until the next Write).
func (c *Capture) Bytes() []byte { return c.buf.Bytes() }

// FirstLine is the first non-empty line of what was kept, trimmed.
func (c *Capture) FirstLine() string { return FirstLine(c.buf.String()) }

// Clear overwrites what was kept (a secret) and empties the buffer.
func (c *Capture) Clear() {
	clear(c.buf.Bytes())
	c.buf.Reset()
}

// FirstLine is the first non-empty line of s, trimmed.
func FirstLine(s string) string {
	s = strings.TrimSpace(s)
	s, _, _ = strings.Cut(s, "\n")
	return strings.TrimSpace(s)
}
