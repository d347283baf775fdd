package route_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// setEntry writes a config entry to the agent.
func setEntry(t *testing.T, c *api.Client, e api.ConfigEntry) {
	t.Helper()
	if ok, _, err := c.ConfigEntries().Set(e, nil); err != nil || !ok {
		t.Fatalf("writing %s/%s: ok=%v err=%v", e.GetKind(), e.GetName(), ok, err)
	}
}

// waitFor polls cond until it holds, failing the test after 30 s.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 30 s: %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for state
	}
	return time.Since(start)
}

// share returns the weight each subset of the route matching req gets.
func share(tab *route.Table, service string, req *route.Request) map[string]int {
	d := tab.Match(service, req, 0)
	if d.Rule == nil {
		return nil
	}
	out := map[string]int{}
	for _, tg := range d.Rule.Targets {
		out[tg.Destination.Subset] += tg.Weight
	}
	return out
}

func resolver(filterV2 string) *api.ServiceResolverConfigEntry {
	return &api.ServiceResolverConfigEntry{
		Kind:          api.ServiceResolver,
		Name:          "web",
		DefaultSubset: "v1",
		Subsets: map[string]api.ServiceResolverSubset{
			"v1": {Filter: `Service.Meta.version == "1"`},
			"v2": {Filter: filterV2},
		},
		ConnectTimeout: 3 * time.Second,
		LoadBalancer:   &api.LoadBalancer{Policy: "least_request"},
	}
}

func splitter(v1, v2 float32) *api.ServiceSplitterConfigEntry {
	return &api.ServiceSplitterConfigEntry{
		Kind: api.ServiceSplitter,
		Name: "web",
		Splits: []api.ServiceSplit{
			{Weight: v1, ServiceSubset: "v1", RequestHeaders: &api.HTTPHeaderModifiers{Set: map[string]string{"x-split": "v1"}}},
			{Weight: v2, ServiceSubset: "v2"},
		},
	}
}

// TestConsulSource writes service-defaults, -resolver, -splitter and
// -router entries to a real agent and checks that the published table
// says what they say, follows changes, and keeps the last good table
// when a change cannot be translated.
func TestConsulSource(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	c := a.Client()
	const canaryFilter = `"canary" in Service.Tags and Service.Meta.version == "2"`
	setEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"})
	setEntry(t, c, resolver(canaryFilter))
	setEntry(t, c, splitter(90, 10))
	router := func(retryOn ...string) *api.ServiceRouterConfigEntry {
		r := &api.ServiceRouterConfigEntry{
			Kind: api.ServiceRouter,
			Name: "web",
			Routes: []api.ServiceRoute{{
				Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{
					PathPrefix: "/api/",
					Header:     []api.ServiceRouteHTTPMatchHeader{{Name: "x-canary", Exact: "1"}},
				}},
				Destination: &api.ServiceRouteDestination{
					ServiceSubset:      "v2",
					PrefixRewrite:      "/",
					RequestTimeout:     2 * time.Second,
					NumRetries:         3,
					RetryOnStatusCodes: []uint32{503},
					RequestHeaders:     &api.HTTPHeaderModifiers{Add: map[string]string{"x-routed": "canary"}},
				},
			}},
		}
		r.Routes[0].Destination.RetryOn = retryOn
		return r
	}
	setEntry(t, c, router())

	var rejections []route.Rejection
	rejected := make(chan route.Rejection, 16)
	src, err := route.NewConsul(c, []string{"web"}, route.WithConsulWait(30*time.Second),
		route.WithOnReject(func(r route.Rejection) { rejected <- r }))
	if err != nil {
		t.Fatal(err)
	}
	runReady(t, src)

	canary := &route.Request{Method: "GET", Path: "/api/users", Header: http.Header{"X-Canary": {"1"}}}
	plain := &route.Request{Method: "GET", Path: "/api/users", Header: http.Header{}}
	v1 := &discovery.Endpoint{ID: "a", Addr: "127.0.0.1:1", Meta: map[string]string{"version": "1"}}
	v2 := &discovery.Endpoint{ID: "b", Addr: "127.0.0.1:2", Tags: []string{"canary"}, Meta: map[string]string{"version": "2"}}
	v2plain := &discovery.Endpoint{ID: "c", Addr: "127.0.0.1:3", Meta: map[string]string{"version": "2"}}

	tab := src.Table()
	t.Run("Router", func(t *testing.T) {
		d := tab.Match("web", canary, 0)
		if d.Target == nil || d.Target.Destination.Subset != "v2" {
			t.Fatalf("canary call went to %+v, want web/v2", d.Target)
		}
		if d.Rule.Name != "service-router/web.Routes[0]" {
			t.Errorf("rule %q, want it named after the router's route", d.Rule.Name)
		}
		if d := tab.Match("web", plain, 0); d.Rule.Name != "service-router/web catch-all" {
			t.Errorf("rule %q, want the router's catch-all", d.Rule.Name)
		}
		if d.Rule.Timeout != 2*time.Second {
			t.Errorf("timeout %v, want 2s", d.Rule.Timeout)
		}
		rp := d.Rule.RetryFor(d.Target)
		if rp == nil || rp.MaxAttempts != 4 || !rp.On.HTTPStatus(503) || rp.On.HTTPStatus(500) {
			t.Errorf("retry policy %+v, want 3 retries on 503 only", rp)
		}
		if got := d.RewritePath("/api/users"); got != "/users" {
			t.Errorf("rewritten path %q, want /users", got)
		}
		h := http.Header{}
		d.Rule.Request.ApplyHTTP(h)
		if h.Get("X-Routed") != "canary" {
			t.Errorf("request headers %v, want X-Routed: canary", h)
		}
		if !d.Target.Destination.Matches(v2) || d.Target.Destination.Matches(v2plain) || d.Target.Destination.Matches(v1) {
			t.Errorf("subset v2 = %+v does not select by the filter %s", tab.Config().Services["web"].Subsets["v2"], canaryFilter)
		}
		// A path outside the prefix, or no header: the splitter.
		for _, req := range []*route.Request{plain, {Method: "GET", Path: "/other", Header: http.Header{"X-Canary": {"1"}}}} {
			if got := share(tab, "web", req); got["v1"] != 9000 || got["v2"] != 1000 {
				t.Errorf("%s %v: split %v, want v1 9000 v2 1000", req.Path, req.Header, got)
			}
		}
	})
	t.Run("Splitter", func(t *testing.T) {
		counts := map[string]int{}
		for rnd := uint64(0); rnd < route.TotalWeight; rnd++ {
			d := tab.Match("web", plain, rnd)
			counts[d.Target.Destination.Subset]++
			if d.Target.Destination.Subset == "v1" {
				h := http.Header{}
				d.Target.Request.ApplyHTTP(h)
				if h.Get("X-Split") != "v1" {
					t.Fatalf("split v1 headers %v, want X-Split: v1 from the splitter entry", h)
				}
			}
		}
		if counts["v1"] != 9000 || counts["v2"] != 1000 {
			t.Errorf("over every number: %v, want v1 9000 v2 1000", counts)
		}
	})
	t.Run("ResolverAndDefaults", func(t *testing.T) {
		cfg := tab.Config()
		w := cfg.Services["web"]
		if w.Protocol != "http" {
			t.Errorf("protocol %q, want http from service-defaults", w.Protocol)
		}
		if w.TrafficPolicy == nil || w.TrafficPolicy.LoadBalancer == nil || w.TrafficPolicy.LoadBalancer.Policy != "least_request" {
			t.Errorf("traffic policy %+v, want least_request", w.TrafficPolicy)
		}
		if cp := w.TrafficPolicy.ConnectionPool; cp == nil || cp.ConnectTimeout != route.Duration(3*time.Second) {
			t.Errorf("connection pool %+v, want the resolver's connect timeout of 3s", cp)
		}
		if got := tab.ConnectTimeout("web"); got != 3*time.Second {
			t.Errorf("table's connect timeout of web %v, want 3s", got)
		}
		for _, fe := range tab.Warnings() {
			if strings.Contains(fe.Path, "ConnectTimeout") {
				t.Errorf("warning for an applied field: %v", fe)
			}
		}
	})

	// A change of split reaches the table.
	setEntry(t, c, splitter(50, 50))
	took := waitFor(t, "split 50/50", func() bool {
		s := share(src.Table(), "web", plain)
		return s["v1"] == 5000 && s["v2"] == 5000
	})
	t.Logf("split change applied after %v", took)

	// A filter tags and meta cannot say selects a subset by filter, for a
	// discovery watch of its own.
	setEntry(t, c, resolver(`Service.Port == 8080`))
	waitFor(t, "subset v2 by filter", func() bool {
		sub := src.Table().Config().Services["web"].Subsets["v2"]
		return sub != nil && sub.Filter == `Service.Port == 8080` && len(sub.Meta) == 0
	})
	d := src.Table().Match("web", canary, 0)
	if tg, own := d.Target.Destination.Target(); !own || tg.Filter != `Service.Port == 8080` || tg.Service != "web" || tg.OnlyPassing {
		t.Errorf("destination %s: target %+v (own watch %v), want web's by the filter, passing and warning", d.Target.Destination, tg, own)
	}
	good := src.Table()

	// A route weft cannot apply is refused whole: the table stays.
	setEntry(t, c, router("envoy-ratelimited"))
	setEntry(t, c, splitter(20, 80)) // a good change in the same refused state
	select {
	case r := <-rejected:
		rejections = append(rejections, r)
	case <-time.After(30 * time.Second):
		t.Fatalf("no rejection within 30 s: %+v", src.Status())
	}
	st := src.Status()
	if st.Table != good || src.Table().Version() != good.Version() {
		t.Errorf("table changed after a refused chain: %s, want %s", src.Table().Version(), good.Version())
	}
	if st.LastRejection == nil || st.Rejected == 0 {
		t.Fatalf("status %+v records no rejection", st)
	}
	msg := st.LastRejection.Error()
	for _, want := range []string{`service-router/web.Routes[0].Destination.RetryOn[0]`, "envoy-ratelimited"} {
		if !strings.Contains(msg, want) {
			t.Errorf("rejection %q does not name %q", msg, want)
		}
	}
	if !errors.Is(st.LastRejection.Err, route.ErrUnsupported) || !errors.Is(st.LastRejection.Err, route.ErrInvalid) {
		t.Errorf("rejection %v does not wrap ErrUnsupported and ErrInvalid", st.LastRejection.Err)
	}
	if s := share(src.Table(), "web", plain); s["v1"] != 5000 || s["v2"] != 5000 {
		t.Errorf("split %v while refused, want the last good 50/50", s)
	}
	t.Logf("refused: %v", rejections[0])

	// Fixed in Consul, the pending split applies.
	setEntry(t, c, router())
	setEntry(t, c, resolver(canaryFilter))
	waitFor(t, "split 20/80 after the fix", func() bool {
		s := share(src.Table(), "web", plain)
		return s["v1"] == 2000 && s["v2"] == 8000
	})
}

func TestConsulFilter(t *testing.T) {
	for _, tc := range []struct {
		filter  string
		matches []discovery.Endpoint
		misses  []discovery.Endpoint
		err     string
	}{
		{filter: `Service.Meta.version == "2"`,
			matches: []discovery.Endpoint{{Meta: map[string]string{"version": "2"}}},
			misses:  []discovery.Endpoint{{Meta: map[string]string{"version": "1"}}, {}}},
		{filter: `"canary" in Service.Tags`,
			matches: []discovery.Endpoint{{Tags: []string{"a", "canary"}}},
			misses:  []discovery.Endpoint{{Tags: []string{"a"}}}},
		{filter: `Service.Tags contains "canary" and Service.Meta.zone == "a" AND "x" in Service.Tags`,
			matches: []discovery.Endpoint{{Tags: []string{"x", "canary"}, Meta: map[string]string{"zone": "a"}}},
			misses:  []discovery.Endpoint{{Tags: []string{"canary"}, Meta: map[string]string{"zone": "a"}}}},
		{filter: `Service.Meta.version == "1" or Service.Meta.version == "2"`, err: `at "or`},
		{filter: `Service.Meta.version != "1"`, err: "unsupported expression"},
		{filter: `Service.Port == "8080"`, err: "only Service.Meta.<key>"},
		{filter: `Service.Meta.v == "1" and`, err: "only and joins"},
		{filter: `Service.Meta.v == "1" and Service.Meta.v == "2"`, err: "no instance can"},
		{filter: `Service.Meta.v == "1`, err: "unterminated"},
		{filter: `(Service.Meta.v == "1")`, err: "unsupported expression"},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			sub, err := route.ConsulFilterForTest(tc.filter)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one containing %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg := &route.Config{Services: map[string]*route.Service{"s": {
				Subsets: map[string]*route.Subset{"x": sub},
				Routes:  []*route.Route{{Backends: []*route.Backend{{Subset: "x"}}}},
			}}}
			tab, err := route.Compile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			dst := tab.Match("s", &route.Request{Path: "/"}, 0).Target.Destination
			for _, e := range tc.matches {
				if !dst.Matches(&e) {
					t.Errorf("%+v does not match %+v", e, sub)
				}
			}
			for _, e := range tc.misses {
				if dst.Matches(&e) {
					t.Errorf("%+v matches %+v", e, sub)
				}
			}
		})
	}
}

func TestNewConsulRefuses(t *testing.T) {
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		client   *api.Client
		services []string
	}{
		{"nil client", nil, []string{"web"}},
		{"no services", c, nil},
		{"empty name", c, []string{""}},
		{"twice", c, []string{"web", "web"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := route.NewConsul(tc.client, tc.services); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// runConsul starts src and stops it when the test ends.
func runConsul(t *testing.T, src *route.Consul) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
}

// runReady starts src, stops it when the test ends, and waits up to 30 s
// for its first table.
func runReady(t *testing.T, src *route.Consul) {
	t.Helper()
	runConsul(t, src)
	select {
	case <-src.Ready():
	case <-time.After(30 * time.Second):
		t.Fatalf("no table within 30 s: %+v", src.Status())
	}
}

// TestConsulSourceChains translates chains of several shapes, written to
// a real agent: each case writes its entries under its own service names
// and checks the table, or the rejection, of a source on them.
func TestConsulSourceChains(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	c := a.Client()
	defaults := func(name, proto string) api.ConfigEntry {
		return &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: name, Protocol: proto}
	}
	tagSubsets := func(tags ...string) map[string]api.ServiceResolverSubset {
		m := map[string]api.ServiceResolverSubset{}
		for _, tg := range tags {
			m[tg] = api.ServiceResolverSubset{Filter: `"` + tg + `" in Service.Tags`}
		}
		return m
	}
	for _, tc := range []struct {
		name     string
		services []string
		entries  []api.ConfigEntry
		check    func(t *testing.T, tab *route.Table)
		reject   string // a rejection naming this, instead of a table
	}{{
		name:     "SplitterInThirdsAcrossServices",
		services: []string{"a1"},
		entries: []api.ConfigEntry{
			defaults("a1", "http"), defaults("a2", "http"),
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "a1", Subsets: tagSubsets("v1", "v2")},
			&api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "a1", Splits: []api.ServiceSplit{
				{Weight: 33.33, ServiceSubset: "v1"}, {Weight: 33.33, ServiceSubset: "v2"}, {Weight: 33.34, Service: "a2"}}},
		},
		check: func(t *testing.T, tab *route.Table) {
			d := tab.Match("a1", &route.Request{Method: "GET", Path: "/"}, 0)
			var got []string
			for _, tg := range d.Rule.Targets {
				got = append(got, tg.Destination.String()+"="+strconv.Itoa(tg.Weight))
			}
			if want := "a1/v1=3333 a1/v2=3333 a2=3334"; strings.Join(got, " ") != want {
				t.Errorf("targets %v, want %s", got, want)
			}
		},
	}, {
		name:     "RedirectToAnotherServicesSubset",
		services: []string{"b1"},
		entries: []api.ConfigEntry{
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "b2", Subsets: map[string]api.ServiceResolverSubset{
				"blue": {Filter: `Service.Meta.color == "blue"`}}},
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "b1", Redirect: &api.ServiceResolverRedirect{Service: "b2", ServiceSubset: "blue"}},
		},
		check: func(t *testing.T, tab *route.Table) {
			d := tab.Match("b1", &route.Request{Path: "/x"}, 0)
			if d.Target == nil || d.Target.Destination.String() != "b2/blue" {
				t.Fatalf("target %v, want b2/blue", d.Target)
			}
			if !d.Target.Destination.Matches(&discovery.Endpoint{Meta: map[string]string{"color": "blue"}}) {
				t.Errorf("b2/blue does not select color=blue")
			}
		},
	}, {
		name:     "DefaultSubsetHashBalancerAndWarnings",
		services: []string{"c1"},
		entries: []api.ConfigEntry{
			defaults("c1", "grpc"), defaults("c2", "grpc"),
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "c1", DefaultSubset: "v1",
				Subsets:  tagSubsets("v1", "v2"),
				Failover: map[string]api.ServiceResolverFailover{"*": {Service: "c2"}},
				LoadBalancer: &api.LoadBalancer{Policy: "maglev", HashPolicies: []api.HashPolicy{
					{Field: "header", FieldValue: "x-user"}, {SourceIP: true}}}},
		},
		check: func(t *testing.T, tab *route.Table) {
			d := tab.Match("c1", &route.Request{Path: "/pkg.S/M", Metadata: nil}, 0)
			if d.Target == nil || d.Target.Destination.String() != "c1/v1" {
				t.Fatalf("target %v, want the default subset c1/v1", d.Target)
			}
			lb := d.Target.Destination.Policy.LoadBalancer
			if lb == nil || lb.Policy != "maglev" || lb.HashHeader != "x-user" {
				t.Errorf("load balancer %+v, want maglev on x-user", lb)
			}
			if p := tab.Config().Services["c1"].Protocol; p != "grpc" {
				t.Errorf("protocol %q, want grpc", p)
			}
			var paths []string
			for _, w := range tab.Warnings() {
				paths = append(paths, w.Path)
			}
			for _, want := range []string{"service-resolver/c1.LoadBalancer.HashPolicies[1].SourceIP"} {
				if !slices.Contains(paths, want) {
					t.Errorf("warnings %v lack %s", paths, want)
				}
			}
			if f := d.Target.Destination.Failover; len(f) != 1 || f[0].String() != "c2" {
				t.Errorf("failover %v, want c2", f)
			}
		},
	}, {
		name:     "QueryParameterHashAndConnectTimeout",
		services: []string{"q1"},
		entries: []api.ConfigEntry{
			defaults("q1", "http"),
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "q1", ConnectTimeout: 1500 * time.Millisecond,
				LoadBalancer: &api.LoadBalancer{Policy: "ring_hash", HashPolicies: []api.HashPolicy{
					{Field: "query_parameter", FieldValue: "user"}, {Field: "header", FieldValue: "x-user"}}}},
		},
		check: func(t *testing.T, tab *route.Table) {
			d := tab.Match("q1", &route.Request{Path: "/x"}, 0)
			if d.Target == nil {
				t.Fatal("no target")
			}
			p := d.Target.Destination.Policy
			if lb := p.LoadBalancer; lb == nil || lb.Policy != "ring_hash" || lb.HashQuery != "user" || lb.HashHeader != "" {
				t.Errorf("load balancer %+v, want ring_hash on the query parameter user alone", lb)
			}
			if cp := p.ConnectionPool; cp == nil || cp.ConnectTimeout != route.Duration(1500*time.Millisecond) {
				t.Errorf("connection pool %+v, want the resolver's connect timeout", cp)
			}
			if got := tab.ConnectTimeout("q1"); got != 1500*time.Millisecond {
				t.Errorf("connect timeout %v, want 1.5s", got)
			}
			var paths []string
			for _, w := range tab.Warnings() {
				paths = append(paths, w.Path)
			}
			if want := []string{"service-resolver/q1.LoadBalancer.HashPolicies[1]"}; !slices.Equal(paths, want) {
				t.Errorf("warnings %v, want %v", paths, want)
			}
		},
	}, {
		name:     "FailoverBySubsetToSubsetsAndDatacenters",
		services: []string{"g1"},
		entries: []api.ConfigEntry{
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "g1", DefaultSubset: "v1",
				Subsets: map[string]api.ServiceResolverSubset{
					"v1": {Filter: `Service.Meta.version == "1"`},
					"v2": {Filter: `Service.Meta.version == "2"`},
					"v3": {Filter: `Service.Meta.version != "1" and Service.Meta.version != "2"`, OnlyPassing: true},
				},
				Failover: map[string]api.ServiceResolverFailover{
					"v1": {Targets: []api.ServiceResolverFailoverTarget{{ServiceSubset: "v2"}, {ServiceSubset: "v3"}, {Datacenter: "dc2"}}},
					"*":  {Datacenters: []string{"dc3"}},
				}},
		},
		check: func(t *testing.T, tab *route.Table) {
			d := tab.Match("g1", &route.Request{Path: "/"}, 0).Target.Destination
			var got []string
			for _, f := range d.Failover {
				got = append(got, f.String())
			}
			if want := "g1/v2 g1/v3 g1/v1@dc2"; strings.Join(got, " ") != want {
				t.Errorf("failover of %s: %v, want %s", d, got, want)
			}
			tg, own := d.Failover[1].Target()
			if !own || tg.Filter == "" || !tg.OnlyPassing {
				t.Errorf("g1/v3 target %+v (own watch %v), want its own by filter, passing only", tg, own)
			}
			tg, own = d.Failover[2].Target()
			if !own || tg.Datacenter != "dc2" || tg.Filter != "" {
				t.Errorf("g1/v1@dc2 target %+v (own watch %v), want its own in dc2", tg, own)
			}
			for _, w := range tab.Warnings() {
				if strings.Contains(w.Path, "Failover") {
					t.Errorf("warning %v", w)
				}
			}
		},
	}, {
		name:     "RouterMatchesAndRetries",
		services: []string{"d1"},
		entries: []api.ConfigEntry{
			defaults("d1", "http"),
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "d1", Subsets: tagSubsets("v2"), RequestTimeout: 4 * time.Second},
			&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "d1", Routes: []api.ServiceRoute{{
				Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{
					PathRegex: "/admin/[a-z]+", Methods: []string{"POST"},
					Header:     []api.ServiceRouteHTTPMatchHeader{{Name: "x-debug", Present: true, Invert: true}},
					QueryParam: []api.ServiceRouteHTTPMatchQueryParam{{Name: "v", Exact: "2"}},
				}},
				Destination: &api.ServiceRouteDestination{ServiceSubset: "v2", NumRetries: 2, RetryOn: []string{"5xx", "reset"}, RetryOnConnectFailure: true},
			}}},
		},
		check: func(t *testing.T, tab *route.Table) {
			hit := &route.Request{Method: "POST", Path: "/admin/users", RawQuery: "v=2", Header: http.Header{}}
			for _, tc := range []struct {
				req  *route.Request
				want string
			}{
				{hit, "d1/v2"},
				{&route.Request{Method: "POST", Path: "/admin/users", RawQuery: "v=2", Header: http.Header{"X-Debug": {""}}}, "d1"},
				{&route.Request{Method: "GET", Path: "/admin/users", RawQuery: "v=2", Header: http.Header{}}, "d1"},
				{&route.Request{Method: "POST", Path: "/admin/users", RawQuery: "v=1", Header: http.Header{}}, "d1"},
			} {
				if d := tab.Match("d1", tc.req, 0); d.Target == nil || d.Target.Destination.String() != tc.want {
					t.Errorf("%s %s?%s %v: %v, want %s", tc.req.Method, tc.req.Path, tc.req.RawQuery, tc.req.Header, d.Target, tc.want)
				}
			}
			d := tab.Match("d1", hit, 0)
			rp := d.Rule.RetryFor(d.Target)
			if rp == nil || rp.MaxAttempts != 3 || !rp.On.HTTPStatus(502) || !rp.On.Reset || !rp.On.ConnectFailure {
				t.Errorf("retry policy %+v, want 2 retries on 5xx, reset, connect-failure", rp)
			}
			if d.Rule.Timeout != 4*time.Second {
				t.Errorf("timeout %v, want the resolver's 4s", d.Rule.Timeout)
			}
		},
	}, {
		name:     "RedirectToAnotherDatacenterRefused",
		services: []string{"e1"},
		entries: []api.ConfigEntry{
			&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "e1", Redirect: &api.ServiceResolverRedirect{Service: "e1", Datacenter: "dc2"}},
		},
		reject: "service-resolver/e1.Redirect.Datacenter",
	}, {
		name:     "RatelimitRetryRefused",
		services: []string{"f1"},
		entries: []api.ConfigEntry{
			defaults("f1", "http"),
			&api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "f1", Routes: []api.ServiceRoute{{
				Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/x"}},
				Destination: &api.ServiceRouteDestination{RetryOn: []string{"envoy-ratelimited"}},
			}}},
		},
		reject: "service-router/f1.Routes[0].Destination.RetryOn[0]",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			for _, e := range tc.entries {
				setEntry(t, c, e)
			}
			src, err := route.NewConsul(c, tc.services)
			if err != nil {
				t.Fatal(err)
			}
			runConsul(t, src)
			if tc.reject != "" {
				waitFor(t, "a rejection", func() bool { return src.Status().LastRejection != nil })
				st := src.Status()
				if msg := st.LastRejection.Error(); !strings.Contains(msg, tc.reject) {
					t.Errorf("rejection %q does not name %s", msg, tc.reject)
				}
				if st.Table.Has(tc.services[0]) {
					t.Errorf("a table was published: %v", st.Table.Services())
				}
				return
			}
			select {
			case <-src.Ready():
			case <-time.After(30 * time.Second):
				t.Fatalf("no table within 30 s: %+v", src.Status())
			}
			tc.check(t, src.Table())
		})
	}
}

// TestConsulRefusalIsPerService: a chain that cannot be translated holds
// back only its own service. A service whose first chain is refused has
// no routes while the others' are published, and a later change of
// another service still applies while one stays refused.
func TestConsulRefusalIsPerService(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	c := a.Client()
	split := func(name string, v1, v2 float32) *api.ServiceSplitterConfigEntry {
		s := splitter(v1, v2)
		s.Name = name
		s.Splits[0].RequestHeaders = nil
		return s
	}
	resolve := func(name, filterV2 string) *api.ServiceResolverConfigEntry {
		r := resolver(filterV2)
		r.Name = name
		return r
	}
	for _, name := range []string{"web", "api"} {
		setEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: name, Protocol: "http"})
	}
	setEntry(t, c, resolve("web", `Service.Meta.version == "2"`))
	setEntry(t, c, split("web", 90, 10))
	apiRouter := func(retryOn ...string) *api.ServiceRouterConfigEntry {
		return &api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "api", Routes: []api.ServiceRoute{{
			Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/x"}},
			Destination: &api.ServiceRouteDestination{RetryOn: retryOn},
		}}}
	}
	setEntry(t, c, resolve("api", `Service.Meta.version == "2"`))
	setEntry(t, c, split("api", 50, 50))
	setEntry(t, c, apiRouter("envoy-ratelimited")) // a retry condition weft cannot apply

	rejected := make(chan route.Rejection, 16)
	src, err := route.NewConsul(c, []string{"web", "api"}, route.WithConsulWait(30*time.Second),
		route.WithOnReject(func(r route.Rejection) {
			select {
			case rejected <- r:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	runReady(t, src)
	plain := &route.Request{Method: "GET", Path: "/"}
	if s := share(src.Table(), "web", plain); s["v1"] != 9000 || s["v2"] != 1000 {
		t.Errorf("web split %v, want 90/10 beside a refused api", s)
	}
	if s := share(src.Table(), "api", plain); s != nil {
		t.Errorf("api has routes %v from a refused first chain", s)
	}
	select {
	case r := <-rejected:
		if !strings.Contains(r.Error(), `service-router/api.Routes[0].Destination.RetryOn[0]`) {
			t.Errorf("rejection %q does not name api's retry condition", r.Error())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("api's refusal was not reported")
	}

	// web changes while api stays refused: the change applies.
	setEntry(t, c, split("web", 50, 50))
	waitFor(t, "web 50/50 while api is refused", func() bool {
		s := share(src.Table(), "web", plain)
		return s["v1"] == 5000 && s["v2"] == 5000
	})
	if s := share(src.Table(), "api", plain); s != nil {
		t.Errorf("api has routes %v while refused", s)
	}

	// api fixed: its routes join the table.
	setEntry(t, c, apiRouter("5xx"))
	waitFor(t, "api 50/50 once fixed", func() bool {
		s := share(src.Table(), "api", plain)
		return s["v1"] == 5000 && s["v2"] == 5000
	})
}
