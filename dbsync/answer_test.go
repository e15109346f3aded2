package dbsync

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/muros/muros-had/peerlink"
)

// TestMasterRefusesBadAnswers: a master whose peer (a fake with b's
// certificate) answers hello or manifest with something no node sends
// stops there, counts the answer's reason and acts on nothing.
func TestMasterRefusesBadAnswers(t *testing.T) {
	good := string(encodeAnswer(t, fuzzManifestSeed(t)))
	hello := `{"node":"b","boot_id":"00","revision":1,"role":"backup"}`
	tests := []struct {
		name            string
		hello, manifest string
		reason          string
	}{
		{"hello role", `{"node":"b","role":"leader"}`, good, ReasonAnswerRole},
		{"hello not json", `<html>`, good, ReasonAnswerDecode},
		{"manifest path escapes", hello, `{"role":"backup","files":[{"path":"db/../../etc/shadow","size":1,"sha256":"` + fuzzManifestSeed(t).Files[0].SHA256 + `","mode":420}]}`, ReasonAnswerPath},
		{"manifest path twice", hello, `{"role":"backup","files":[],"deleted":[{"path":"db/a","rev":1},{"path":"db/a","rev":2}]}`, ReasonAnswerPath},
		{"manifest hash", hello, `{"role":"backup","files":[{"path":"db/a","size":1,"sha256":"AB","mode":420}]}`, ReasonAnswerFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln := newPipeListener()
			a, _ := healthPair(t, ln, "cluster-secret-cluster-secret-32")
			idB, err := EnsureIdentity(filepath.Join(filepath.Dir(a.cfg.StateDir), "b"), "b")
			if err != nil {
				t.Fatal(err)
			}
			mux := http.NewServeMux()
			answer := func(body string) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(body)) }
			}
			mux.Handle("GET "+PathHello, answer(tt.hello))
			mux.Handle("GET "+PathManifest, answer(tt.manifest))
			srv := &http.Server{Handler: mux}
			served := make(chan error, 1)
			go func() { served <- srv.Serve(tls.NewListener(ln, peerlink.ServerTLS(idB))) }()
			defer func() {
				srv.Close()
				<-served
				a.link.CloseIdleConnections()
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			st := &masterState{dirty: map[string]struct{}{}, needFull: true}
			err = a.syncOnce(ctx, st)
			var ae *AnswerError
			if !errors.As(err, &ae) || ae.Reason != tt.reason {
				t.Fatalf("syncOnce: %v, want an answer refused as %s", err, tt.reason)
			}
			if got := a.Status().Rejected[tt.reason]; got != 1 {
				t.Fatalf("%s counted %d times (all %v)", tt.reason, got, a.Status().Rejected)
			}
			if st.shipped != nil {
				t.Fatalf("the master took the refused manifest as the peer's state: %v", st.shipped)
			}
		})
	}
}
