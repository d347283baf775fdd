package mesh

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

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

// BenchmarkAccessHandlerIntentions is the per-request cost of the HTTP
// access middleware deciding by compiled Consul intentions: an L7
// intention matched on path, method and a header.
func BenchmarkAccessHandlerIntentions(b *testing.B) {
	td := spiffeid.RequireTrustDomainFromString("dc0fa3e1-0000-4000-8000-000000000000.consul")
	in, err := tlsid.CompileIntentions(td, "api", []api.ConfigEntry{&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "api",
		Sources: []*api.SourceIntention{{Name: "web", Permissions: []*api.IntentionPermission{
			{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/admin", Methods: []string{http.MethodPost}}},
			{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/orders", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-tenant", Present: true}}}},
		}}}}})
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := newServerConfig([]ServerOption{WithAccessPolicy(in)})
	if err != nil {
		b.Fatal(err)
	}
	h := accessHandler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), &cfg)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/orders/42", nil)
	r.Header.Set("X-Tenant", "t1")
	peer := &connPeer{id: spiffeid.RequireFromString("spiffe://" + td.Name() + "/ns/default/dc/dc1/svc/web")}
	peer.once.Do(func() {}) // the ID is known, as after the handshake
	r = r.WithContext(context.WithValue(r.Context(), peerKey{}, peer))
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, r)
	}
	if cfg.access.stats.Allowed() == 0 {
		b.Fatal("nothing was allowed")
	}
}
