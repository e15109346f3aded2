package config

import (
	"regexp"
	"slices"
	"strings"
)

// The replicated-path rules written again, brute force over path
// components and independent of package replpath, as the reference
// FuzzParse holds Parse to.

// refComponents splits an absolute clean path into its components; ok is
// false for anything else, and for "/".
func refComponents(p string) ([]string, bool) {
	if !strings.HasPrefix(p, "/") {
		return nil, false
	}
	parts := strings.Split(p[1:], "/")
	for _, s := range parts {
		if s == "" || s == "." || s == ".." {
			return nil, false
		}
	}
	return parts, true
}

// refUnder reports whether a is b or lies inside it, component by component.
func refUnder(a, b []string) bool {
	return len(a) >= len(b) && slices.Equal(a[:len(b)], b)
}

var refNameRun = regexp.MustCompile(`[^a-z0-9._-]+`)

// refName is the wire name: the last component, lower-cased, each run of
// other characters a "-", trimmed of "-"; "" when unusable.
func refName(p string) string {
	last := p[strings.LastIndexByte(p, '/')+1:]
	n := strings.Trim(refNameRun.ReplaceAllString(strings.ToLower(last), "-"), "-")
	if n == "." || n == ".." {
		return ""
	}
	return n
}

// refPathProblems lists why c's replicated paths break the rules, for a
// configuration file at file (absolute), one reason per rule broken.
func refPathProblems(c *Config, file string) []string {
	type own struct {
		path   string
		inside bool // nothing may lie inside it either
	}
	dir := file[:strings.LastIndexByte(file, '/')]
	owns := []own{
		{c.StateDir, true}, {c.RunDir, true}, {"/etc/muros-had", true},
		{dir, false}, {file, false},
		{c.DBSync.TLS.Cert, false}, {c.DBSync.TLS.Key, false}, {c.DBSync.JWT.SecretFile, false},
	}
	if strings.HasPrefix(c.Status.Listen, "/") {
		owns = append(owns, own{c.Status.Listen, false})
	}
	var out []string
	var good [][]string
	var names []string
	for _, p := range c.DBSync.Paths {
		comps, ok := refComponents(p)
		if !ok {
			out = append(out, p+": not absolute and clean, or /")
			continue
		}
		name := refName(p)
		if name == "" {
			out = append(out, p+": no wire name")
			continue
		}
		for _, o := range owns {
			oc, ok := refComponents(o.path)
			if !ok {
				continue
			}
			if refUnder(oc, comps) {
				out = append(out, p+" covers "+o.path)
			}
			if o.inside && refUnder(comps, oc) {
				out = append(out, p+" is inside "+o.path)
			}
		}
		for k, g := range good {
			if refUnder(comps, g) || refUnder(g, comps) {
				out = append(out, p+" overlaps another path")
			}
			if names[k] == name {
				out = append(out, p+" repeats the wire name "+name)
			}
		}
		good = append(good, comps)
		names = append(names, name)
	}
	return out
}
