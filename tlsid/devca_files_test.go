package tlsid

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/leaktest"
)

func TestDevCASaveLoad(t *testing.T) {
	leaktest.Check(t)
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := NewDevCA("example.org", WithSVIDTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{DevCAKeyFile: 0o600, DevCACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), want)
		}
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("CA directory: %v, %v; want mode 0700", fi.Mode().Perm(), err)
	}
	loaded, err := LoadDevCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.TrustDomain() != ca.TrustDomain() {
		t.Fatalf("loaded trust domain %s, want %s", loaded.TrustDomain(), ca.TrustDomain())
	}
	if !loaded.Bundle().Equal(ca.Bundle()) {
		t.Fatal("the loaded CA's bundle differs from the saved one's")
	}
	// SVIDs of each verify against the other's bundle, and the two
	// mutually authenticate over TLS.
	srv, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/server"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := loaded.Source(spiffeid.RequireFromString("spiffe://example.org/client"))
	if err != nil {
		t.Fatal(err)
	}
	s, c := configs(t, srv, cli, AuthorizeID(cli.ID()), AuthorizeID(srv.ID()))
	if res := dial(t, s, c); res.serverErr != nil || res.clientErr != nil || res.got != "hello" {
		t.Fatalf("handshake between saved and loaded CA: server %v, client %v", res.serverErr, res.clientErr)
	}
}

// TestDevCAOtherProcess saves a CA, has another process (this test
// binary, run again) load it and write an SVID into files, and checks
// that the SVID verifies against the first process's bundle and that a
// FileSource over those files talks mTLS with a source of this process.
func TestDevCAOtherProcess(t *testing.T) {
	leaktest.Check(t)
	if os.Getenv("WEFT_TEST_DEVCA_CHILD") != "" {
		t.Skip("in the child process")
	}
	dir := t.TempDir()
	ca, err := NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(filepath.Join(dir, "ca")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestDevCAChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "WEFT_TEST_DEVCA_CHILD="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "out")
	files, err := NewFileSource(filepath.Join(out, SVIDCertFile), filepath.Join(out, SVIDKeyFile), filepath.Join(out, SVIDBundleFile))
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	svid, _ := files.GetX509SVID()
	id, err := Verify(svid.Certificates, ca, time.Time{})
	if err != nil {
		t.Fatalf("the other process's SVID against this process's bundle: %v", err)
	}
	if id.String() != "spiffe://example.org/child" {
		t.Fatalf("the other process issued %s", id)
	}
	here, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/here"))
	if err != nil {
		t.Fatal(err)
	}
	s, c := configs(t, here, files, AuthorizeID(id), AuthorizeID(here.ID()))
	if res := dial(t, s, c); res.serverErr != nil || res.clientErr != nil || res.got != "hello" {
		t.Fatalf("handshake across processes: server %v, client %v", res.serverErr, res.clientErr)
	}
}

// TestDevCAChildProcess is the other process of TestDevCAOtherProcess; it
// does nothing unless that test runs it.
func TestDevCAChildProcess(t *testing.T) {
	leaktest.Check(t)
	dir := os.Getenv("WEFT_TEST_DEVCA_CHILD")
	if dir == "" {
		t.Skip("run by TestDevCAOtherProcess")
	}
	ca, err := LoadDevCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.Issue(spiffeid.RequireFromString("spiffe://example.org/child"))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteSVIDFiles(filepath.Join(dir, "out"), svid, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
}

func TestLoadDevCABad(t *testing.T) {
	leaktest.Check(t)
	good, err := NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	goodDir, otherDir := t.TempDir(), t.TempDir()
	if err := good.Save(goodDir); err != nil {
		t.Fatal(err)
	}
	if err := other.Save(otherDir); err != nil {
		t.Fatal(err)
	}
	read := func(dir, name string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	leaf, err := good.Issue(spiffeid.RequireFromString("spiffe://example.org/w"))
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, _, _ := leaf.Marshal()
	certPEM, keyPEM := read(goodDir, DevCACertFile), read(goodDir, DevCAKeyFile)
	for _, tc := range []struct {
		name       string
		cert, key  []byte // nil: no file
		opts       []DevCAOption
		notExist   bool
		wantLoaded bool
	}{
		{name: "good", cert: certPEM, key: keyPEM, wantLoaded: true},
		{name: "empty directory", notExist: true},
		{name: "no key", cert: certPEM},
		{name: "no certificate", key: keyPEM},
		{name: "key of another CA", cert: certPEM, key: read(otherDir, DevCAKeyFile)},
		{name: "leaf as root", cert: leafPEM, key: keyPEM},
		{name: "garbage", cert: []byte("not PEM"), key: keyPEM},
		{name: "key in the certificate file", cert: keyPEM, key: keyPEM},
		{name: "two certificates", cert: append(append([]byte{}, certPEM...), certPEM...), key: keyPEM},
		{name: "root expired", cert: certPEM, key: keyPEM, opts: []DevCAOption{WithClock(func() time.Time { return time.Now().Add(2 * devRootTTL) })}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, b := range map[string][]byte{DevCACertFile: tc.cert, DevCAKeyFile: tc.key} {
				if b != nil {
					if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			ca, err := LoadDevCA(dir, tc.opts...)
			if tc.wantLoaded {
				if err != nil || ca == nil {
					t.Fatalf("LoadDevCA: %v", err)
				}
				return
			}
			if ca != nil || !errors.Is(err, ErrBadDevCA) {
				t.Fatalf("LoadDevCA = %v, %v; want an error wrapping ErrBadDevCA", ca, err)
			}
			if errors.Is(err, fs.ErrNotExist) != tc.notExist {
				t.Fatalf("LoadDevCA error %v: wraps fs.ErrNotExist = %v, want %v", err, !tc.notExist, tc.notExist)
			}
		})
	}
}

func TestWriteSVIDFilesBad(t *testing.T) {
	leaktest.Check(t)
	ca, err := NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	svid, err := ca.Issue(spiffeid.RequireFromString("spiffe://example.org/w"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := WriteSVIDFiles(dir, nil, ca.Bundle()); !errors.Is(err, ErrNilSource) {
		t.Fatalf("nil SVID: %v", err)
	}
	if err := WriteSVIDFiles(dir, svid, nil); !errors.Is(err, ErrNilSource) {
		t.Fatalf("nil bundle: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("refused writes left %d files", len(entries))
	}
	// A file where the directory should be.
	blocked := filepath.Join(dir, "file")
	if err := os.WriteFile(blocked, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteSVIDFiles(blocked, svid, ca.Bundle()); err == nil {
		t.Fatal("writing into a file as directory succeeded")
	}
	if err := WriteSVIDFiles(filepath.Join(dir, "ok"), svid, ca.Bundle()); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "ok", SVIDKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v; want mode 0600", fi, err)
	}
}
