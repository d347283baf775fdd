package route_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// TestConsulWarningsTable writes config entries with fields weft cannot
// apply to a real agent — in the called service's service-defaults,
// resolver and router, and in the caller's upstream settings — and
// checks that each is a named warning (entry and field path), reported
// once however often the table is rebuilt, and visible in the source's
// status. It prints the table of warnings. Alongside, the caller's
// upstream limits and passive health check reach the table, and a change
// of them applies live.
func TestConsulWarningsTable(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	c := a.Client()
	setEntry(t, c, &api.ServiceConfigEntry{
		Kind: api.ServiceDefaults, Name: "api", Protocol: "http",
		MaxInboundConnections:     100,
		LocalConnectTimeoutMs:     1000,
		LocalRequestTimeoutMs:     2000,
		BalanceInboundConnections: "exact_balance",
		MeshGateway:               api.MeshGatewayConfig{Mode: api.MeshGatewayModeLocal},
	})
	caller := func(maxRequests int) *api.ServiceConfigEntry {
		return &api.ServiceConfigEntry{
			Kind: api.ServiceDefaults, Name: "web", Protocol: "http",
			UpstreamConfig: &api.UpstreamConfiguration{
				Defaults: &api.UpstreamConfig{
					ConnectTimeoutMs: 500,
					PassiveHealthCheck: &api.PassiveHealthCheck{
						Interval: 5 * time.Second, MaxFailures: 3, EnforcingConsecutive5xx: u32p(50),
						MaxEjectionPercent: u32p(40), BaseEjectionTime: durp(20 * time.Second),
					},
				},
				Overrides: []*api.UpstreamConfig{{
					Name: "api", BalanceOutboundConnections: "exact_balance",
					Limits: &api.UpstreamLimits{MaxConnections: intp(8), MaxConcurrentRequests: intp(maxRequests)},
				}},
			},
		}
	}
	setEntry(t, c, caller(2))
	setEntry(t, c, &api.ServiceResolverConfigEntry{
		Kind: api.ServiceResolver, Name: "api",
		LoadBalancer: &api.LoadBalancer{
			Policy:         "ring_hash",
			RingHashConfig: &api.RingHashConfig{MinimumRingSize: 1024},
			HashPolicies: []api.HashPolicy{{Field: "header", FieldValue: "x-user"}, {SourceIP: true},
				{Field: "query_parameter", FieldValue: "user"}},
		},
		ConnectTimeout: 2 * time.Second,
	})
	router := func(prefix string) *api.ServiceRouterConfigEntry {
		return &api.ServiceRouterConfigEntry{
			Kind: api.ServiceRouter, Name: "api",
			Routes: []api.ServiceRoute{{
				Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: prefix}},
				Destination: &api.ServiceRouteDestination{IdleTimeout: 5 * time.Second, NumRetries: 2},
			}},
		}
	}
	setEntry(t, c, router("/slow"))

	var mu sync.Mutex
	logged := map[string]int{}
	src, err := route.NewConsul(c, []string{"api"}, route.WithConsulCaller("web"),
		route.WithOnWarning(func(_ string, w *route.FieldError) {
			mu.Lock()
			logged[w.Path]++
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	runReady(t, src)

	want := []struct{ path, reason string }{
		{"service-defaults/api.MaxInboundConnections", "inbound side"},
		{"service-defaults/api.LocalConnectTimeoutMs", "inbound side"},
		{"service-defaults/api.LocalRequestTimeoutMs", "inbound side"},
		{"service-defaults/api.BalanceInboundConnections", "inbound side"},
		{"service-defaults/api.MeshGateway.Mode", "never through a mesh gateway"},
		{"service-defaults/web.UpstreamConfig.Defaults.PassiveHealthCheck.EnforcingConsecutive5xx", "50% not applied"},
		{"service-defaults/web.UpstreamConfig.Overrides[0].BalanceOutboundConnections", "worker threads"},
		{"service-resolver/api.LoadBalancer.RingHashConfig", "sizes its rings"},
		{"service-resolver/api.LoadBalancer.HashPolicies[1].SourceIP", "hashes a header, a cookie or a query parameter"},
		{"service-resolver/api.LoadBalancer.HashPolicies[2]", "the first hash policy's"},
		{"service-router/api.Routes[0].Destination.IdleTimeout", "idle streams"},
		{"service-router/api.Routes[0].Destination.NumRetries", "without a retry condition"},
	}
	warnings := func() map[string]*route.FieldError {
		out := map[string]*route.FieldError{}
		for _, w := range src.Status().Table.Warnings() {
			out[w.Path] = w
		}
		return out
	}
	waitFor(t, "every warning in the table", func() bool {
		got := warnings()
		for _, w := range want {
			if got[w.path] == nil {
				return false
			}
		}
		return true
	})

	// A rebuild (the router changes) reports no warning again; the
	// limits of the caller change live.
	setEntry(t, c, router("/slower"))
	setEntry(t, c, caller(5))
	waitFor(t, "the new router and limits", func() bool {
		tab := src.Table()
		d := tab.Match("api", &route.Request{Method: "GET", Path: "/slower/x"}, 0)
		if d.Rule == nil || d.Rule.Name != "service-router/api.Routes[0]" {
			return false
		}
		p := d.Target.Destination.Policy
		return p.ConnectionPool != nil && p.ConnectionPool.MaxRequests == 5
	})

	got := warnings()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ENTRY\tFIELD\tREASON")
	for _, w := range want {
		fe := got[w.path]
		if fe == nil {
			t.Errorf("no warning at %s", w.path)
			continue
		}
		entry, field, _ := strings.Cut(fe.Path, ".")
		fmt.Fprintf(tw, "%s\t%s\t%s\n", entry, field, fe.Message)
		if !strings.Contains(fe.Message, w.reason) || !errors.Is(fe, route.ErrUnsupported) {
			t.Errorf("%s: %q (ErrUnsupported %v), want a reason with %q", w.path, fe.Message, errors.Is(fe, route.ErrUnsupported), w.reason)
		}
		mu.Lock()
		if n := logged[w.path]; n != 1 {
			t.Errorf("%s reported %d times, want once", w.path, n)
		}
		mu.Unlock()
	}
	_ = tw.Flush()
	t.Logf("%d warnings of %d entries:\n%s", len(want), 4, b.String())
	if len(got) != len(want) {
		t.Errorf("%d warnings, want %d: %v", len(got), len(want), src.Status().Table.Warnings())
	}

	d := src.Table().Match("api", &route.Request{Method: "GET", Path: "/"}, 0)
	if d.Rule == nil {
		t.Fatal("no catch-all route")
	}
	p := d.Target.Destination.Policy
	// The caller's upstream ConnectTimeoutMs (500 ms) wins over the
	// resolver's ConnectTimeout (2 s), as in Consul's Envoy clusters.
	wantPool := route.ConnectionPool{MaxConnections: 8, MaxPendingRequests: route.DefaultMaxPendingRequests, MaxRequests: 5,
		ConnectTimeout: route.Duration(500 * time.Millisecond)}
	if p.ConnectionPool == nil || *p.ConnectionPool != wantPool {
		t.Errorf("pool %+v, want %+v", p.ConnectionPool, wantPool)
	}
	if got := src.Table().ConnectTimeout("api"); got != 500*time.Millisecond {
		t.Errorf("connect timeout of api %v, want 500ms", got)
	}
	wantOutlier := route.OutlierDetection{ConsecutiveFailures: 3, Interval: route.Duration(5 * time.Second),
		BaseEjectionTime: route.Duration(20 * time.Second), MaxEjectedPercent: 40}
	if p.Outlier == nil || *p.Outlier != wantOutlier {
		t.Errorf("outlier %+v, want %+v", p.Outlier, wantOutlier)
	}
	if p.LoadBalancer == nil || p.LoadBalancer.Policy != "ring_hash" || p.LoadBalancer.HashHeader != "x-user" {
		t.Errorf("load balancer %+v, want the resolver's ring hash on x-user", p.LoadBalancer)
	}
}
