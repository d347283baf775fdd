package mesh

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/tlsid"
)

// adminEnv is the demo mesh of testEnv (HTTP "demo" and gRPC
// "demo-grpc", 3 instances each) plus service "flaky": 3 HTTP servers
// over mutual TLS, each answering 503 while its fail flag is set, with
// version meta for route subsets.
type adminEnv struct {
	*testEnv
	flaky [3]*atomic.Bool
	src   *route.Static
}

const adminRoutesYAML = `
services:
  flaky:
    subsets:
      stable: {meta: {version: v1}}
      canary: {meta: {version: v2}}
    routes:
      - name: canary-header
        match: [{headers: {x-canary: {exact: "yes"}}}]
        backends: [{subset: canary}]
        headers:
          request: {set: {authorization: "Bearer route-secret-b3ar3r"}}
      - name: stable
        match: [{path: {prefix: /}}]
        backends: [{subset: stable}]
`

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	ae := &adminEnv{testEnv: newTestEnv(t, 3)}
	var eps []discovery.Endpoint
	for i := range ae.flaky {
		fail := &atomic.Bool{}
		ae.flaky[i] = fail
		name := fmt.Sprintf("flaky-%d", i+1)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if fail.Load() {
				http.Error(w, "failing", http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, name)
		})
		srv, err := NewServer(h, WithIdentity(ae.source(testServerID)))
		if err != nil {
			t.Fatal(err)
		}
		version := "v1"
		if i == 2 {
			version = "v2"
		}
		eps = append(eps, discovery.Endpoint{ID: name, Addr: startServer(t, srv), Zone: "zone-a", Meta: map[string]string{"version": version}})
	}
	if err := ae.discovery.Set("flaky", eps...); err != nil {
		t.Fatal(err)
	}
	cfg, err := route.Parse([]byte(adminRoutesYAML), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	if ae.src, err = route.NewStatic(cfg, route.WithVersion("v1")); err != nil {
		t.Fatal(err)
	}
	return ae
}

// serveAdmin serves h on a loopback listener over plain HTTP until the
// test ends and returns its base URL.
func serveAdmin(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return "http://" + serveLoopback(t, srv.Serve, func() { srv.Close() })
}

// adminGet fetches base+path and decodes its JSON into v; it returns the
// status code.
func adminGet(t *testing.T, hc *http.Client, base, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(testContext(t, 20*time.Second), http.MethodGet, base+path, nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode == http.StatusOK && v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("GET %s: %v in %s", path, err, b)
		}
	}
	return resp.StatusCode
}

// flakyGet sends GET http://flaky/ and returns the status, 0 on an
// error (an open breaker, say).
func flakyGet(t *testing.T, hc *http.Client) int {
	t.Helper()
	code, _, _ := call(t, hc, http.MethodGet, "http://flaky/", "", nil)
	return code
}

func findEndpoint(doc AdminClusters, service, id string) (AdminEndpoint, bool) {
	for _, s := range doc.Services {
		if s.Service != service {
			continue
		}
		for _, e := range s.Endpoints {
			if e.ID == id {
				return e, true
			}
		}
	}
	return AdminEndpoint{}, false
}

// TestAdminClusters runs HTTP and gRPC traffic through a client, makes
// one endpoint of "flaky" fail and checks that /clusters shows what
// became of it — its breaker open, or its ejection — while the other
// endpoints stay healthy, and that the gRPC service is listed with its
// endpoints.
func TestAdminClusters(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name     string
		opts     []ClientOption
		breakers bool                                     // the client has breakers, which count calls
		check    func(t *testing.T, e AdminEndpoint) bool // the failing endpoint shows the failure
		ok       func(t *testing.T, e AdminEndpoint)      // a healthy endpoint, once the failing one shows it
	}{
		{
			name:     "breaker opens",
			breakers: true,
			opts:     []ClientOption{WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 2, OpenTimeout: time.Hour})},
			check: func(t *testing.T, e AdminEndpoint) bool {
				return e.Breaker == "open" && e.Health == "breaker-open"
			},
			ok: func(t *testing.T, e AdminEndpoint) {
				if e.Breaker != "closed" || e.Health != "healthy" {
					t.Errorf("%s: breaker %q health %q, want closed and healthy", e.ID, e.Breaker, e.Health)
				}
				if e.Requests == 0 || e.SuccessRate == nil || *e.SuccessRate != 1 || e.Throughput == nil || *e.Throughput <= 0 {
					t.Errorf("%s: requests %d success rate %v throughput %v, want counted calls, all good", e.ID, e.Requests, e.SuccessRate, e.Throughput)
				}
			},
		},
		{
			name: "endpoint ejected",
			opts: []ClientOption{WithBalancer(func(string) balancer.Policy {
				// A short decay: an endpoint whose first call was slow (its
				// handshake) is soon probed again, and the failing one is
				// called.
				return balancer.Outlier(balancer.PeakEWMA(balancer.WithDecay(100*time.Millisecond)), balancer.WithConsecutiveFailures(2), balancer.WithEjectionTime(time.Hour, time.Hour))
			})},
			check: func(t *testing.T, e AdminEndpoint) bool {
				return e.Ejected && e.Health == "ejected" && e.EjectedForSeconds > 3000
			},
			ok: func(t *testing.T, e AdminEndpoint) {
				if e.Ejected || e.Health != "healthy" || e.Breaker != "" {
					t.Errorf("%s: ejected %v health %q breaker %q, want healthy without breaker", e.ID, e.Ejected, e.Health, e.Breaker)
				}
				if e.LatencyMillis == nil || *e.LatencyMillis <= 0 {
					t.Errorf("%s: latency EWMA %v, want one (peak EWMA tracks it)", e.ID, e.LatencyMillis)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			ae := newAdminEnv(t)
			c := ae.client(append(tt.opts, WithRoutes(ae.src))...)
			hc := c.HTTPClient()
			base := serveAdmin(t, c.AdminHandler())
			ahc := &http.Client{}
			t.Cleanup(ahc.CloseIdleConnections)

			// gRPC traffic to demo-grpc, HTTP to flaky.
			cc, err := c.DialGRPC("demo-grpc")
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			for range 3 {
				if _, err := demo.Whoami(testContext(t, 20*time.Second), cc); err != nil {
					t.Fatalf("gRPC call: %v", err)
				}
			}
			for range 6 {
				if code := flakyGet(t, hc); code != http.StatusOK {
					t.Fatalf("flaky: status %d before any failure", code)
				}
			}
			var doc AdminClusters
			adminGet(t, ahc, base, "/clusters", &doc)
			if e, ok := findEndpoint(doc, "flaky", "flaky-2"); !ok || e.Health != "healthy" || e.Zone != "zone-a" || e.Weight != 1 || e.Addr == "" {
				t.Fatalf("flaky-2 before failing: %+v (found %v)", e, ok)
			}
			if e, _ := findEndpoint(doc, "flaky", "flaky-3"); len(e.Subsets) != 1 || e.Subsets[0] != "canary" {
				t.Errorf("flaky-3 subsets %v, want [canary]", e.Subsets)
			}
			var grpcEPs int
			var grpcCalls uint64
			for _, s := range doc.Services {
				if s.Service == "demo-grpc" {
					grpcEPs = len(s.Endpoints)
					for _, e := range s.Endpoints {
						grpcCalls += e.Requests
					}
				}
			}
			if grpcEPs != 3 {
				t.Errorf("demo-grpc: %d endpoints listed, want 3", grpcEPs)
			}
			if tt.breakers && grpcCalls < 3 {
				t.Errorf("demo-grpc: %d calls counted by the breakers, want the 3 made", grpcCalls)
			}

			ae.flaky[1].Store(true)
			pollUntil(t, 20*time.Second, "flaky-2 shown failing", func() bool {
				flakyGet(t, hc)
				adminGet(t, ahc, base, "/clusters", &doc)
				e, _ := findEndpoint(doc, "flaky", "flaky-2")
				return tt.check(t, e)
			})
			for _, id := range []string{"flaky-1"} {
				e, _ := findEndpoint(doc, "flaky", id)
				tt.ok(t, e)
			}
		})
	}
}

// TestAdminRoutes checks that /routes shows the table, its source and
// version, follows an update, and keeps the last refused update and why.
func TestAdminRoutes(t *testing.T) {
	leaktest.Check(t)
	ae := newAdminEnv(t)
	c := ae.client(WithRoutes(ae.src))
	if code := flakyGet(t, c.HTTPClient()); code != http.StatusOK { // creates the cluster
		t.Fatalf("status %d", code)
	}
	base := serveAdmin(t, c.AdminHandler())
	ahc := &http.Client{}
	defer ahc.CloseIdleConnections()

	const oneRoute = "services:\n  flaky:\n    routes:\n      - name: %s\n        backends: [%s]\n"
	steps := []struct {
		name          string
		update        string // YAML; "" for none
		wantVersion   string
		wantRules     []string
		wantRejection string // a substring of the last rejection; "" for none
		wantSubsets3  string // flaky-3's subsets in /clusters, comma-separated
	}{
		{name: "initial", wantVersion: "v1", wantRules: []string{"canary-header", "stable", "default"}, wantSubsets3: "canary"},
		{name: "updated", update: fmt.Sprintf(oneRoute, "only", "{service: flaky}"), wantRules: []string{"only", "default"}},
		{name: "refused", update: fmt.Sprintf(oneRoute, "broken", "{subset: nowhere}"), wantRules: []string{"only", "default"}, wantRejection: "nowhere"},
	}
	var lastVersion string
	for _, st := range steps {
		if st.update != "" {
			cfg, err := route.Parse([]byte(st.update), route.YAML)
			if err != nil {
				t.Fatal(err)
			}
			err = ae.src.Update(cfg)
			if (err != nil) != (st.wantRejection != "") {
				t.Fatalf("%s: update: %v", st.name, err)
			}
		}
		var doc AdminRoutes
		if code := adminGet(t, ahc, base, "/routes", &doc); code != http.StatusOK {
			t.Fatalf("%s: status %d", st.name, code)
		}
		if !doc.Enabled || doc.Source != "static" {
			t.Errorf("%s: enabled %v source %q", st.name, doc.Enabled, doc.Source)
		}
		switch {
		case st.wantVersion != "" && doc.Version != st.wantVersion:
			t.Errorf("%s: version %q, want %q", st.name, doc.Version, st.wantVersion)
		case st.update != "" && st.wantRejection == "" && doc.Version == lastVersion:
			t.Errorf("%s: version %q did not change with the update", st.name, doc.Version)
		case st.wantRejection != "" && doc.Version != lastVersion:
			t.Errorf("%s: version %q changed with a refused update (was %q)", st.name, doc.Version, lastVersion)
		}
		lastVersion = doc.Version
		var names []string
		for _, s := range doc.Services {
			if s.Service == "flaky" {
				for _, r := range s.Rules {
					names = append(names, r.Name)
				}
			}
		}
		if strings.Join(names, ",") != strings.Join(st.wantRules, ",") {
			t.Errorf("%s: rules %v, want %v", st.name, names, st.wantRules)
		}
		// /clusters follows the table: flaky-3 is in subset canary
		// while a route sends to it.
		var clusters AdminClusters
		adminGet(t, ahc, base, "/clusters", &clusters)
		e, _ := findEndpoint(clusters, "flaky", "flaky-3")
		if got, want := strings.Join(e.Subsets, ","), st.wantSubsets3; got != want {
			t.Errorf("%s: flaky-3 subsets %q, want %q", st.name, got, want)
		}
		switch {
		case st.wantRejection == "" && doc.LastRejection != nil:
			t.Errorf("%s: last rejection %+v, want none", st.name, doc.LastRejection)
		case st.wantRejection != "" && (doc.LastRejection == nil || !strings.Contains(doc.LastRejection.Error, st.wantRejection) || doc.Rejected != 1):
			t.Errorf("%s: last rejection %+v (%d refused), want one naming %q", st.name, doc.LastRejection, doc.Rejected, st.wantRejection)
		}
	}
}

// TestAdminExplain checks /explain against the route table and the
// next real pick: with a deterministic policy (a hash of a header, or a
// single eligible endpoint) the endpoint explain names is the one the
// next call reaches.
func TestAdminExplain(t *testing.T) {
	leaktest.Check(t)
	ae := newAdminEnv(t)
	c := ae.client(WithRoutes(ae.src), WithBalancer(func(string) balancer.Policy {
		return balancer.RingHash(balancer.HeaderKey("x-user"))
	}))
	hc := c.HTTPClient()
	base := serveAdmin(t, c.AdminHandler())
	ahc := &http.Client{}
	defer ahc.CloseIdleConnections()
	if code := flakyGet(t, hc); code != http.StatusOK { // creates the cluster
		t.Fatalf("status %d", code)
	}
	tests := []struct {
		name       string
		query      string
		header     http.Header
		wantRoute  string
		wantSubset string
		wantPick   string // "" : any endpoint of the subset, checked against the real one
	}{
		{name: "canary header", query: "header=x-canary:yes", header: http.Header{"X-Canary": {"yes"}}, wantRoute: "canary-header", wantSubset: "canary", wantPick: "flaky-3"},
		{name: "hash of x-user alice", query: "header=x-user:alice", header: http.Header{"X-User": {"alice"}}, wantRoute: "stable", wantSubset: "stable"},
		{name: "hash of x-user bob", query: "header=x-user:bob", header: http.Header{"X-User": {"bob"}}, wantRoute: "stable", wantSubset: "stable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ex AdminExplain
			if code := adminGet(t, ahc, base, "/explain?service=flaky&path=/x&"+tt.query, &ex); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			if ex.Route == nil || ex.Route.Name != tt.wantRoute || ex.Backend == nil || ex.Backend.Subset != tt.wantSubset {
				t.Fatalf("route %+v backend %+v, want %s to subset %s", ex.Route, ex.Backend, tt.wantRoute, tt.wantSubset)
			}
			if !ex.Deterministic || ex.Pick == "" {
				t.Fatalf("pick %q deterministic %v, want a deterministic pick; why: %v", ex.Pick, ex.Deterministic, ex.Why)
			}
			if tt.wantPick != "" && ex.Pick != tt.wantPick {
				t.Errorf("pick %q, want %q", ex.Pick, tt.wantPick)
			}
			req, _ := http.NewRequestWithContext(testContext(t, 20*time.Second), http.MethodGet, "http://flaky/x", nil)
			for k, v := range tt.header {
				req.Header[k] = v
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != ex.Pick {
				t.Errorf("the call went to %q, explain said %q", b, ex.Pick)
			}
		})
	}

	// gRPC: the same ring hash over demo-grpc, keyed on metadata.
	cc, err := c.DialGRPC("demo-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := demo.Whoami(testContext(t, 20*time.Second), cc); err != nil { // opens the connections
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "bob", "carol"} {
		t.Run("grpc "+user, func(t *testing.T) {
			var ex AdminExplain
			q := "/explain?protocol=grpc&service=demo-grpc&path=" + url.QueryEscape(demo.WhoamiMethod) + "&header=x-user:" + user
			pollUntil(t, 20*time.Second, "every gRPC endpoint eligible", func() bool {
				if code := adminGet(t, ahc, base, q, &ex); code != http.StatusOK {
					t.Fatalf("status %d", code)
				}
				return len(ex.Candidates) == 3 && !slices.ContainsFunc(ex.Candidates, func(c AdminCandidate) bool { return !c.Eligible })
			})
			if ex.Protocol != "grpc" || ex.Route != nil || !ex.Deterministic || ex.Pick == "" || len(ex.Candidates) != 3 {
				t.Fatalf("explain %+v, want a deterministic pick among 3 candidates without a route", ex)
			}
			ctx := metadata.AppendToOutgoingContext(testContext(t, 20*time.Second), "x-user", user)
			got, err := demo.Whoami(ctx, cc)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(got, ex.Pick+" ") {
				t.Errorf("the call went to %q, explain said %q", got, ex.Pick)
			}
		})
	}

	bad := []string{"/explain", "/explain?service=flaky&header=nocolon", "/explain?service=flaky&rnd=-1"}
	for _, path := range bad {
		if code := adminGet(t, ahc, base, path, nil); code != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", path, code)
		}
	}
}

// TestAdminIdentityAndConfig checks /identity (SVID, bundle, authorizers)
// and that /config carries no secret: not the route's header value, not
// a token in a URL query.
func TestAdminIdentityAndConfig(t *testing.T) {
	leaktest.Check(t)
	ae := newAdminEnv(t)
	srv, err := NewServer(http.NotFoundHandler(), WithIdentity(ae.source(testServerID)), WithAuthorizer(tlsid.AuthorizeID(testClientID)))
	if err != nil {
		t.Fatal(err)
	}
	c := ae.client(WithRoutes(ae.src), WithCircuitBreaker(breaker.Settings{}), WithRetry(RetryPolicy{MaxAttempts: 2}))
	base := serveAdmin(t, c.AdminHandler(WithAdminServers(srv, nil)))
	ahc := &http.Client{}
	defer ahc.CloseIdleConnections()

	var id AdminIdentity
	adminGet(t, ahc, base, "/identity", &id)
	svid, err := c.cfg.identity.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if id.SVID == nil || id.SVID.ID != testClientID.String() || id.SVID.Serial != leaf.SerialNumber.Text(16) || !id.SVID.NotAfter.Equal(leaf.NotAfter) || id.SVID.ExpiresInSeconds <= 0 {
		t.Errorf("svid %+v, want %s serial %x", id.SVID, testClientID, leaf.SerialNumber)
	}
	if len(id.Bundles) != 1 || id.Bundles[0].TrustDomain != "example.org" || len(id.Bundles[0].Authorities) == 0 || len(id.Bundles[0].Authorities[0]) != 64 {
		t.Errorf("bundles %+v, want example.org with SHA-256 fingerprints", id.Bundles)
	}
	roles := map[string]string{}
	for _, a := range id.Authorizers {
		roles[a.Role] = a.Name
	}
	if roles["client: servers accepted"] != "tlsid.AuthorizeMemberOf" || roles["admin: callers"] != "loopback only" {
		t.Errorf("authorizers %v", id.Authorizers)
	}
	if len(id.Servers) != 1 || id.Servers[0].SVID == nil || id.Servers[0].SVID.ID != testServerID.String() || id.Servers[0].Authorizer != "tlsid.AuthorizeOneOf" {
		t.Errorf("servers %+v", id.Servers)
	}

	resp, err := ahc.Get(base + "/config")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%v in %s", err, raw)
	}
	for _, secret := range []string{"route-secret-b3ar3r", "Bearer route"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("/config shows secret %q", secret)
		}
	}
	for _, want := range []string{`"retry"`, `"breakers"`, `"routes"`, `"servers"`, "REDACTED", "canary-header"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("/config lacks %s", want)
		}
	}
}

// TestAdminRedactedValue checks the redaction of /config on secrets of
// every shape: by key, in URL queries, bearer tokens, key=value pairs.
func TestAdminRedactedValue(t *testing.T) {
	tests := []struct {
		name   string
		in     any
		secret string
	}{
		{"key", map[string]any{"token": "t0p-s3cret"}, "t0p-s3cret"},
		{"nested key", map[string]any{"headers": map[string]any{"Authorization": []any{"Basic dXNlcjpwYXNz"}}}, "dXNlcjpwYXNz"},
		{"query", map[string]any{"url": "https://x.example/cb?sig=abc123"}, "abc123"},
		{"bearer", map[string]any{"note": "send Bearer abcdef.ghij"}, "abcdef.ghij"},
		{"pair", []any{"password=hunter2"}, "hunter2"},
		{"private key", map[string]any{"private": "-----BEGIN PRIVATE KEY-----MIIB-----END PRIVATE KEY-----"}, "MIIB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(redactedValue(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(b), tt.secret) || !strings.Contains(string(b), "REDACTED") {
				t.Errorf("redacted %s: %s", tt.in, b)
			}
		})
	}
}

// TestAdminAccess checks who the handler answers: loopback callers
// without an authorizer; with one, mTLS callers it allows, and no one
// else (not a caller it refuses, not a plaintext loopback caller).
func TestAdminAccess(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	c := env.client()
	adminID := testClientID
	otherID := spiffeid.RequireFromString("spiffe://example.org/intruder")

	// With an authorizer, served over mutual TLS by a mesh Server whose
	// own authorizer lets every member of the trust domain connect.
	srv, err := NewServer(c.AdminHandler(WithAdminAuthorizer(tlsid.AuthorizeID(adminID))), WithIdentity(env.source(testServerID)))
	if err != nil {
		t.Fatal(err)
	}
	mtlsAddr := startServer(t, srv)
	// With an authorizer, reached over plaintext loopback.
	plainAuth := serveAdmin(t, c.AdminHandler(WithAdminAuthorizer(tlsid.AuthorizeID(adminID))))
	// Without one: loopback only.
	plain := serveAdmin(t, c.AdminHandler())

	mtlsClient := func(id string) *http.Client {
		src := env.source(spiffeid.RequireFromString(id))
		cfg, err := tlsid.ClientConfig(src, tlsid.AuthorizeID(testServerID))
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
		t.Cleanup(hc.CloseIdleConnections)
		return hc
	}
	plainClient := &http.Client{}
	defer plainClient.CloseIdleConnections()

	tests := []struct {
		name string
		hc   *http.Client
		url  string
		want int
	}{
		{"allowed mTLS caller", mtlsClient(adminID.String()), "https://" + mtlsAddr + "/clusters", http.StatusOK},
		{"refused mTLS caller", mtlsClient(otherID.String()), "https://" + mtlsAddr + "/clusters", http.StatusForbidden},
		{"refused mTLS caller, page", mtlsClient(otherID.String()), "https://" + mtlsAddr + "/", http.StatusForbidden},
		{"plaintext caller with an authorizer set", plainClient, plainAuth + "/identity", http.StatusForbidden},
		{"loopback caller without an authorizer", plainClient, plain + "/config", http.StatusOK},
		{"loopback caller, page", plainClient, plain + "/", http.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := adminGet(t, tt.hc, tt.url, "", nil); code != tt.want {
				t.Errorf("status %d, want %d", code, tt.want)
			}
		})
	}

	// A non-loopback caller without an authorizer: the guard sees its
	// remote address (no real non-loopback interface is needed).
	h := c.AdminHandler()
	for _, remote := range []string{"192.0.2.7:4000", "[2001:db8::1]:4000", "not-an-address"} {
		r, _ := http.NewRequest(http.MethodGet, "/clusters", nil)
		r.RemoteAddr = remote
		w := &recorder{header: http.Header{}}
		h.ServeHTTP(w, r)
		if w.code != http.StatusForbidden {
			t.Errorf("remote %s: status %d, want 403", remote, w.code)
		}
	}
	if !loopbackAddr("[::1]:80") || !loopbackAddr("127.0.0.9:1") {
		t.Error("loopback addresses refused")
	}
}

// recorder is a minimal http.ResponseWriter for the guard's refusals.
type recorder struct {
	header http.Header
	code   int
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return len(b), nil
}
func (r *recorder) WriteHeader(code int) { r.code = code }

// BenchmarkAdminClusters measures building the /clusters document of a
// client with one 3-endpoint service behind breakers: the cost of a page
// refresh, off the call path.
func BenchmarkAdminClusters(b *testing.B) {
	env := newTestEnv(b, 3)
	c := env.client(WithCircuitBreaker(breaker.Settings{}))
	resp, err := c.HTTPClient().Get("http://demo/")
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	a := &admin{c: c}
	b.ReportAllocs()
	for b.Loop() {
		if doc := a.clusters(); len(doc.Services) != 1 || len(doc.Services[0].Endpoints) != 3 {
			b.Fatalf("clusters: %+v", doc)
		}
	}
}
