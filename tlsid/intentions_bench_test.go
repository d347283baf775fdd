package tlsid

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/hashicorp/consul/api"
)

// BenchmarkIntentionsAuthorizeRequest is the per-request cost of the
// compiled intentions of a service with 50 sources: an L4 source, an L7
// source decided by its third permission (path regex, method, header), a
// wildcard source reached through the caller's name missing, and a
// caller of another trust domain; and the L7 request sent with a path in
// another form.
func BenchmarkIntentionsAuthorizeRequest(b *testing.B) {
	sources := []*api.SourceIntention{
		l4("db", allowI),
		l7("web",
			perm(denyI, api.IntentionHTTPPermission{PathPrefix: "/admin", Methods: []string{"POST"}}),
			perm(denyI, api.IntentionHTTPPermission{PathExact: "/debug"}),
			perm(allowI, api.IntentionHTTPPermission{PathRegex: "/v[0-9]+/orders(/[0-9]+)?", Methods: []string{"GET", "PUT"},
				Header: []api.IntentionHTTPHeaderPermission{{Name: "x-tenant", Prefix: "t-"}}}),
		),
		l4("*", denyI),
	}
	for i := range 47 {
		sources = append(sources, l4(fmt.Sprintf("svc-%d", i), allowI))
	}
	in, err := CompileIntentions(consulTD, "api", []api.ConfigEntry{intentionsEntry("api", sources...), intentionsEntry("*", l4("*", allowI))})
	if err != nil {
		b.Fatal(err)
	}
	hdr := http.Header{"X-Tenant": {"t-42"}}
	for _, tc := range []struct {
		name    string
		c       call
		escaped string
		allow   bool
	}{
		{"L4", call{from: "db"}, "", true},
		{"L7", call{from: "web", method: "GET", path: "/v2/orders/17", header: hdr}, "", true},
		// Sent with escapes and dot segments: also matched as Envoy sees it.
		{"L7 escaped", call{from: "web", method: "GET", path: "/v2/orders/17", header: hdr}, "/x/%2e%2e/v2/orders/%31%37", true},
		{"wildcard", call{from: "cache"}, "", false},
		{"foreign", call{from: "spiffe://other.org/ns/default/dc/dc1/svc/web"}, "", false},
	} {
		r := tc.c.request()
		r.EscapedPath = tc.escaped
		if err := in.AuthorizeRequest(context.Background(), r); (err == nil) != tc.allow {
			b.Fatalf("%s: %v, want allowed=%v", tc.name, err, tc.allow)
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			ctx := context.Background()
			for b.Loop() {
				_ = in.AuthorizeRequest(ctx, r)
			}
		})
	}
}
