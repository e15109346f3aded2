package dist

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// ReadUnit reads a systemd unit file (systemd.syntax(7), without line
// continuations) into key -> values, in file order (a key may repeat).
// Section headers, comments and blank lines are skipped. The tests of
// several packages check their needs against the packaged unit with it.
func ReadUnit(path string) (map[string][]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";") || strings.HasPrefix(l, "[") {
			continue
		}
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return nil, fmt.Errorf("%s: not a directive: %q", path, l)
		}
		out[k] = append(out[k], v)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}
