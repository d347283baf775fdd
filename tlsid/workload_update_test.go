package tlsid

import (
	"crypto/x509"
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/weftmesh/weft/internal/leaktest"
)

// updatedSource is a WorkloadSource with no watch, fed updates by hand.
// A real SPIRE agent only sends valid SVIDs, so the updates weft must
// refuse are made here; the watch itself is tested against SPIRE in
// workload_test.go.
func updatedSource(want spiffeid.ID) *WorkloadSource {
	return &WorkloadSource{want: want, first: make(chan struct{})}
}

// TestWorkloadSourceUpdates applies a good update, then bad ones that
// must leave it in place, whole, with the reason in Err.
func TestWorkloadSourceUpdates(t *testing.T) {
	leaktest.Check(t)
	ca := newTestCA(t, "example.org", nil)
	other := newTestCA(t, "other.org", nil)
	webID := spiffeid.RequireFromString("spiffe://example.org/web")
	web := ca.svid(t, webID.String())
	api := ca.svid(t, "spiffe://example.org/api")
	noKeyUsage, key := ca.leaf(t, func(c *x509.Certificate) { c.KeyUsage = 0; c.URIs = web.Certificates[0].URIs })
	bad := &x509svid.SVID{ID: webID, Certificates: []*x509.Certificate{noKeyUsage}, PrivateKey: key}
	both := x509bundle.NewSet(ca.bundle(), other.bundle())

	src := updatedSource(webID)
	changed := src.Changed()
	if err := src.apply(&workloadapi.X509Context{SVIDs: []*x509svid.SVID{api, web}, Bundles: both}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire on an update")
	}
	if got, _ := src.GetX509SVID(); got != web {
		t.Fatalf("serves %s, want the SVID of %s", got.ID, webID)
	}
	if b, err := src.GetX509BundleForTrustDomain(other.td); err != nil || b == nil {
		t.Fatalf("federated bundle: %v", err)
	}
	if _, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("third.org")); !errors.Is(err, ErrNoBundle) {
		t.Fatalf("unknown trust domain: %v", err)
	}

	for _, tc := range []struct {
		name string
		ctx  *workloadapi.X509Context
		want error
	}{
		{"nil update", nil, ErrWorkloadAPI},
		{"no SVIDs", &workloadapi.X509Context{Bundles: both}, ErrWorkloadAPI},
		{"wanted ID missing", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{api}, Bundles: both}, ErrWorkloadAPI},
		{"nil SVID", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{nil}, Bundles: both}, ErrWorkloadAPI},
		{"SVID without key", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{{ID: webID, Certificates: web.Certificates}}, Bundles: both}, ErrNoSVID},
		{"leaf breaks the SVID rules", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{bad}, Bundles: both}, ErrBadSVID},
		{"no bundles", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{web}}, ErrNoBundle},
		{"no bundle of its own domain", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{web}, Bundles: x509bundle.NewSet(other.bundle())}, ErrNoBundle},
		{"empty bundle of its own domain", &workloadapi.X509Context{SVIDs: []*x509svid.SVID{web}, Bundles: x509bundle.NewSet(x509bundle.New(ca.td))}, ErrNoBundle},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := src.Updates()
			changed := src.Changed()
			err := src.apply(tc.ctx)
			if !errors.Is(err, ErrWorkloadAPI) || !errors.Is(err, tc.want) {
				t.Fatalf("apply = %v, want an error wrapping ErrWorkloadAPI and %v", err, tc.want)
			}
			if got, _ := src.GetX509SVID(); got != web || src.Bundles() != both || src.Updates() != before {
				t.Fatal("a refused update changed the source")
			}
			select {
			case <-changed:
				t.Fatal("Changed fired for a refused update")
			default:
			}
		})
	}
}

// BenchmarkWorkloadSource measures what every handshake asks of the
// source: its SVID and the bundle of the peer's trust domain.
func BenchmarkWorkloadSource(b *testing.B) {
	ca := newTestCA(b, "example.org", nil)
	web := ca.svid(b, "spiffe://example.org/web")
	src := updatedSource(spiffeid.ID{})
	if err := src.apply(&workloadapi.X509Context{SVIDs: []*x509svid.SVID{web}, Bundles: x509bundle.NewSet(ca.bundle())}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := src.GetX509SVID(); err != nil {
				b.Fatal(err)
			}
			if _, err := src.GetX509BundleForTrustDomain(ca.td); err != nil {
				b.Fatal(err)
			}
		}
	})
}
