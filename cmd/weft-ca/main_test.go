package main

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestIssueShared issues SVIDs for two workloads from one CA directory, as
// two runs of the command would, and checks that FileSources over the
// files verify each other.
func TestIssueShared(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	caDir := filepath.Join(dir, "ca")
	var sources []*tlsid.FileSource
	for _, name := range []string{"web", "api"} {
		var out, errOut bytes.Buffer
		outDir := filepath.Join(dir, name)
		if code := run([]string{"-ca", caDir, "-out", outDir, "-ttl", "2h", "spiffe://example.org/" + name}, &out, &errOut); code != 0 {
			t.Fatalf("run %s: exit %d: %s", name, code, errOut.String())
		}
		if created := strings.Contains(out.String(), "created CA"); created != (name == "web") {
			t.Fatalf("run %s: output %q", name, out.String())
		}
		src, err := tlsid.NewFileSource(filepath.Join(outDir, tlsid.SVIDCertFile), filepath.Join(outDir, tlsid.SVIDKeyFile), filepath.Join(outDir, tlsid.SVIDBundleFile))
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		sources = append(sources, src)
		fi, err := os.Stat(filepath.Join(outDir, tlsid.SVIDKeyFile))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file: %v; want mode 0600", err)
		}
		svid, _ := src.GetX509SVID()
		if life := svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore); life < 2*time.Hour || life > 2*time.Hour+2*time.Minute {
			t.Fatalf("SVID lifetime %v, want about 2h", life)
		}
	}
	for i, src := range sources {
		peer, _ := sources[1-i].GetX509SVID()
		if _, err := tlsid.Verify(peer.Certificates, src, time.Time{}); err != nil {
			t.Fatalf("SVID of one run against the bundle of the other: %v", err)
		}
	}
}

func TestBadArguments(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	otherCA := filepath.Join(dir, "other")
	var sink bytes.Buffer
	if code := run([]string{"-ca", otherCA, "-out", filepath.Join(dir, "x"), "spiffe://other.org/w"}, &sink, &sink); code != 0 {
		t.Fatalf("setup: exit %d: %s", code, sink.String())
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no ID", nil, 2, "exactly one"},
		{"two IDs", []string{"spiffe://example.org/a", "spiffe://example.org/b"}, 2, "exactly one"},
		{"bad ID", []string{"spiffe://Example.org/a"}, 2, "malformed"},
		{"trust domain ID", []string{"spiffe://example.org"}, 2, "no path"},
		{"bad ttl", []string{"-ttl", "-1h", "spiffe://example.org/a"}, 2, "positive"},
		{"unknown flag", []string{"-nope", "spiffe://example.org/a"}, 2, "not defined"},
		{"CA of another trust domain", []string{"-ca", otherCA, "spiffe://example.org/a"}, 1, "wrong trust domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			var stdout, stderr bytes.Buffer
			args := append([]string{"-out", out}, tc.args...)
			if !strings.Contains(strings.Join(tc.args, " "), "-ca") {
				args = append([]string{"-ca", filepath.Join(dir, "ca-"+strings.ReplaceAll(tc.name, " ", "-"))}, args...)
			}
			if code := run(args, &stdout, &stderr); code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
			if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("a refused run wrote %s: %v", out, err)
			}
			if tc.code == 2 {
				if _, err := os.Stat(filepath.Join(dir, "ca-"+strings.ReplaceAll(tc.name, " ", "-"))); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("a refused run created a CA: %v", err)
				}
			}
		})
	}
}
