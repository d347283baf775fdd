package tlsid

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/internal/leaktest"
)

func writeSVIDFiles(t *testing.T, dir string, svid *x509svid.SVID, roots ...*x509.Certificate) (cert, key, bundle string) {
	t.Helper()
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var bundlePEM []byte
	for _, r := range roots {
		bundlePEM = append(bundlePEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.Raw})...)
	}
	cert, key, bundle = filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid_key.pem"), filepath.Join(dir, "bundle.pem")
	for name, b := range map[string][]byte{cert: certPEM, key: keyPEM, bundle: bundlePEM} {
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, bundle
}

func TestFileSource(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	ca := newTestCA(t, "example.org", nil)
	first := ca.svid(t, "spiffe://example.org/files")
	cert, key, bundle := writeSVIDFiles(t, dir, first, ca.cert)

	src, err := NewFileSource(cert, key, bundle, WithPollInterval(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got := mustSVID(t, src); !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("the source does not serve the SVID of the files")
	}
	if b, err := src.GetX509BundleForTrustDomain(ca.td); err != nil || !b.HasX509Authority(ca.cert) {
		t.Fatalf("bundle: %v", err)
	}

	// A half-written update (new certificate, old key) is not applied.
	changed := src.Changed()
	second := ca.svid(t, "spiffe://example.org/files")
	certPEM, _, err := second.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cert, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if applied, err := src.Reload(); applied || !errors.Is(err, ErrBadFiles) {
		t.Fatalf("half-written files: applied %v, error %v; want ErrBadFiles and no change", applied, err)
	}
	if !errors.Is(src.Err(), ErrBadFiles) {
		t.Fatalf("Err() = %v, want ErrBadFiles", src.Err())
	}
	if got := mustSVID(t, src); !got.Certificates[0].Equal(first.Certificates[0]) {
		t.Fatal("a half-written update replaced the SVID")
	}

	// The full update is picked up by the poller, without a call.
	writeSVIDFiles(t, dir, second, ca.cert)
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("the poller did not apply the new files")
	}
	if got := mustSVID(t, src); !got.Certificates[0].Equal(second.Certificates[0]) {
		t.Fatal("the source does not serve the new SVID")
	}
	if src.Err() != nil {
		t.Fatalf("Err() = %v after a good reload", src.Err())
	}
	if applied, err := src.Reload(); applied || err != nil {
		t.Fatalf("unchanged files: applied %v, %v", applied, err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	_ = src.Close() // idempotent
}

func TestFileSourceBadFiles(t *testing.T) {
	leaktest.Check(t)
	ca := newTestCA(t, "example.org", nil)
	good := ca.svid(t, "spiffe://example.org/files")
	clock := newFakeClock()
	tests := []struct {
		name  string
		write func(dir string) (string, string, string)
		opts  []FileOption
	}{
		{"missing files", func(dir string) (string, string, string) {
			return filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
		}, nil},
		{"empty bundle", func(dir string) (string, string, string) { return writeSVIDFiles(t, dir, good) }, nil},
		{"bundle of garbage", func(dir string) (string, string, string) {
			c, k, b := writeSVIDFiles(t, dir, good, ca.cert)
			_ = os.WriteFile(b, []byte("not PEM"), 0o600)
			return c, k, b
		}, nil},
		{"leaf is a CA", func(dir string) (string, string, string) {
			leaf, key := ca.leaf(t, func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage = x509.KeyUsageDigitalSignature })
			return writeSVIDFiles(t, dir, &x509svid.SVID{ID: good.ID, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}, ca.cert)
		}, nil},
		{"expired SVID", func(dir string) (string, string, string) { return writeSVIDFiles(t, dir, good, ca.cert) },
			[]FileOption{WithClock(func() time.Time { return clock.Now().Add(2 * time.Hour) })}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, k, b := tt.write(t.TempDir())
			src, err := NewFileSource(c, k, b, tt.opts...)
			if !errors.Is(err, ErrBadFiles) {
				if src != nil {
					src.Close()
				}
				t.Fatalf("error %v, want ErrBadFiles", err)
			}
		})
	}
}
