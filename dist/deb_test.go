package dist

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// buildDeb runs `make deb`'s script into a temporary directory and returns
// the package's path.
func buildDeb(t *testing.T) string {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command("bash", "scripts/deb.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "OUT="+out, "VERSION=1.2.3~test")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/deb.sh: %v\n%s", err, stderr.String())
	}
	deb := strings.TrimSpace(string(b))
	if want := filepath.Join(out, "muros-had_1.2.3~test_"+goarch(t)+".deb"); deb != want {
		t.Fatalf("deb.sh wrote %q, want %q", deb, want)
	}
	return deb
}

func goarch(t *testing.T) string {
	t.Helper()
	b, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	b, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, b)
	}
	return string(b)
}

// TestDebianPackage builds the package and checks what an operator gets:
// the binary in /usr/sbin, the unit, the man page, the example as a
// conffile the service refuses until it is filled in, maintainer scripts
// that start nothing on an invalid configuration, and lintian without
// errors.
func TestDebianPackage(t *testing.T) {
	deb := buildDeb(t)

	fields := map[string]string{}
	for _, f := range []string{"Package", "Version", "Architecture", "Section", "Depends"} {
		fields[f] = strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, f))
	}
	want := map[string]string{"Package": "muros-had", "Version": "1.2.3~test", "Architecture": goarch(t), "Section": "net", "Depends": "libc6"}
	if d := cmp.Diff(want, fields); d != "" {
		t.Errorf("control fields (-want +got):\n%s", d)
	}

	// Contents: path -> mode.
	got := map[string]string{}
	for _, l := range strings.Split(run(t, "dpkg-deb", "-c", deb), "\n") {
		f := strings.Fields(l)
		if len(f) < 6 || strings.HasSuffix(f[5], "/") {
			continue
		}
		got[strings.TrimPrefix(f[5], ".")] = f[0]
	}
	wantFiles := map[string]string{
		"/usr/sbin/muros-had":                    "-rwxr-xr-x",
		"/lib/systemd/system/muros-had.service":  "-rw-r--r--",
		"/etc/muros-had/muros-had.yaml":          "-rw-------",
		"/usr/share/doc/muros-had/copyright":     "-rw-r--r--",
		"/usr/share/doc/muros-had/changelog.gz":  "-rw-r--r--",
		"/usr/share/man/man8/muros-had.8.gz":     "-rw-r--r--",
		"/usr/share/lintian/overrides/muros-had": "-rw-r--r--",
	}
	if d := cmp.Diff(wantFiles, got); d != "" {
		t.Errorf("package contents (-want +got):\n%s", d)
	}

	ctl := t.TempDir()
	run(t, "dpkg-deb", "-e", deb, ctl)
	conffiles, err := os.ReadFile(filepath.Join(ctl, "conffiles"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Fields(string(conffiles)); !slices.Equal(got, []string{"/etc/muros-had/muros-had.yaml"}) {
		t.Errorf("conffiles %q", got)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if _, err := os.Stat(filepath.Join(ctl, s)); err != nil {
			t.Errorf("maintainer script %s: %v", s, err)
		}
	}

	// The packaged binary refuses the packaged example (its placeholder
	// password), which is what keeps postinst and ExecStartPre from
	// starting the service before the operator wrote a configuration.
	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	bin := filepath.Join(root, "usr/sbin/muros-had")
	if v := run(t, bin, "version"); v != "muros-had 1.2.3~test\n" {
		t.Errorf("version: %q", v)
	}
	check := exec.Command(bin, "check", "--config", filepath.Join(root, "etc/muros-had/muros-had.yaml"))
	out, err := check.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "password") {
		t.Errorf("the packaged example passes check (%v):\n%s", err, out)
	}
	u := unitDirectives(t, filepath.Join(root, "lib/systemd/system/muros-had.service"))
	for _, k := range []string{"ExecStartPre", "ExecStart"} {
		if len(u[k]) != 1 || !strings.HasPrefix(u[k][0], "/usr/sbin/muros-had ") {
			t.Errorf("unit %s = %q, want the packaged binary", k, u[k])
		}
	}

	// postinst on a fresh install with the example configuration starts
	// nothing: it stops at the check. Run with a PATH whose systemctl,
	// deb-systemd-helper and deb-systemd-invoke record their calls, and
	// where muros-had is the package's binary.
	script, err := os.ReadFile(filepath.Join(ctl, "postinst"))
	if err != nil {
		t.Fatal(err)
	}
	fake := t.TempDir()
	calls := filepath.Join(fake, "calls")
	for _, name := range []string{"systemctl", "deb-systemd-helper", "deb-systemd-invoke"} {
		body := "#!/bin/sh\necho " + name + " \"$@\" >>" + calls + "\n"
		if err := os.WriteFile(filepath.Join(fake, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bin, filepath.Join(fake, "muros-had")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		config string
		starts bool
	}{
		{"example configuration", filepath.Join(root, "etc/muros-had/muros-had.yaml"), false},
		{"valid configuration", "../config/testdata/example.yaml", true},
	} {
		t.Run("postinst "+tc.name, func(t *testing.T) {
			os.Remove(calls)
			s := strings.NewReplacer("/etc/muros-had/muros-had.yaml", tc.config, "/run/systemd/system", fake).Replace(string(script))
			cmd := exec.Command("sh", "-c", s, "postinst", "configure", "")
			cmd.Env = append(os.Environ(), "PATH="+fake+":"+os.Getenv("PATH"))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("postinst: %v\n%s", err, out)
			}
			b, _ := os.ReadFile(calls)
			started := strings.Contains(string(b), "deb-systemd-invoke start muros-had.service")
			if started != tc.starts {
				t.Errorf("started %v, want %v; calls:\n%s\noutput:\n%s", started, tc.starts, b, out)
			}
		})
	}

	// lintian: no errors (warnings are reported, not fatal).
	if _, err := exec.LookPath("lintian"); err != nil {
		t.Fatal("lintian is not installed (scripts/install-deps.sh installs it)")
	}
	cmd := exec.Command("lintian", "--fail-on", "error", "--tag-display-limit", "0", deb)
	out, err = cmd.CombinedOutput()
	t.Logf("lintian:\n%s", out)
	if err != nil {
		t.Errorf("lintian reports errors: %v", err)
	}
}
