package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/muros/muros-had/config"
	"github.com/muros/muros-had/internal/replicas"
	"github.com/muros/muros-had/peerlink"
)

// DefaultPairPort is the pairing listener's port, beside the DB sync's
// 7443 (which a running daemon holds).
const DefaultPairPort = 7444

// cmdPair pairs this node with its peer (package peerlink, "Pairing"): run
// without --code it shows a one-time code and waits for the peer; with
// --code it joins the peer that shows it. Both ask the operator to confirm
// both certificates before anything is written.
func cmdPair(args []string, stdout, stderr io.Writer) int {
	return runPair(context.Background(), args, os.Stdin, stdout, stderr)
}

func runPair(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("pair", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "/etc/muros-had/muros-had.yaml", "configuration `file`")
	codeArg := fs.String("code", "", "the `code` the other node shows (this node joins it)")
	port := fs.Int("port", DefaultPairPort, "pairing `port` (the listener's, on its dbsync.listen address)")
	timeout := fs.Duration("timeout", 5*time.Minute, "how long the code is valid and the listener waits; the joiner's whole exchange")
	yes := fs.Bool("yes", false, "confirm without asking (scripts): needs --peer-fingerprint")
	expect := fs.String("peer-fingerprint", "", "the peer's certificate `SHA-256` (its `muros-had fingerprint`): any other is refused")
	force := fs.Bool("force", false, "replace a pairing with another box (a pin in the pin file)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "muros-had pair: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *port < 1 || *port > 65535 || *timeout <= 0 || *timeout > time.Hour {
		fmt.Fprintln(stderr, "muros-had pair: --port 1..65535, --timeout in (0, 1h]")
		return 2
	}
	var expected string
	if *expect != "" {
		fp, err := peerlink.NormalizeFingerprint(strings.ReplaceAll(*expect, " ", ""))
		if err != nil {
			fmt.Fprintf(stderr, "muros-had pair: --peer-fingerprint: %v\n", err)
			return 2
		}
		expected = fp
	}
	if *yes && expected == "" {
		fmt.Fprintln(stderr, "muros-had pair: --yes confirms without a person comparing the fingerprints: give the peer's with --peer-fingerprint")
		return 2
	}
	var code peerlink.PairCode
	if *codeArg != "" {
		var err error
		if code, err = peerlink.ParsePairCode(*codeArg); err != nil {
			fmt.Fprintf(stderr, "muros-had pair: --code: %v: check it against the other node's screen\n", err)
			return 2
		}
	}
	// The pairing needs the names, paths and peer, not the password: a
	// file whose password is still the example's can be paired first.
	cfg, err := config.LoadForClient(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	id, err := peerlink.LoadIdentity(replicas.IdentityFiles(cfg), cfg.DBSync.JWT.Issuer)
	if err != nil {
		fmt.Fprintf(stderr, "muros-had pair: dbsync identity: %v\n", err)
		return 1
	}
	files := peerlink.PairFiles{Pin: cfg.PeerPinFile(), Secret: cfg.DBSync.JWT.SecretFile}
	pc := peerlink.PairConfig{
		Identity: id,
		Names:    peerlink.PairNames{Node: cfg.DBSync.JWT.Issuer, Peer: cfg.DBSync.JWT.Audience, Alg: cfg.DBSync.JWT.Algorithm},
		Peer:     cfg.Peer,
		Current: peerlink.CurrentPin{
			Pin:        hex.EncodeToString(cfg.DBSync.TLS.PeerSHA256),
			FromConfig: cfg.DBSync.TLS.PeerSHA256 != nil && cfg.DBSync.TLS.PeerSHA256File == "",
		},
		Force:      *force,
		ExpectPeer: expected,
		Confirm:    confirmer(stdin, stdout, *yes),
		Write:      files.Write,
		Log:        slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	fmt.Fprintf(stdout, "This node: %s, certificate %s\n", pc.Names.Node, peerlink.FormatFingerprint(id.Fingerprint))
	var res peerlink.PairResult
	if code.IsZero() {
		res, err = listenPair(ctx, cfg, pc, *port, *timeout, stdout)
	} else {
		addr := net.JoinHostPort(cfg.Peer.String(), strconv.Itoa(*port))
		fmt.Fprintf(stdout, "Joining the peer at %s\n", addr)
		res, err = peerlink.Join(ctx, pc, code, func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		})
	}
	if err != nil {
		fmt.Fprintf(stderr, "muros-had pair: %v\n", explain(err))
		fmt.Fprintln(stderr, "muros-had pair: nothing was written on this node")
		return 1
	}
	fmt.Fprintf(stdout, "Paired with %s (certificate %s).\nWrote the pin %s and the JWT secret %s.\n",
		res.Peer.Node, peerlink.FormatFingerprint(res.PeerFingerprint), files.Pin, files.Secret)
	if cfg.DBSync.TLS.PeerSHA256File == "" && cfg.DBSync.TLS.PeerSHA256 != nil {
		fmt.Fprintln(stdout, "dbsync.tls.peer_sha256 in the configuration file pins the same certificate; the pin file is used once that key is removed.")
	}
	if !res.PeerWrote {
		fmt.Fprintln(stderr, "muros-had pair: the peer did not confirm that it wrote its files: check its screen, and pair again on both if it failed")
	}
	fmt.Fprintln(stdout, "Start the daemon, or restart it if it runs (a reload does not re-read the JWT secret): systemctl restart muros-had")
	return 0
}

// listenPair shows a new code and waits on the pairing port.
func listenPair(ctx context.Context, cfg *config.Config, pc peerlink.PairConfig, port int, ttl time.Duration, stdout io.Writer) (peerlink.PairResult, error) {
	code, err := peerlink.NewPairCode(rand.Reader)
	if err != nil {
		return peerlink.PairResult{}, err
	}
	host, _, err := net.SplitHostPort(cfg.DBSync.Listen)
	if err != nil {
		host = ""
	}
	addr := net.JoinHostPort(host, strconv.Itoa(port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return peerlink.PairResult{}, fmt.Errorf("pairing listener: %w", err)
	}
	l, err := peerlink.NewPairListener(pc, code, ttl)
	if err != nil {
		ln.Close()
		return peerlink.PairResult{}, err
	}
	fmt.Fprintf(stdout, "On the peer (%s), within %s, run:\n\n    muros-had pair --code %s\n\nWaiting on %s for %s...\n", cfg.Peer, ttl, code, addr, cfg.Peer)
	res, err := l.Serve(ctx, ln)
	if counts := l.Rejected(); len(counts) > 0 {
		fmt.Fprintf(stdout, "Refused attempts: %s\n", formatCounts(counts))
	}
	return res, err
}

func formatCounts(m map[string]uint64) string {
	var parts []string
	for _, k := range []string{peerlink.PairWrongSource, peerlink.PairRateLimited, peerlink.PairHandshake, peerlink.PairMalformed,
		peerlink.PairWrongCode, peerlink.PairCodeVoid, peerlink.PairFingerprint, peerlink.PairNamesMismatch, peerlink.PairPairedElsewhere} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}

// confirmer shows both fingerprints and asks for "yes" on stdin (or
// confirms at once with --yes, the expected fingerprint having been
// checked by then).
func confirmer(stdin io.Reader, stdout io.Writer, yes bool) func(context.Context, peerlink.PairSummary) (bool, error) {
	return func(ctx context.Context, s peerlink.PairSummary) (bool, error) {
		fmt.Fprintf(stdout, "\nBoth nodes must show these two certificates:\n  this node  %-20s %s\n  peer       %-20s %s  at %s\n",
			s.Self.Node, peerlink.FormatFingerprint(s.SelfFingerprint), s.Peer.Node, peerlink.FormatFingerprint(s.PeerFingerprint), s.PeerAddr.Addr())
		if yes {
			fmt.Fprintln(stdout, "Confirmed by --yes with --peer-fingerprint.")
			return true, nil
		}
		fmt.Fprint(stdout, "Pair with this peer? Type yes: ")
		line := make(chan string, 1)
		// The read cannot be interrupted: if the peer gives up first the
		// process exits with it.
		go func() {
			s, _ := bufio.NewReader(stdin).ReadString('\n')
			line <- s
		}()
		select {
		case l := <-line:
			ans := strings.ToLower(strings.TrimSpace(l))
			return ans == "yes" || ans == "y", nil
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// explain turns a refusal into what the operator does next.
func explain(err error) string {
	var pe *peerlink.PairError
	if !errors.As(err, &pe) {
		return err.Error()
	}
	hint := map[string]string{
		peerlink.PairWrongCode:       "the code does not match: type it again from the other node's screen (three wrong codes void it)",
		peerlink.PairCodeVoid:        "the code is void: run muros-had pair again on the other node for a new one",
		peerlink.PairCodeExpired:     "the code expired: run muros-had pair again on the other node for a new one",
		peerlink.PairPeerProof:       "the box at the peer address does not know this code: it is not the node that shows it; check peer: in the configuration and the network",
		peerlink.PairFingerprint:     "the peer's certificate is not the one given with --peer-fingerprint",
		peerlink.PairNamesMismatch:   "the two configurations do not describe a pair: one master and one backup, dbsync.jwt issuer/audience mirrored, the same algorithm",
		peerlink.PairPairedElsewhere: "already paired with another box",
		peerlink.PairDeclined:        "not confirmed",
		peerlink.PairWriteFailed:     "a node could not write its files",
		peerlink.PairHandshake:       "the listener closed the connection: it takes only its configured peer's address and waits a second after a failed attempt; check peer: on both and try again",
	}[pe.Reason]
	if hint == "" {
		return err.Error()
	}
	return err.Error() + "\n  " + hint
}
