package route_test

import (
	"context"
	"errors"
	"net/http"
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
	setEntry(t, c, &api.ServiceRouterConfigEntry{
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
	})

	var rejections []route.Rejection
	rejected := make(chan route.Rejection, 16)
	src, err := route.NewConsul(c, []string{"web"}, route.WithConsulWait(30*time.Second),
		route.WithOnReject(func(r route.Rejection) { rejected <- r }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	}()
	select {
	case <-src.Ready():
	case <-time.After(30 * time.Second):
		t.Fatalf("no table within 30 s: %+v", src.Status())
	}

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
		found := false
		for _, fe := range tab.Warnings() {
			found = found || fe.Path == "service-resolver/web.ConnectTimeout"
		}
		if !found {
			t.Errorf("no warning for the resolver's ConnectTimeout: %v", tab.Warnings())
		}
	})

	// A change of split reaches the table.
	setEntry(t, c, splitter(50, 50))
	took := waitFor(t, "split 50/50", func() bool {
		s := share(src.Table(), "web", plain)
		return s["v1"] == 5000 && s["v2"] == 5000
	})
	t.Logf("split change applied after %v", took)
	good := src.Table()

	// An untranslatable filter is refused whole: the table stays.
	setEntry(t, c, resolver(`Service.Port == 8080`))
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
	for _, want := range []string{`service-resolver/web.Subsets["v2"].Filter`, "Service.Port"} {
		if !strings.Contains(msg, want) {
			t.Errorf("rejection %q does not name %q", msg, want)
		}
	}
	if !errors.Is(st.LastRejection.Err, route.ErrUnsupported) || !errors.Is(st.LastRejection.Err, route.ErrInvalid) {
		t.Errorf("rejection %v does not wrap ErrUnsupported and ErrInvalid", st.LastRejection.Err)
	}
	if s := share(src.Table(), "web", plain); s["v1"] != 5000 {
		t.Errorf("split %v while refused, want the last good 50/50", s)
	}
	t.Logf("refused: %v", rejections[0])

	// Fixed in Consul, the pending split applies.
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
