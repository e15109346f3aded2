package config

import (
	"errors"
	"path"
	"strings"
)

// checkExcludeGlob checks a dbsync.exclude glob: a path.Match pattern,
// relative to the replicated directory (package dbsync matches it), in
// clean form. A glob that could never match (absolute, "..", an empty
// element) or that path.Match refuses would silently replicate what the
// operator meant to keep local.
func checkExcludeGlob(g string) error {
	switch {
	case g == "":
		return errors.New("empty glob")
	case strings.HasPrefix(g, "/"):
		return errors.New("absolute: globs match paths relative to the replicated directory (e.g. local/*.conf)")
	case strings.ContainsRune(g, 0):
		return errors.New("has a NUL byte")
	}
	for _, e := range strings.Split(g, "/") {
		switch e {
		case "":
			return errors.New("has an empty path element (a trailing or doubled slash)")
		case ".", "..":
			return errors.New("has a . or .. element: globs match clean paths below the replicated directory")
		}
	}
	if _, err := path.Match(g, ""); err != nil {
		return errors.New("not a valid glob (path.Match syntax: *, ?, [class], \\ escapes)")
	}
	return nil
}
