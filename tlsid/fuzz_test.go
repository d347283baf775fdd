package tlsid

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
)

// FuzzParseID checks that ID parsing never panics, that every error is
// typed, and that what parses round-trips and keeps weft's limits.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org/w", "spiffe://example.org", "SPIFFE://example.org/w", "spiffe://example.org/a/../b",
		"spiffe://example.org:1/w", "spiffe://u@example.org/w", "spiffe://example.org/w?q#f", "spiffe://example.org/%41",
		"spiffe://example.org/" + strings.Repeat("a", 2100),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		if err != nil {
			if !errors.Is(err, ErrBadID) && !errors.Is(err, ErrIDTooLong) {
				t.Fatalf("ParseID(%q): untyped error %v", s, err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("ParseID(%q) = %q", s, id)
		}
		if len(s) > MaxIDLength || strings.ContainsAny(s, "?#%@\\") || strings.ContainsAny(id.TrustDomain().Name(), ":ABCDEFGHIJKLMNOPQRSTUVWXYZ") ||
			strings.Contains(s, "//"+id.TrustDomain().Name()+"/") && strings.Contains(id.Path(), "//") {
			t.Fatalf("ParseID(%q) accepted a forbidden ID", s)
		}
		_, werr := ParseWorkloadID(s)
		if (id.Path() == "") != errors.Is(werr, ErrRootPathID) {
			t.Fatalf("ParseWorkloadID(%q) = %v", s, werr)
		}
	})
}

// FuzzVerifyDER feeds arbitrary DER chains to the verifier: no panic, and
// every refusal is typed. Seeds are valid and invalid SVID chains.
func FuzzVerifyDER(f *testing.F) {
	ca := newTestCA(f, "example.org", nil)
	inter := ca.intermediate(f, nil)
	leaf, _ := ca.leaf(f, nil)
	ileaf, _ := inter.leaf(f, nil)
	f.Add(leaf.Raw, []byte(nil))
	f.Add(ileaf.Raw, inter.cert.Raw)
	f.Add(ca.cert.Raw, []byte(nil))
	f.Add([]byte{0x30, 0x00}, []byte{0x30})
	bundles := x509bundle.NewSet(ca.bundle())
	at := time.Now()
	f.Fuzz(func(t *testing.T, a, b []byte) {
		raw := [][]byte{a}
		if len(b) > 0 {
			raw = append(raw, b)
		}
		id, err := ParseAndVerify(raw, bundles, at)
		if err != nil {
			for _, want := range []error{ErrNoPeerID, ErrBadSVID, ErrBadID, ErrIDTooLong, ErrRootPathID, ErrNoBundle, ErrUntrusted} {
				if errors.Is(err, want) {
					return
				}
			}
			t.Fatalf("untyped error: %v", err)
		}
		if id.Path() == "" || !id.MemberOf(ca.td) {
			t.Fatalf("verified an ID weft must refuse: %s", id)
		}
	})
}
