package tlsid

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

var consulTD = spiffeid.RequireTrustDomainFromString("0a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9.consul")

func consulID(name string) spiffeid.ID {
	return spiffeid.RequireFromString("spiffe://" + consulTD.Name() + "/ns/default/dc/dc1/svc/" + name)
}

func intentionsEntry(name string, sources ...*api.SourceIntention) *api.ServiceIntentionsConfigEntry {
	return &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: name, Sources: sources}
}

func l4(name string, action api.IntentionAction) *api.SourceIntention {
	return &api.SourceIntention{Name: name, Action: action, Type: api.IntentionSourceConsul}
}

func l7(name string, perms ...*api.IntentionPermission) *api.SourceIntention {
	return &api.SourceIntention{Name: name, Permissions: perms, Type: api.IntentionSourceConsul}
}

func perm(action api.IntentionAction, h api.IntentionHTTPPermission) *api.IntentionPermission {
	return &api.IntentionPermission{Action: action, HTTP: &h}
}

const (
	allowI = api.IntentionActionAllow
	denyI  = api.IntentionActionDeny
)

// call is one request a compiled set of intentions decides.
type call struct {
	from   string // service name, or a whole SPIFFE ID when it contains "://"
	method string
	path   string
	header http.Header
	allow  bool
}

func (c call) request() Request {
	r := Request{Method: c.method, Path: c.path}
	if c.method == "" {
		r.Method = http.MethodGet
	}
	if r.Path == "" {
		r.Path = "/"
	}
	switch {
	case strings.Contains(c.from, "://"):
		r.Peer = spiffeid.RequireFromString(c.from)
	case c.from != "":
		r.Peer = consulID(c.from)
	}
	if c.header != nil {
		r.Header = c.header
	}
	return r
}

func TestIntentionsDecide(t *testing.T) {
	adminDeny := l7("web",
		perm(denyI, api.IntentionHTTPPermission{PathPrefix: "/admin", Methods: []string{"POST"}}),
		perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"}))
	for _, tc := range []struct {
		name         string
		defaultAllow bool
		entries      []api.ConfigEntry
		calls        []call
	}{
		{name: "no entries, default deny", calls: []call{{from: "web"}}},
		{name: "no entries, default allow", defaultAllow: true, calls: []call{{from: "web", allow: true}}},
		{
			name:    "L4 allow names one caller",
			entries: []api.ConfigEntry{intentionsEntry("api", l4("web", allowI))},
			calls:   []call{{from: "web", allow: true}, {from: "db"}},
		},
		{
			name:         "L4 deny under default allow",
			defaultAllow: true,
			entries:      []api.ConfigEntry{intentionsEntry("api", l4("web", denyI))},
			calls:        []call{{from: "web"}, {from: "db", allow: true}},
		},
		{
			name:    "exact source before wildcard source (9 before 8)",
			entries: []api.ConfigEntry{intentionsEntry("api", l4("*", allowI), l4("web", denyI))},
			calls:   []call{{from: "web"}, {from: "db", allow: true}},
		},
		{
			name:    "wildcard source of the destination before exact source of every destination (8 before 6)",
			entries: []api.ConfigEntry{intentionsEntry("*", l4("web", allowI)), intentionsEntry("api", l4("*", denyI))},
			calls:   []call{{from: "web"}, {from: "db"}},
		},
		{
			name:    "exact source of every destination before wildcard of every destination (6 before 5)",
			entries: []api.ConfigEntry{intentionsEntry("*", l4("*", allowI), l4("web", denyI))},
			calls:   []call{{from: "web"}, {from: "db", allow: true}},
		},
		{
			name:    "entries of other destinations do not apply",
			entries: []api.ConfigEntry{intentionsEntry("billing", l4("web", allowI)), intentionsEntry("api", l4("db", allowI)), &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "api"}, nil},
			calls:   []call{{from: "web"}, {from: "db", allow: true}},
		},
		{
			name:    "L7 deny POST /admin, allow the rest",
			entries: []api.ConfigEntry{intentionsEntry("api", adminDeny)},
			calls: []call{
				{from: "web", method: "POST", path: "/admin"},
				{from: "web", method: "POST", path: "/admin/users"},
				{from: "web", method: "POST", path: "/administrator"}, // a plain string prefix, as Envoy's
				{from: "web", method: "POST", path: "/a/../admin"},
				{from: "web", method: "POST", path: "//admin"},
				{from: "web", method: "GET", path: "/admin", allow: true},
				{from: "web", method: "POST", path: "/orders", allow: true},
				{from: "db", method: "GET", path: "/"},
			},
		},
		{
			name:         "L7 without a matching permission denies, whatever the default",
			defaultAllow: true,
			entries: []api.ConfigEntry{intentionsEntry("api", l7("web",
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/public", Methods: []string{"GET"}})))},
			calls: []call{
				{from: "web", method: "GET", path: "/public", allow: true},
				{from: "web", method: "HEAD", path: "/public", allow: true}, // GET covers HEAD
				{from: "web", method: "POST", path: "/public"},
				{from: "web", method: "GET", path: "/public/x"},
				{from: "web", method: "GET", path: "/public/"},
				{from: "db", method: "POST", path: "/anything", allow: true},
			},
		},
		{
			name: "the first matching permission wins",
			entries: []api.ConfigEntry{intentionsEntry("api", l7("web",
				perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/admin/health"}),
				perm(denyI, api.IntentionHTTPPermission{PathPrefix: "/admin"}),
				perm(allowI, api.IntentionHTTPPermission{}),
			))},
			calls: []call{
				{from: "web", path: "/admin/health", allow: true},
				{from: "web", path: "/admin/users"},
				{from: "web", path: "/x", allow: true},
			},
		},
		{
			name: "regular expressions match the whole path",
			entries: []api.ConfigEntry{intentionsEntry("api", l7("web",
				perm(allowI, api.IntentionHTTPPermission{PathRegex: "/v[0-9]+/items"})))},
			calls: []call{
				{from: "web", path: "/v1/items", allow: true},
				{from: "web", path: "/v12/items", allow: true},
				{from: "web", path: "/v1/items/x"},
				{from: "web", path: "/x/v1/items"},
			},
		},
		{
			name: "gRPC methods are POST on /package.Service/Method",
			entries: []api.ConfigEntry{intentionsEntry("api", l7("web",
				perm(denyI, api.IntentionHTTPPermission{PathExact: "/demo.Admin/Reset", Methods: []string{"POST"}}),
				perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/demo."})))},
			calls: []call{
				{from: "web", method: "POST", path: "/demo.Admin/Reset"},
				{from: "web", method: "POST", path: "/demo.Admin/Status", allow: true},
				{from: "web", method: "POST", path: "/other.Svc/M"},
			},
		},
		{
			name: "header matches",
			entries: []api.ConfigEntry{intentionsEntry("api", l7("web",
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/present", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-canary", Present: true}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/absent", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-canary", Present: true, Invert: true}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/exact", Header: []api.IntentionHTTPHeaderPermission{{Name: "X-Env", Exact: "prod"}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/fold", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-env", Exact: "prod", IgnoreCase: true}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/prefix", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-env", Prefix: "pr"}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/suffix", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-env", Suffix: "od", IgnoreCase: true}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/contains", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-env", Contains: "ro", IgnoreCase: true}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/regex", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-env", Regex: "p.o"}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/not", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-env", Exact: "prod", Invert: true}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/both", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-env", Exact: "prod"}, {Name: "x-team", Exact: "a"}}}),
			))},
			calls: []call{
				{from: "web", path: "/present", header: http.Header{"X-Canary": {""}}, allow: true},
				{from: "web", path: "/present"},
				{from: "web", path: "/absent", allow: true},
				{from: "web", path: "/absent", header: http.Header{"X-Canary": {"1"}}},
				{from: "web", path: "/exact", header: http.Header{"X-Env": {"prod"}}, allow: true},
				{from: "web", path: "/exact", header: http.Header{"X-Env": {"PROD"}}},
				{from: "web", path: "/exact", header: http.Header{"X-Env": {"prod", "dev"}}}, // "prod,dev"
				{from: "web", path: "/fold", header: http.Header{"X-Env": {"PROD"}}, allow: true},
				{from: "web", path: "/prefix", header: http.Header{"X-Env": {"preview"}}, allow: true},
				{from: "web", path: "/prefix", header: http.Header{"X-Env": {"dev"}}},
				{from: "web", path: "/suffix", header: http.Header{"X-Env": {"PROD"}}, allow: true},
				{from: "web", path: "/suffix", header: http.Header{"X-Env": {"d"}}},
				{from: "web", path: "/contains", header: http.Header{"X-Env": {"PROD"}}, allow: true},
				{from: "web", path: "/contains", header: http.Header{"X-Env": {"dev"}}},
				{from: "web", path: "/regex", header: http.Header{"X-Env": {"pro"}}, allow: true},
				{from: "web", path: "/regex", header: http.Header{"X-Env": {"prod"}}}, // whole value
				{from: "web", path: "/not", header: http.Header{"X-Env": {"dev"}}, allow: true},
				{from: "web", path: "/not", header: http.Header{"X-Env": {"prod"}}},
				{from: "web", path: "/not"}, // absent: no match, inverted or not
				{from: "web", path: "/both", header: http.Header{"X-Env": {"prod"}, "X-Team": {"a"}}, allow: true},
				{from: "web", path: "/both", header: http.Header{"X-Env": {"prod"}}},
			},
		},
		{
			name:         "callers that are not Consul services of the trust domain are denied",
			defaultAllow: true,
			entries:      []api.ConfigEntry{intentionsEntry("api", l4("*", allowI))},
			calls: []call{
				{from: "web", allow: true},
				{from: ""},
				{from: "spiffe://other.consul/ns/default/dc/dc1/svc/web"},
				{from: "spiffe://" + consulTD.Name() + "/ns/team/dc/dc1/svc/web"},
				{from: "spiffe://" + consulTD.Name() + "/ap/p/ns/default/dc/dc1/svc/web"},
				{from: "spiffe://" + consulTD.Name() + "/ns/default/dc/dc1/svc/web/x"},
				{from: "spiffe://" + consulTD.Name() + "/web"},
			},
		},
		{
			name:         "a JWT on the entry turns its allows into denies",
			defaultAllow: true,
			entries: []api.ConfigEntry{&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "api",
				JWT:     &api.IntentionJWTRequirement{Providers: []*api.IntentionJWTProvider{{Name: "okta"}}},
				Sources: []*api.SourceIntention{l4("web", allowI), l7("db", perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"}))}}},
			calls: []call{{from: "web"}, {from: "db"}, {from: "cache", allow: true}},
		},
		{
			name: "a permission needing a JWT: an allow never matches, a deny always does",
			entries: []api.ConfigEntry{intentionsEntry("api", l7("web",
				&api.IntentionPermission{Action: allowI, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/"}, JWT: &api.IntentionJWTRequirement{Providers: []*api.IntentionJWTProvider{{Name: "okta"}}}},
				&api.IntentionPermission{Action: denyI, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/admin"}, JWT: &api.IntentionJWTRequirement{Providers: []*api.IntentionJWTProvider{{Name: "okta"}}}},
				perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"}),
			))},
			calls: []call{{from: "web", path: "/x", allow: true}, {from: "web", path: "/admin"}},
		},
		{
			name:         "sources of peers and other namespaces are ignored; wildcard namespaces deny",
			defaultAllow: true,
			entries: []api.ConfigEntry{intentionsEntry("api",
				&api.SourceIntention{Name: "web", Peer: "east", Action: denyI},
				&api.SourceIntention{Name: "db", Namespace: "team", Action: denyI},
				&api.SourceIntention{Name: "cache", Namespace: "*", Action: allowI},
				&api.SourceIntention{Name: "queue", SamenessGroup: "g", Action: allowI},
			)},
			calls: []call{{from: "web", allow: true}, {from: "db", allow: true}, {from: "cache"}, {from: "queue"}},
		},
		{
			name:         "an entry of another namespace is ignored",
			defaultAllow: true,
			entries:      []api.ConfigEntry{&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "api", Namespace: "team", Sources: []*api.SourceIntention{l4("web", denyI)}}},
			calls:        []call{{from: "web", allow: true}},
		},
		{
			name: "a header weft does not see: an allow never matches, a deny ignores it",
			entries: []api.ConfigEntry{intentionsEntry("api", l7("web",
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/a", Header: []api.IntentionHTTPHeaderPermission{{Name: ":scheme", Exact: "https"}}}),
				perm(denyI, api.IntentionHTTPPermission{PathExact: "/b", Header: []api.IntentionHTTPHeaderPermission{{Name: ":path", Exact: "/b?x"}}}),
				perm(allowI, api.IntentionHTTPPermission{PathExact: "/c", Header: []api.IntentionHTTPHeaderPermission{{Name: ":authority", Exact: "api"}}}),
				perm(allowI, api.IntentionHTTPPermission{}),
			))},
			calls: []call{{from: "web", path: "/a", allow: true}, {from: "web", path: "/b"}, {from: "web", path: "/c", allow: true}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := CompileIntentions(consulTD, "api", tc.entries, WithIntentionsDefault(tc.defaultAllow))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.calls {
				err := in.AuthorizeRequest(context.Background(), c.request())
				if c.allow && err != nil {
					t.Errorf("%s %s %s %v: %v, want allowed", c.from, c.method, c.path, c.header, err)
				}
				if !c.allow && !errors.Is(err, ErrUnauthorized) {
					t.Errorf("%s %s %s %v: %v, want denied", c.from, c.method, c.path, c.header, err)
				}
			}
		})
	}
}

func TestIntentionsDenialNamesTheIntention(t *testing.T) {
	in, err := CompileIntentions(consulTD, "api", []api.ConfigEntry{intentionsEntry("api",
		l7("web", perm(denyI, api.IntentionHTTPPermission{PathPrefix: "/admin"}), perm(allowI, api.IntentionHTTPPermission{PathExact: "/"})),
		l4("db", denyI))})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		c    call
		want string
	}{
		{call{from: "web", path: "/admin"}, "Consul intention web → api: permission 0 denies the request"},
		{call{from: "web", path: "/x"}, "Consul intention web → api: no permission matches the request"},
		{call{from: "db"}, "Consul intention db → api denies"},
		{call{from: "cache"}, "no Consul intention names the caller, and the default is deny"},
		{call{from: "spiffe://other.consul/ns/default/dc/dc1/svc/web"}, "not a Consul service ID of trust domain " + consulTD.Name()},
		{call{}, "no peer ID"},
	} {
		err := in.AuthorizeRequest(context.Background(), tc.c.request())
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want ErrUnauthorized with %q", tc.c, err, tc.want)
		}
	}
	var zero *Intentions
	if err := zero.AuthorizeRequest(context.Background(), call{from: "web"}.request()); !errors.Is(err, ErrNoIntentions) || errors.Is(err, ErrUnauthorized) {
		t.Errorf("nil intentions: %v, want ErrNoIntentions and not ErrUnauthorized", err)
	}
	if err := (&Intentions{}).AuthorizeRequest(context.Background(), call{from: "web"}.request()); !errors.Is(err, ErrNoIntentions) {
		t.Errorf("zero intentions: %v, want ErrNoIntentions", err)
	}
}

func TestCompileIntentionsErrors(t *testing.T) {
	jwt := &api.IntentionJWTRequirement{Providers: []*api.IntentionJWTProvider{{Name: "okta"}}}
	_ = jwt
	for _, tc := range []struct {
		name   string
		target string
		src    *api.SourceIntention
		field  string
	}{
		{"unknown action", "api", l4("web", "maybe"), "Sources[web].Action"},
		{"action and permissions", "api", &api.SourceIntention{Name: "web", Action: allowI, Permissions: []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{})}}, "Sources[web]"},
		{"neither action nor permissions", "api", &api.SourceIntention{Name: "web"}, "Sources[web]"},
		{"bad source name", "api", l4("we/b", allowI), "Sources[we/b].Name"},
		{"nil permission", "api", l7("web", nil), "Sources[web].Permissions[0]"},
		{"permission without HTTP", "api", l7("web", &api.IntentionPermission{Action: allowI}), "Sources[web].Permissions[0].HTTP"},
		{"permission action", "api", l7("web", perm("yes", api.IntentionHTTPPermission{})), "Sources[web].Permissions[0].Action"},
		{"two paths", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{PathExact: "/a", PathPrefix: "/a"})), "Sources[web].Permissions[0].HTTP"},
		{"relative exact path", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{PathExact: "a"})), "Sources[web].Permissions[0].HTTP.PathExact"},
		{"relative prefix", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{PathPrefix: "a"})), "Sources[web].Permissions[0].HTTP.PathPrefix"},
		{"bad path regex", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{PathRegex: "(["})), "Sources[web].Permissions[0].HTTP.PathRegex"},
		{"Perl regex RE2 lacks", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{PathRegex: `/(?=a)`})), "Sources[web].Permissions[0].HTTP.PathRegex"},
		{"bad method", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{Methods: []string{"GET", "G T"}})), "Sources[web].Permissions[0].HTTP.Methods[1]"},
		{"header without a match", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x"}}})), "Sources[web].Permissions[0].HTTP.Header[0]"},
		{"header with two matches", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x", Exact: "a", Prefix: "a"}}})), "Sources[web].Permissions[0].HTTP.Header[0]"},
		{"bad header name", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x y", Present: true}}})), "Sources[web].Permissions[0].HTTP.Header[0]"},
		{"bad header regex", "api", l7("web", perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x", Regex: "a{2,1}"}}})), "Sources[web].Permissions[0].HTTP.Header[0]"},
		{"wildcard target", "*", l4("web", allowI), ""},
		{"empty target", "", l4("web", allowI), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := tc.target
			if name == "" {
				name = "api"
			}
			_, err := CompileIntentions(consulTD, tc.target, []api.ConfigEntry{intentionsEntry(name, tc.src)})
			if !errors.Is(err, ErrBadIntention) {
				t.Fatalf("%v, want ErrBadIntention", err)
			}
			if !strings.Contains(err.Error(), tc.field+":") || !strings.HasPrefix(err.Error(), "tlsid: ") {
				t.Fatalf("%v, want the field %q named", err, tc.field)
			}
		})
	}
	t.Run("duplicate source", func(t *testing.T) {
		_, err := CompileIntentions(consulTD, "api", []api.ConfigEntry{intentionsEntry("api", l4("web", allowI), l4("web", denyI))})
		if !errors.Is(err, ErrBadIntention) {
			t.Fatalf("%v, want ErrBadIntention", err)
		}
	})
	t.Run("duplicate entry", func(t *testing.T) {
		_, err := CompileIntentions(consulTD, "api", []api.ConfigEntry{intentionsEntry("api", l4("web", allowI)), intentionsEntry("api", l4("db", allowI))})
		if !errors.Is(err, ErrBadIntention) {
			t.Fatalf("%v, want ErrBadIntention", err)
		}
	})
	t.Run("no trust domain", func(t *testing.T) {
		if _, err := CompileIntentions(spiffeid.TrustDomain{}, "api", nil); !errors.Is(err, ErrBadIntention) {
			t.Fatalf("%v, want ErrBadIntention", err)
		}
	})
}

// TestIntentionsWarnings lists every field weft does not apply as Consul
// would, each with the warning that names it.
func TestIntentionsWarnings(t *testing.T) {
	jwt := &api.IntentionJWTRequirement{Providers: []*api.IntentionJWTProvider{{Name: "okta"}}}
	withJWT := func(p *api.IntentionPermission) *api.IntentionPermission { p.JWT = jwt; return p }
	for _, tc := range []struct {
		entry  *api.ServiceIntentionsConfigEntry
		field  string
		reason string
	}{
		{&api.ServiceIntentionsConfigEntry{Name: "api", Namespace: "team"}, "Namespace", "ignored"},
		{&api.ServiceIntentionsConfigEntry{Name: "api", Namespace: "*"}, "Namespace", "each allow in it denies"},
		{&api.ServiceIntentionsConfigEntry{Name: "api", Partition: "eu"}, "Partition", "ignored"},
		{&api.ServiceIntentionsConfigEntry{Name: "api", Partition: "*"}, "Partition", "each allow in it denies"},
		{&api.ServiceIntentionsConfigEntry{Name: "api", JWT: jwt}, "JWT", "each allow of the entry denies"},
		{intentionsEntry("api", &api.SourceIntention{Name: "web", Peer: "east", Action: allowI}), "Sources[web].Peer", "ignored"},
		{intentionsEntry("api", &api.SourceIntention{Name: "web", Namespace: "team", Action: allowI}), "Sources[web].Namespace", "ignored"},
		{intentionsEntry("api", &api.SourceIntention{Name: "web", Namespace: "*", Action: allowI}), "Sources[web].Namespace", "its allows deny"},
		{intentionsEntry("api", &api.SourceIntention{Name: "web", Partition: "eu", Action: allowI}), "Sources[web].Partition", "ignored"},
		{intentionsEntry("api", &api.SourceIntention{Name: "web", Partition: "*", Action: allowI}), "Sources[web].Partition", "its allows deny"},
		{intentionsEntry("api", &api.SourceIntention{Name: "web", SamenessGroup: "g", Action: allowI}), "Sources[web].SamenessGroup", "its allows deny"},
		{intentionsEntry("api", l7("web", withJWT(perm(allowI, api.IntentionHTTPPermission{})))), "Sources[web].Permissions[0].JWT", "this allow never matches"},
		{intentionsEntry("api", l7("web", withJWT(perm(denyI, api.IntentionHTTPPermission{})))), "Sources[web].Permissions[0].JWT", "this deny matches whatever the token"},
		{intentionsEntry("api", l7("web", perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: ":scheme", Exact: "https"}}}))), "Sources[web].Permissions[0].HTTP.Header[0].Name", "this allow never matches"},
		{intentionsEntry("api", l7("web", perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: ":path", Prefix: "/"}}}))), "Sources[web].Permissions[0].HTTP.Header[0].Name", "this deny matches whatever its value"},
		{intentionsEntry("api", l7("web", perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "grpc-timeout", Present: true}}}))), "Sources[web].Permissions[0].HTTP.Header[0].Name", "this deny matches whatever its value"},
		{intentionsEntry("api", l7("web", perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-ticket-bin", Exact: "b2s"}}}))), "Sources[web].Permissions[0].HTTP.Header[0].Name", "this allow never matches"},
		{intentionsEntry("api", l7("web", perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-ticket-bin", Exact: "b2s"}}}))), "Sources[web].Permissions[0].HTTP.Header[0].Name", "this deny matches whenever it is present"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			tc.entry.Kind = api.ServiceIntentions
			in, err := CompileIntentions(consulTD, "api", []api.ConfigEntry{tc.entry})
			if err != nil {
				t.Fatal(err)
			}
			ws := in.Warnings()
			if len(ws) != 1 || ws[0].Entry != "api" || ws[0].Field != tc.field || !strings.Contains(ws[0].Reason, tc.reason) {
				t.Fatalf("warnings %v, want one on %s saying %q", ws, tc.field, tc.reason)
			}
			if s := ws[0].String(); !strings.Contains(s, `service-intentions "api": `+tc.field+": ") {
				t.Fatalf("String() = %q", s)
			}
			t.Logf("%-50s %s", tc.field, ws[0].Reason)
		})
	}
	in, err := CompileIntentions(consulTD, "api", []api.ConfigEntry{intentionsEntry("api", l4("web", allowI), l7("db", perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/", Methods: []string{"GET"}})))})
	if err != nil || in.Warnings() != nil {
		t.Fatalf("supported fields: warnings %v, %v; want none", in.Warnings(), err)
	}
	if !slices.Equal(in.dest[0].byName["db"].perms[0].methods, []string{"GET", "HEAD"}) {
		t.Fatalf("GET does not cover HEAD: %v", in.dest[0].byName["db"].perms[0].methods)
	}
}
