package mesh

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/weftmesh/weft/tlsid"
)

// BenchmarkAccessHandler is the per-request cost of the HTTP access
// middleware: peer lookup, path canonicalization and a five-rule policy,
// for a canonical path (the common case) and one it must rewrite.
func BenchmarkAccessHandler(b *testing.B) {
	policy, err := tlsid.NewPolicy(
		tlsid.Rule{Peers: []string{"spiffe://example.org/web"}, Methods: []string{"GET", "HEAD"}, Paths: []string{"/orders"}},
		tlsid.Rule{Peers: []string{"spiffe://example.org/ns/prod/*"}, Methods: []string{"POST"}, Paths: []string{"/orders"}},
		tlsid.Rule{Peers: []string{"spiffe://partner.org"}, Paths: []string{"/public"}},
		tlsid.Rule{Paths: []string{"/healthz"}},
		tlsid.Rule{Deny: true, Paths: []string{"/orders/admin"}},
	)
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := newServerConfig([]ServerOption{WithAccessPolicy(policy)})
	if err != nil {
		b.Fatal(err)
	}
	h := accessHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), &cfg)
	w := httptest.NewRecorder()
	for _, path := range []string{"/healthz", "/a/../healthz"} {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.ServeHTTP(w, r)
			}
			if cfg.access.stats.Allowed() == 0 {
				b.Fatal("nothing was allowed")
			}
		})
	}
}
