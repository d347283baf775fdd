package tlsid

import (
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/weftmesh/weft/internal/leaktest"
)

// go-spiffe's own sources are weft sources as they are.
var (
	_ Source       = (*workloadapi.X509Source)(nil)
	_ SVIDSource   = (*x509svid.SVID)(nil)
	_ BundleSource = (*x509bundle.Bundle)(nil)
	_ BundleSource = (*x509bundle.Set)(nil)
)

// TestJoinStaticSVID makes sources of a bare SVID and bundle set, with
// and without rotation notices, and uses them for mutual TLS.
func TestJoinStaticSVID(t *testing.T) {
	leaktest.Check(t)
	ca, srv, _ := devPair(t)
	svid, err := ca.Issue(spiffeid.RequireFromString("spiffe://example.org/static"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewDevCA("other.org")
	if err != nil {
		t.Fatal(err)
	}
	set := x509bundle.NewSet(ca.Bundle(), other.Bundle())

	static, err := Join(svid, set)
	if err != nil {
		t.Fatal(err)
	}
	if Changed(static) != nil {
		t.Fatal("a source of a fixed SVID and a fixed set announces changes")
	}
	s, c := configs(t, srv, static, AuthorizeID(svid.ID), AuthorizeID(srv.ID()))
	if res := dial(t, s, c); res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("static SVID as client: server %v, client %v", res.serverErr, res.clientErr)
	}

	// The rotation notice comes from the SVID source when it has one, else
	// from the bundle source.
	for _, tc := range []struct {
		name     string
		svids    SVIDSource
		bundles  BundleSource
		notifies bool
	}{
		{"svid source notifies", srv, set, true},
		{"bundle source notifies", svid, ca, true},
		{"neither notifies", svid, set, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := Join(tc.svids, tc.bundles)
			if err != nil {
				t.Fatal(err)
			}
			ch := Changed(j)
			if (ch != nil) != tc.notifies {
				t.Fatalf("Changed = %v, want a channel: %v", ch, tc.notifies)
			}
			if !tc.notifies {
				return
			}
			if err := ca.RotateRoot(0); err != nil {
				t.Fatal(err)
			}
			select {
			case <-ch:
			default:
				t.Fatal("Changed did not fire on a root rotation")
			}
		})
	}

	for _, tc := range []struct {
		name    string
		svids   SVIDSource
		bundles BundleSource
	}{{"nil svids", nil, set}, {"nil bundles", svid, nil}, {"both nil", nil, nil}} {
		if j, err := Join(tc.svids, tc.bundles); j != nil || !errors.Is(err, ErrNilSource) {
			t.Errorf("Join(%s) = %v, %v; want ErrNilSource", tc.name, j, err)
		}
	}
	if Changed(nil) != nil {
		t.Error("Changed(nil) is not nil")
	}
}
