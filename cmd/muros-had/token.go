package main

import (
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/replicas"
)

// cmdToken prints a short-lived bearer token that the peer's HTTPS listener
// accepts for GET /api/health:
//
//	curl -sk https://<peer-ip>:7443/api/health -H "Authorization: Bearer $(muros-had token)"
func cmdToken(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/muros-had/muros-had.yaml", "configuration `file`")
	ttl := fs.Duration("ttl", 5*time.Minute, "token lifetime")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// The JWT secret and names, not the password: a file run would
	// refuse for its password still yields a token.
	cfg, err := config.LoadForClient(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	tok, err := replicas.MintOperatorToken(cfg, *ttl)
	if err != nil {
		fmt.Fprintf(stderr, "muros-had token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// cmdFingerprint prints the SHA-256 fingerprint of this node's DB sync
// certificate (creating the identity on first use); the peer pins it.
func cmdFingerprint(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("fingerprint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/muros-had/muros-had.yaml", "configuration `file`")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.LoadForClient(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fp, err := replicas.Fingerprint(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "muros-had fingerprint: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, fp)
	return 0
}
