package tlsid_test

import (
	"context"
	"fmt"
	"log"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/tlsid"
)

// Consul's L7 intentions for the service api, compiled and decided
// in-process: web may do anything but POST below /admin, every other
// service of the cluster is denied, and a field weft cannot check
// (a JWT) is a named warning. A server would use
// [tlsid.WatchConsulIntentions], which compiles the entries again on
// every change in Consul.
func ExampleCompileIntentions() {
	td := spiffeid.RequireTrustDomainFromString("11111111-2222-3333-4444-555555555555.consul")
	entry := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "api", Sources: []*api.SourceIntention{
		{Name: "web", Permissions: []*api.IntentionPermission{
			{Action: api.IntentionActionDeny, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/admin", Methods: []string{"POST"}}},
			{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/"}},
		}},
		{Name: "billing", Action: api.IntentionActionAllow},
		{Name: "*", Action: api.IntentionActionDeny},
	}}
	all := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "*", Sources: []*api.SourceIntention{
		{Name: "billing", Permissions: []*api.IntentionPermission{{Action: api.IntentionActionAllow,
			HTTP: &api.IntentionHTTPPermission{PathPrefix: "/"},
			JWT:  &api.IntentionJWTRequirement{Providers: []*api.IntentionJWTProvider{{Name: "okta"}}}}}},
	}}
	in, err := tlsid.CompileIntentions(td, "api", []api.ConfigEntry{entry, all})
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range []struct{ from, method, path string }{
		{"web", "GET", "/admin"}, {"web", "POST", "/admin/users"}, {"billing", "POST", "/admin"}, {"cache", "GET", "/"},
	} {
		caller := spiffeid.RequireFromSegments(td, "ns", "default", "dc", "dc1", "svc", c.from)
		err := in.AuthorizeRequest(context.Background(), tlsid.Request{Peer: caller, Method: c.method, Path: c.path})
		fmt.Printf("%s %s %s: allowed=%v\n", c.from, c.method, c.path, err == nil)
	}
	for _, w := range in.Warnings() {
		fmt.Println(w.Field)
	}
	// Output:
	// web GET /admin: allowed=true
	// web POST /admin/users: allowed=false
	// billing POST /admin: allowed=true
	// cache GET /: allowed=false
	// Sources[billing].Permissions[0].JWT
}

// NormalizePath gives the form in which intentions match a path, and in
// which package mesh gives it to handlers.
func ExampleNormalizePath() {
	for _, p := range []string{"/a//b/./c", "/a/b/..", `/a\..\admin`, "/docs/"} {
		fmt.Println(tlsid.NormalizePath(p))
	}
	// Output:
	// /a/b/c
	// /a/
	// /admin
	// /docs/
}
