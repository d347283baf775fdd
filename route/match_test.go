package route_test

import (
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/route"
)

func TestMatch(t *testing.T) {
	tab := load(t, "routes.yaml")
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	tests := []struct {
		name     string
		service  string
		req      route.Request
		rnd      uint64
		wantRule string // "" for no decision
		wantDest string // "" for none (an answer of its own)
	}{
		{"header wins over a later path route", "payments",
			route.Request{Method: "GET", Path: "/api/x", Header: hdr("X-Canary", "true")}, 0, "canary-header", "payments/v2"},
		{"header value must be exact", "payments",
			route.Request{Method: "GET", Path: "/other", Header: hdr("X-Canary", "TRUE")}, 0, "default", "payments/v1"},
		{"prefix redirect", "payments",
			route.Request{Method: "POST", Path: "/admin/users"}, 0, "admin-redirect", ""},
		{"exact path and method", "payments",
			route.Request{Method: "GET", Path: "/healthz"}, 0, "health", ""},
		{"GET covers HEAD", "payments",
			route.Request{Method: "HEAD", Path: "/healthz"}, 0, "health", ""},
		{"other method falls through", "payments",
			route.Request{Method: "POST", Path: "/healthz"}, 0, "default", "payments/v1"},
		{"exact is not prefix", "payments",
			route.Request{Method: "GET", Path: "/healthz/x"}, 0, "default", "payments/v1"},
		{"prefix ignoring case, low draw", "payments",
			route.Request{Method: "GET", Path: "/API/charge"}, 8999, "api-split", "payments/v1"},
		{"split high draw", "payments",
			route.Request{Method: "GET", Path: "/api/charge"}, 9000, "api-split", "payments/v2"},
		{"split draw is taken modulo 10000", "payments",
			route.Request{Method: "GET", Path: "/api/charge"}, 19999, "api-split", "payments/v2"},
		{"second entry of the list (regex)", "payments",
			route.Request{Method: "GET", Path: "/v2/charge"}, 0, "api-split", "payments/v1"},
		{"regex matches the whole path", "payments",
			route.Request{Method: "GET", Path: "/x/v2/charge"}, 0, "default", "payments/v1"},
		{"regex is case-sensitive without ignoreCase", "payments",
			route.Request{Method: "GET", Path: "/V2/charge"}, 0, "default", "payments/v1"},
		{"inverted present and query", "payments",
			route.Request{Method: "GET", Path: "/x", RawQuery: "a=b&debug=1"}, 0, "debug-without-beta", "payments/canary"},
		{"escaped query key and value", "payments",
			route.Request{Method: "GET", Path: "/x", RawQuery: "de%62ug=%31"}, 0, "debug-without-beta", "payments/canary"},
		{"inverted present fails when present", "payments",
			route.Request{Method: "GET", Path: "/x", RawQuery: "debug=1", Header: hdr("X-Beta", "")}, 0, "default", "payments/v1"},
		{"query must match", "payments",
			route.Request{Method: "GET", Path: "/x", RawQuery: "debug=2"}, 0, "default", "payments/v1"},
		{"gRPC metadata and path", "echo",
			route.Request{Path: "/pkg.Echo/Say", Metadata: metadata.Pairs("x-user", "ann@example.org")}, 0, "routes[0]", "billing"},
		{"gRPC metadata must match", "echo",
			route.Request{Path: "/pkg.Echo/Say", Metadata: metadata.Pairs("x-user", "ann@example.com")}, 0, "default", "echo"},
		{"gRPC with no metadata", "echo",
			route.Request{Path: "/pkg.Echo/Say"}, 0, "default", "echo"},
		{"unknown service", "nope", route.Request{Path: "/"}, 0, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tab.Match(tt.service, &tt.req, tt.rnd)
			if tt.wantRule == "" {
				if d.Rule != nil || d.Target != nil {
					t.Fatalf("got a decision %+v, want none", d)
				}
				return
			}
			if d.Rule == nil || d.Rule.Name != tt.wantRule {
				t.Fatalf("rule %+v, want %q", d.Rule, tt.wantRule)
			}
			got := ""
			if d.Target != nil {
				got = d.Target.Destination.String()
			}
			if got != tt.wantDest {
				t.Fatalf("destination %q, want %q", got, tt.wantDest)
			}
		})
	}
}

func TestSplitShares(t *testing.T) {
	tab := load(t, "routes.yaml")
	req := route.Request{Method: "GET", Path: "/api/x"}
	counts := map[string]int{}
	for r := uint64(0); r < route.TotalWeight; r++ {
		counts[tab.Match("payments", &req, r).Target.Destination.Subset]++
	}
	if counts["v1"] != 9000 || counts["v2"] != 1000 {
		t.Fatalf("over every draw: %v, want v1 9000 and v2 1000", counts)
	}
}

func TestPolicies(t *testing.T) {
	tab := load(t, "routes.yaml")
	rules := tab.Rules("payments")
	byName := map[string]*route.Rule{}
	for _, r := range rules {
		byName[r.Name] = r
	}
	if len(rules) != 7 || rules[6].Name != "default" || rules[6].Index != -1 {
		t.Fatalf("rules %v: want 6 routes and the catch-all last", rules)
	}

	split := byName["api-split"]
	if split.Timeout != 2*time.Second || split.Hedge == nil || split.Hedge.Delay != 100*time.Millisecond {
		t.Errorf("api-split: timeout %v, hedge %+v", split.Timeout, split.Hedge)
	}
	rp := split.RetryFor(split.Targets[0])
	if rp.MaxAttempts != 4 || rp.PerTryTimeout != 500*time.Millisecond ||
		!rp.On.GRPCCode(codes.Unavailable) || rp.On.GRPCCode(codes.Internal) ||
		!rp.On.HTTPStatus(503) || rp.On.HTTPStatus(502) || rp.On.ConnectFailure {
		t.Errorf("api-split retry policy %+v", rp)
	}
	// The default route takes the destination's retries.
	def := byName["default"]
	rp = def.RetryFor(def.Targets[0])
	if rp == nil || rp.MaxAttempts != 3 || !rp.On.HTTPStatus(502) || !rp.On.ConnectFailure || rp.On.HTTPStatus(404) {
		t.Errorf("default retry policy %+v", rp)
	}

	// Subset policy overrides the service's block by block.
	v2 := split.Targets[1].Destination
	if v2.Policy.LoadBalancer.Policy != "least_request" || v2.Policy.Breaker == nil || v2.Policy.Breaker.OpenTimeout.Std() != 5*time.Second {
		t.Errorf("v2 policy: lb %+v, breaker %+v", v2.Policy.LoadBalancer, v2.Policy.Breaker)
	}
	v1 := split.Targets[0].Destination
	if v1.Policy.LoadBalancer.Policy != "round_robin" || v1.Policy.Outlier.ConsecutiveFailures != 3 {
		t.Errorf("v1 policy: lb %+v, outlier %+v", v1.Policy.LoadBalancer, v1.Policy.Outlier)
	}
	if def.Targets[0].Destination != v1 {
		t.Error("the catch-all and the split do not share the v1 destination")
	}

	// Subsets select endpoints by meta and tags.
	for _, tc := range []struct {
		d    *route.Destination
		ep   discovery.Endpoint
		want bool
	}{
		{v2, discovery.Endpoint{Meta: map[string]string{"version": "v2"}}, true},
		{v2, discovery.Endpoint{Meta: map[string]string{"version": "v1"}}, false},
		{v2, discovery.Endpoint{}, false},
		{byName["debug-without-beta"].Targets[0].Destination, discovery.Endpoint{Tags: []string{"a", "canary"}}, true},
		{byName["debug-without-beta"].Targets[0].Destination, discovery.Endpoint{Tags: []string{"a"}}, false},
	} {
		if got := tc.d.Matches(&tc.ep); got != tc.want {
			t.Errorf("%s matches %+v: %v, want %v", tc.d, tc.ep, got, tc.want)
		}
	}

	fault := byName["debug-without-beta"].Fault
	if fault.AbortHTTP != 503 || fault.AbortGRPC != codes.Unavailable || fault.AbortShare != 500_000 ||
		fault.Delay != 20*time.Millisecond || fault.DelayShare != 100_000 || fault.MaxActive != 10 {
		t.Errorf("fault %+v", fault)
	}
	if !fault.AbortShare.Hit(499_999) || fault.AbortShare.Hit(500_000) || !fault.AbortShare.Hit(1_000_000) {
		t.Error("a 50% share does not hit the lower half of the draws")
	}
	if m := byName["debug-without-beta"].Mirror; m.String() != "payments/v2 25%" {
		t.Errorf("mirror %v", m)
	}

	ext := tab.Match("echo", &route.Request{Path: "/pkg.Echo/X", Metadata: metadata.Pairs("x-user", "a@example.org")}, 0).Target.Destination.External
	if ext == nil || ext.ServerName != "billing.example.org" || len(ext.Endpoints) != 1 || ext.Endpoints[0].Addr != "203.0.113.7:443" || ext.DNS {
		t.Errorf("external %+v", ext)
	}

	var dests []string
	for _, d := range tab.Destinations() {
		dests = append(dests, d.String())
	}
	if got, want := dests, []string{"billing", "echo", "payments/canary", "payments/v1", "payments/v2"}; !equal(got, want) {
		t.Errorf("destinations %v, want %v", got, want)
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestActions(t *testing.T) {
	tab := load(t, "routes.yaml")

	d := tab.Match("payments", &route.Request{Method: "GET", Path: "/admin/x"}, 0)
	u, _ := url.Parse("http://user:pw@payments/admin/x?a=1")
	if got := d.Rule.Location(u); got != "https://pay.example.org:8443/admin/x?a=1" || d.Rule.Redirect.Code != 308 {
		t.Errorf("location %q, code %d", got, d.Rule.Redirect.Code)
	}

	d = tab.Match("payments", &route.Request{Method: "GET", Path: "/healthz"}, 0)
	if dr := d.Rule.DirectResponse; dr == nil || dr.Status != 200 || dr.Body != "ok" {
		t.Errorf("direct response %+v", dr)
	}

	d = tab.Match("payments", &route.Request{Method: "GET", Path: "/old/a/b"}, 0)
	if got := d.RewritePath("/old/a/b"); got != "/new/a/b" {
		t.Errorf("rewrite: %q", got)
	}
	if d.Rule.Authority != "payments.internal" {
		t.Errorf("authority %q", d.Rule.Authority)
	}
	h := http.Header{"X-Debug": {"1"}, "Via": {"proxy"}}
	d.Rule.Request.ApplyHTTP(h)
	if h.Get("X-Debug") != "" || h.Get("X-Legacy") != "1" || len(h.Values("Via")) != 2 {
		t.Errorf("request headers %v", h)
	}
	md := metadata.Pairs("x-debug", "1", "via", "proxy")
	d.Rule.Request.ApplyMetadata(md)
	if len(md["x-debug"]) != 0 || md["x-legacy"][0] != "1" || len(md["via"]) != 2 {
		t.Errorf("metadata %v", md)
	}

	d = tab.Match("payments", &route.Request{Method: "GET", Path: "/api/x"}, 9999)
	h = http.Header{}
	d.Rule.Request.ApplyHTTP(h) // nil: no change
	d.Target.Request.ApplyHTTP(h)
	if h.Get("X-Version") != "v2" {
		t.Errorf("backend headers %v", h)
	}
	if got := d.RewritePath("/api/x"); got != "/api/x" {
		t.Errorf("no rewrite: %q", got)
	}
	if got := (route.Decision{}).RewritePath("/a"); got != "/a" {
		t.Errorf("zero decision rewrite: %q", got)
	}
}

func TestRewriteRegexAndExact(t *testing.T) {
	tab, err := route.Compile(mustParse(t, `
services:
  web:
    routes:
      - match: [{path: {exact: /a}}, {path: {prefix: /b/}}]
        rewrite: {path: /z}
      - match: [{path: {prefix: /r/}}]
        rewrite: {regex: {pattern: "^/r/([^/]+)/(.*)$", substitution: "/$2/$1"}}
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want string }{
		{"/a", "/z"},
		{"/b/c", "/zc"},
		{"/r/x/y/z", "/y/z/x"},
	} {
		d := tab.Match("web", &route.Request{Method: "GET", Path: tc.in}, 0)
		if got := d.RewritePath(tc.in); got != tc.want {
			t.Errorf("%s: rewritten to %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNilAndZeroTables(t *testing.T) {
	var nilTab *route.Table
	if d := nilTab.Match("a", &route.Request{}, 0); d.Rule != nil {
		t.Error("a nil table matched")
	}
	if (&route.Table{}).Has("a") || nilTab.Has("a") {
		t.Error("an empty table has a service")
	}
}

func TestFaultCap(t *testing.T) {
	tab := load(t, "routes.yaml")
	f := tab.Match("payments", &route.Request{Method: "GET", Path: "/", RawQuery: "debug=1"}, 0).Rule.Fault
	for i := range f.MaxActive {
		if !f.Start() {
			t.Fatalf("faulted call %d refused under a cap of %d", i+1, f.MaxActive)
		}
	}
	if f.Start() {
		t.Fatal("a faulted call over the cap was admitted")
	}
	f.Done()
	if !f.Start() {
		t.Fatal("a slot that was freed was not reused")
	}
	uncapped := &route.FaultPolicy{}
	for range 100 {
		if !uncapped.Start() {
			t.Fatal("no cap refused a call")
		}
	}
	for i, d := range tab.Destinations() {
		if d.Index != i {
			t.Errorf("destination %s has index %d at %d", d, d.Index, i)
		}
	}
}

// TestOneDrawServesEveryDecision: the split, the delay, the abort and the
// mirror of a call all read the same random number and still come out
// independent, each at its own share.
func TestOneDrawServesEveryDecision(t *testing.T) {
	tab, err := route.Compile(mustParse(t, base+`
      - backends: [{subset: v1, weight: 9000}, {subset: v2, weight: 1000}]
        fault: {delay: {fixed: 1s, percent: 10}, abort: {httpStatus: 503, percent: 50}}
        mirror: {subset: v2, percent: 25}
`))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 200_000
	var v2, delayed, aborted, mirrored, v2Aborted, delayedAborted, abortedMirrored int
	for range n {
		rnd := rng.Uint64()
		d := tab.Match("payments", &route.Request{Method: "GET", Path: "/"}, rnd)
		isV2 := d.Target.Destination.Subset == "v2"
		de, ab, mi := d.Rule.Fault.Delays(rnd), d.Rule.Fault.Aborts(rnd), d.Rule.Mirror.Mirrors(rnd)
		count := func(c *int, b bool) {
			if b {
				*c++
			}
		}
		count(&v2, isV2)
		count(&delayed, de)
		count(&aborted, ab)
		count(&mirrored, mi)
		count(&v2Aborted, isV2 && ab)
		count(&delayedAborted, de && ab)
		count(&abortedMirrored, ab && mi)
	}
	for _, c := range []struct {
		name  string
		got   int
		share float64
	}{
		{"v2", v2, 0.10}, {"delayed", delayed, 0.10}, {"aborted", aborted, 0.50}, {"mirrored", mirrored, 0.25},
		{"v2 and aborted", v2Aborted, 0.05}, {"delayed and aborted", delayedAborted, 0.05},
		{"aborted and mirrored", abortedMirrored, 0.125},
	} {
		// Five standard deviations of a binomial count.
		want := c.share * n
		if tol := 5 * math.Sqrt(n*c.share*(1-c.share)); math.Abs(float64(c.got)-want) > tol {
			t.Errorf("%s: %d of %d, want %.0f ± %.0f", c.name, c.got, n, want, tol)
		}
	}
}

// TestTableSharesNothingWithConfig: changing a config after compiling it
// does not change the table.
func TestTableSharesNothingWithConfig(t *testing.T) {
	cfg := mustParse(t, `
services:
  web:
    subsets: {v2: {tags: [v2], meta: {zone: a}, trafficPolicy: {loadBalancer: {policy: random}}}}
    routes:
      - match: [{path: {prefix: /old}}]
        redirect: {path: /new}
      - match: [{headers: {x-a: {exact: b}}}]
        backends: [{subset: v2}]
`)
	tab, err := route.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	version := tab.Version()
	sub := cfg.Services["web"].Subsets["v2"]
	sub.Tags[0], sub.Meta["zone"], sub.TrafficPolicy.LoadBalancer.Policy = "x", "b", "maglev"
	cfg.Services["web"].Routes[0].Redirect.Path = "/elsewhere"
	cfg.Services["web"].Routes[1].Match[0].Headers["x-a"].Exact = "c"

	d := tab.Match("web", &route.Request{Method: "GET", Path: "/", Header: http.Header{"X-A": {"b"}}}, 0)
	dest := d.Target.Destination
	if dest.Subset != "v2" || !dest.Matches(&discovery.Endpoint{Tags: []string{"v2"}, Meta: map[string]string{"zone": "a"}}) ||
		dest.Policy.LoadBalancer.Policy != "random" {
		t.Errorf("destination changed with the config: %+v", dest)
	}
	if r := tab.Rules("web")[0]; r.Redirect.Path != "/new" {
		t.Errorf("redirect changed with the config: %+v", r.Redirect)
	}
	if got := tab.Config().Services["web"].Routes[0].Redirect.Path; got != "/new" || tab.Version() != version {
		t.Errorf("the table's config changed: %q, version %s", got, tab.Version())
	}
}
