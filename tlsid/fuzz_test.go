package tlsid

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
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

// FuzzPolicyPath checks that path matching cannot be fooled: whatever the
// request path, a request allowed only under /public has a canonical path
// under /public, and one under /public/admin is denied. CleanPath is
// idempotent and leaves no empty, "." or ".." segment.
func FuzzPolicyPath(f *testing.F) {
	for _, s := range []string{"/public/x", "/public/../admin", "//public//admin", "/public/./admin/", "public", "", "/public/admin/../x", "/publicx"} {
		f.Add(s)
	}
	p, err := NewPolicy(
		Rule{Paths: []string{"/public"}},
		Rule{Deny: true, Paths: []string{"/public/admin"}},
	)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, reqPath string) {
		clean := CleanPath(reqPath)
		if CleanPath(clean) != clean || clean[0] != '/' {
			t.Fatalf("CleanPath(%q) = %q is not canonical", reqPath, clean)
		}
		for _, seg := range strings.Split(clean[1:], "/") {
			if clean != "/" && (seg == "" || seg == "." || seg == "..") {
				t.Fatalf("CleanPath(%q) = %q keeps segment %q", reqPath, clean, seg)
			}
		}
		err := p.AuthorizeRequest(context.Background(), Request{Method: "GET", Path: reqPath})
		under := func(pre string) bool { return clean == pre || strings.HasPrefix(clean, pre+"/") }
		switch {
		case err == nil && (!under("/public") || under("/public/admin")):
			t.Fatalf("%q (canonical %q) was allowed", reqPath, clean)
		case err != nil && !errors.Is(err, ErrUnauthorized):
			t.Fatalf("%q: untyped error %v", reqPath, err)
		case err != nil && under("/public") && !under("/public/admin"):
			t.Fatalf("%q (canonical %q) was denied", reqPath, clean)
		}
	})
}

// FuzzNewPolicy feeds arbitrary peer, method and path patterns to the rule
// compiler: no panic, and every refusal is ErrBadRule.
func FuzzNewPolicy(f *testing.F) {
	f.Add("spiffe://example.org/ns/*", "GET", "/a")
	f.Add("*", "", "/")
	f.Add("spiffe://EXAMPLE.org", "G ET", "/a/../b")
	f.Fuzz(func(t *testing.T, peer, method, path string) {
		_, err := NewPolicy(Rule{Peers: []string{peer}, Methods: []string{method}, Paths: []string{path}})
		if err != nil && !errors.Is(err, ErrBadRule) {
			t.Fatalf("untyped error: %v", err)
		}
	})
}

// FuzzParseDevCA feeds arbitrary certificate and key files to the dev CA
// loader: no panic, every refusal is typed, and what loads is a CA of a
// trust domain whose key matches. (LoadDevCA wraps every refusal of
// parseDevCA with ErrBadDevCA.)
func FuzzParseDevCA(f *testing.F) {
	ca, err := NewDevCA("example.org")
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	if err := ca.Save(dir); err != nil {
		f.Fatal(err)
	}
	certPEM, _ := os.ReadFile(filepath.Join(dir, DevCACertFile))
	keyPEM, _ := os.ReadFile(filepath.Join(dir, DevCAKeyFile))
	f.Add(certPEM, keyPEM)
	f.Add(keyPEM, certPEM)
	f.Add(certPEM, []byte("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"), keyPEM)
	now := time.Now()
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		td, root, key, err := parseDevCA(certPEM, keyPEM, now)
		if err != nil {
			if root != nil || key != nil || !td.IsZero() {
				t.Fatalf("refused with %v but returned part of a CA", err)
			}
			return
		}
		if td.IsZero() || !root.IsCA || !key.PublicKey.Equal(root.PublicKey) {
			t.Fatalf("accepted %s, CA %v, matching key %v", td, root.IsCA, key.PublicKey.Equal(root.PublicKey))
		}
	})
}

// FuzzCompileIntentions checks that compiling an L7 permission from any
// path, method and header match never panics, that every error is typed
// and names its field, and that what compiles decides any request
// without panicking, with a deny (ErrUnauthorized) or an allow.
func FuzzCompileIntentions(f *testing.F) {
	for _, s := range [][6]string{
		{"/admin", "", "", "POST", "x-env", "prod"},
		{"", "/v[0-9]+/items", "", "GET", "x-env", "p.*"},
		{"", "([", "", "G T", "", ""},
		{"", "", "/exact", "", ":authority", "api"},
		{"", `(?i)/A\z`, "", "", "x", `(?=a)`},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5], "/admin/x", "POST", "prod")
	}
	// Requests crafted against deny permissions: a decoded newline
	// against ".*", a lower-case method, a trailing dot segment, a
	// request without a path (CONNECT) or with "*", a binary header.
	for _, s := range [][9]string{
		{"", "/admin/.*", "", "", "", "", "/admin/\nx", "GET", ""},
		{"", "", "", "DELETE", "", "", "/items/1", "delete", ""},
		{"/secret/", "", "", "", "", "", "/secret/x/..", "GET", ""},
		{"", ".*", "", "", "", "", "", "CONNECT", ""},
		{"", "", "*", "OPTIONS", "", "", "*", "OPTIONS", ""},
		{"", "", "", "", "x-ticket-bin", "c3.*", "/p.S/M", "POST", "stolen"},
		{"", "", "", "", "x-debug", "1", "/", "GET", " 1\t"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8])
	}
	f.Fuzz(func(t *testing.T, prefix, regex, exact, method, header, headerRegex, reqPath, reqMethod, reqHeader string) {
		h := api.IntentionHTTPPermission{PathPrefix: prefix, PathRegex: regex, PathExact: exact}
		if method != "" {
			h.Methods = []string{method}
		}
		if header != "" {
			h.Header = []api.IntentionHTTPHeaderPermission{{Name: header, Regex: headerRegex}}
		}
		entry := intentionsEntry("api", l7("web", perm(denyI, h), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})))
		in, err := CompileIntentions(consulTD, "api", []api.ConfigEntry{entry})
		if err != nil {
			if !errors.Is(err, ErrBadIntention) || !strings.Contains(err.Error(), "Sources[web].Permissions[0]") {
				t.Fatalf("untyped or unplaced error: %v", err)
			}
			return
		}
		r := Request{Peer: consulID("web"), Method: reqMethod, Path: reqPath, Header: http.Header{http.CanonicalHeaderKey(header): {reqHeader}}}
		if err := in.AuthorizeRequest(context.Background(), r); err != nil && !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("decision error %v is not a denial", err)
		}
	})
}
