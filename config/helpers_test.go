package config

import (
	"encoding/json"
	"strconv"
)

func strconvItoa(i int) string { return strconv.Itoa(i) }

// dump renders a Config as indented JSON for golden files.
func dump(c *Config) string {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "error: " + err.Error()
	}
	return string(b) + "\n"
}
