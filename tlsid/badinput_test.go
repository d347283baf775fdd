package tlsid

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/leaktest"
)

// TestBadInputs is the table of inputs weft must refuse, each with a typed
// error and no panic.
func TestBadInputs(t *testing.T) {
	leaktest.Check(t)
	ca := newTestCA(t, "example.org", nil)
	other := newTestCA(t, "other.org", nil)
	bundles := x509bundle.NewSet(ca.bundle(), other.bundle())
	now := time.Now()

	parseID := func(s string) func() error {
		return func() error { _, err := ParseID(s); return err }
	}
	parseWorkload := func(s string) func() error {
		return func() error { _, err := ParseWorkloadID(s); return err }
	}
	// verifyLeaf verifies a leaf of ca changed by mod, at time at.
	verifyLeafAt := func(at time.Time, mod func(*x509.Certificate)) func() error {
		return func() error {
			leaf, _ := ca.leaf(t, mod)
			_, err := Verify([]*x509.Certificate{leaf}, bundles, at)
			return err
		}
	}
	verifyLeaf := func(mod func(*x509.Certificate)) func() error { return verifyLeafAt(now, mod) }
	uris := func(ss ...string) func(*x509.Certificate) {
		return func(c *x509.Certificate) {
			c.URIs = nil
			for _, s := range ss {
				c.URIs = append(c.URIs, mustURL(t, s))
			}
		}
	}
	viaIntermediate := func(mod func(*x509.Certificate)) func() error {
		return func() error {
			inter := ca.intermediate(t, mod)
			leaf, _ := inter.leaf(t, nil)
			_, err := Verify([]*x509.Certificate{leaf, inter.cert}, bundles, now)
			return err
		}
	}
	policyCheck := func(rules []Rule, peer, method, path string) func() error {
		return func() error {
			p, err := NewPolicy(rules...)
			if err != nil {
				return err
			}
			var id spiffeid.ID
			if peer != "" {
				id = spiffeid.RequireFromString(peer)
			}
			return p.AuthorizeRequest(context.Background(), Request{Peer: id, Method: method, Path: path})
		}
	}
	allowTD := []Rule{{Peers: []string{"spiffe://example.org"}}}
	nonCriticalKU := pkix.Extension{Id: oidKeyUsage, Critical: false, Value: mustASN1(t, asn1.BitString{Bytes: []byte{0x80}, BitLength: 1})}

	tests := []struct {
		name string
		run  func() error
		want error
	}{
		// SPIFFE IDs.
		{"empty ID", parseID(""), ErrBadID},
		{"uppercase scheme", parseID("SPIFFE://example.org/w"), ErrBadID},
		{"mixed-case scheme", parseID("Spiffe://example.org/w"), ErrBadID},
		{"uppercase trust domain", parseID("spiffe://Example.org/w"), ErrBadID},
		{"percent-encoded path", parseID("spiffe://example.org/w%20x"), ErrBadID},
		{"percent-encoded trust domain", parseID("spiffe://ex%41mple.org/w"), ErrBadID},
		{"empty segment", parseID("spiffe://example.org//w"), ErrBadID},
		{"dot segment", parseID("spiffe://example.org/./w"), ErrBadID},
		{"dot-dot segment", parseID("spiffe://example.org/a/../w"), ErrBadID},
		{"trailing dot-dot", parseID("spiffe://example.org/w/.."), ErrBadID},
		{"trailing slash", parseID("spiffe://example.org/w/"), ErrBadID},
		{"root with trailing slash", parseID("spiffe://example.org/"), ErrBadID},
		{"query", parseID("spiffe://example.org/w?x=1"), ErrBadID},
		{"fragment", parseID("spiffe://example.org/w#f"), ErrBadID},
		{"port", parseID("spiffe://example.org:8443/w"), ErrBadID},
		{"userinfo", parseID("spiffe://user@example.org/w"), ErrBadID},
		{"missing trust domain", parseID("spiffe:///w"), ErrBadID},
		{"wrong scheme", parseID("https://example.org/w"), ErrBadID},
		{"no authority", parseID("spiffe:example.org/w"), ErrBadID},
		{"space in path", parseID("spiffe://example.org/w x"), ErrBadID},
		{"ID over 2048 bytes", parseID("spiffe://example.org/" + strings.Repeat("a", MaxIDLength)), ErrIDTooLong},
		{"trust domain over 255 bytes", parseID("spiffe://" + strings.Repeat("a", 256) + "/w"), ErrIDTooLong},
		{"workload ID without path", parseWorkload("spiffe://example.org"), ErrRootPathID},
		{"zero ID as workload", func() error { return CheckWorkloadID(spiffeid.ID{}) }, ErrBadID},

		// X.509-SVID leaves.
		{"leaf CA=true", verifyLeaf(func(c *x509.Certificate) { c.IsCA = true; c.KeyUsage |= x509.KeyUsageCertSign }), ErrBadSVID},
		{"leaf CA=true without keyCertSign", verifyLeaf(func(c *x509.Certificate) { c.IsCA = true }), ErrBadSVID},
		{"leaf keyCertSign", verifyLeaf(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }), ErrBadSVID},
		{"leaf cRLSign", verifyLeaf(func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCRLSign }), ErrBadSVID},
		{"leaf without digitalSignature", verifyLeaf(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageKeyEncipherment }), ErrBadSVID},
		{"leaf without key usage", verifyLeaf(func(c *x509.Certificate) { c.KeyUsage = 0 }), ErrBadSVID},
		{"leaf key usage not critical", verifyLeaf(func(c *x509.Certificate) { c.ExtraExtensions = []pkix.Extension{nonCriticalKU} }), ErrBadSVID},
		{"leaf EKU serverAuth only", verifyLeaf(func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }), ErrBadSVID},
		{"leaf with no URI SAN", verifyLeaf(uris()), ErrBadSVID},
		{"leaf with two URI SANs", verifyLeaf(uris("spiffe://example.org/a", "spiffe://example.org/b")), ErrBadSVID},
		{"leaf with a non-SPIFFE URI", verifyLeaf(uris("https://example.org/w")), ErrBadID},
		{"leaf with a root-path ID", verifyLeaf(uris("spiffe://example.org")), ErrRootPathID},
		{"leaf with an uppercase trust domain", verifyLeaf(uris("spiffe://EXAMPLE.org/w")), ErrBadID},
		{"leaf expired", verifyLeafAt(now.Add(2*time.Hour), nil), ErrUntrusted},
		{"leaf not yet valid", verifyLeafAt(now.Add(-2*time.Hour), nil), ErrUntrusted},
		{"leaf signed by another trust domain's CA, both trusted", func() error {
			leaf, _ := other.leaf(t, uris("spiffe://example.org/w"))
			_, err := Verify([]*x509.Certificate{leaf}, bundles, now)
			return err
		}, ErrUntrusted},
		{"self-signed leaf", func() error {
			self := newTestCA(t, "example.org", func(c *x509.Certificate) {
				c.IsCA, c.KeyUsage, c.URIs = false, x509.KeyUsageDigitalSignature, []*url.URL{mustURL(t, "spiffe://example.org/w")}
			})
			_, err := Verify([]*x509.Certificate{self.cert}, bundles, now)
			return err
		}, ErrUntrusted},
		{"empty bundle", func() error {
			leaf, _ := ca.leaf(t, nil)
			_, err := Verify([]*x509.Certificate{leaf}, x509bundle.New(ca.td), now)
			return err
		}, ErrNoBundle},
		{"no bundle for the trust domain", func() error {
			leaf, _ := ca.leaf(t, nil)
			_, err := Verify([]*x509.Certificate{leaf}, x509bundle.NewSet(other.bundle()), now)
			return err
		}, ErrNoBundle},
		{"nil bundle source", func() error {
			leaf, _ := ca.leaf(t, nil)
			_, err := Verify([]*x509.Certificate{leaf}, nil, now)
			return err
		}, ErrNoBundle},
		{"no certificate (client sent none)", func() error { _, err := Verify(nil, bundles, now); return err }, ErrNoPeerID},
		{"nil certificate in chain", func() error { _, err := Verify([]*x509.Certificate{nil}, bundles, now); return err }, ErrBadSVID},
		{"garbage DER", func() error { _, err := ParseAndVerify([][]byte{{0x30, 0x03, 0x01}}, bundles, now); return err }, ErrBadSVID},
		{"intermediate with a path ID", viaIntermediate(func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "spiffe://example.org/ca")} }), ErrBadSVID},
		{"intermediate without keyCertSign", viaIntermediate(func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }), ErrUntrusted},
		{"intermediate not a CA", viaIntermediate(func(c *x509.Certificate) { c.IsCA = false; c.KeyUsage = x509.KeyUsageDigitalSignature }), ErrUntrusted},
		{"peer ID of a connection without certificates", func() error { _, err := PeerID(nil); return err }, ErrNoPeerID},

		// Authorization.
		{"trust domain rule vs example.orgi", policyCheck(allowTD, "spiffe://example.orgi/x", "GET", "/"), ErrUnauthorized},
		{"trust domain rule vs example.org.evil", policyCheck(allowTD, "spiffe://example.org.evil/x", "GET", "/"), ErrUnauthorized},
		{"member-of authorizer vs example.orgi", func() error {
			return AuthorizeMemberOf(ca.td)(spiffeid.RequireFromString("spiffe://example.orgi/x"))
		}, ErrUnauthorized},
		{"member-of authorizer vs example.org.evil", func() error {
			return AuthorizeMemberOf(ca.td)(spiffeid.RequireFromString("spiffe://example.org.evil/x"))
		}, ErrUnauthorized},
		{"exact authorizer vs longer ID", func() error {
			return AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/a"))(spiffeid.RequireFromString("spiffe://example.org/ab"))
		}, ErrUnauthorized},
		{"path-prefix rule vs sibling", policyCheck([]Rule{{Peers: []string{"spiffe://example.org/ns/*"}}}, "spiffe://example.org/nsx/y", "GET", "/"), ErrUnauthorized},
		{"no peer ID vs peer rule", policyCheck([]Rule{{Peers: []string{"*"}}}, "", "GET", "/"), ErrUnauthorized},
		{"dot-dot out of an allowed prefix", policyCheck([]Rule{{Paths: []string{"/public"}}}, "spiffe://example.org/w", "GET", "/public/../admin"), ErrUnauthorized},
		{"double slash into a denied prefix", policyCheck([]Rule{{Paths: []string{"/"}}, {Deny: true, Paths: []string{"/admin"}}}, "spiffe://example.org/w", "GET", "//admin"), ErrUnauthorized},
		{"deny wins over allow", policyCheck([]Rule{{Peers: []string{"*"}}, {Deny: true, Peers: []string{"spiffe://example.org/w"}}}, "spiffe://example.org/w", "GET", "/"), ErrUnauthorized},
		{"rule with an uppercase trust domain", policyCheck([]Rule{{Peers: []string{"spiffe://EXAMPLE.org"}}}, "", "GET", "/"), ErrBadRule},
		{"rule with a non-canonical path", policyCheck([]Rule{{Paths: []string{"/a/../admin"}}}, "", "GET", "/"), ErrBadRule},
		{"rule with a percent-encoded path", policyCheck([]Rule{{Paths: []string{"/a%2Fb"}}}, "", "GET", "/"), ErrBadRule},
		{"rule with a bad method", policyCheck([]Rule{{Methods: []string{"GE T"}}}, "", "GET", "/"), ErrBadRule},
		{"server config without a source", func() error { _, err := ServerConfig(nil, AuthorizeAny()); return err }, ErrNilSource},
		{"dev CA for an uppercase trust domain", func() error { _, err := NewDevCA("Example.org"); return err }, ErrBadID},
		{"dev CA issuing for another trust domain", func() error {
			dca, err := NewDevCA("example.org")
			if err != nil {
				return err
			}
			_, err = dca.Issue(spiffeid.RequireFromString("spiffe://other.org/w"))
			return err
		}, ErrWrongTrustDomain},
	}
	if len(tests) < 40 {
		t.Fatalf("the table has %d rows, want at least 40", len(tests))
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("panic: %v", r)
					}
				}()
				err = tt.run()
			}()
			if !errors.Is(err, tt.want) {
				t.Fatalf("error = %v, want one wrapping %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "tlsid: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func mustASN1(t *testing.T, v any) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
