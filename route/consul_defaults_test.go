package route_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/route"
)

func intp(v int) *int                     { return &v }
func u32p(v uint32) *uint32               { return &v }
func durp(d time.Duration) *time.Duration { return &d }
func callerDefaults(uc *api.UpstreamConfiguration) *api.ServiceConfigEntry {
	return &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", UpstreamConfig: uc}
}

// TestUpstreamConfigTranslation: the caller's Defaults and the Override
// of each upstream, merged block by block, become each service's
// connection pool and outlier detection; what weft cannot apply is a
// warning at its path.
func TestUpstreamConfigTranslation(t *testing.T) {
	check := &api.PassiveHealthCheck{Interval: 2 * time.Second, MaxFailures: 3, MaxEjectionPercent: u32p(50), BaseEjectionTime: durp(time.Minute)}
	tests := []struct {
		name     string
		uc       *api.UpstreamConfiguration
		resolver route.Duration                   // connect timeout api's resolver sets
		pools    map[string]*route.ConnectionPool // by service; absent: none
		outliers map[string]*route.OutlierDetection
		warnings []string // paths
	}{
		{name: "no upstream config"},
		{name: "defaults for every upstream",
			uc: &api.UpstreamConfiguration{Defaults: &api.UpstreamConfig{Limits: &api.UpstreamLimits{MaxConcurrentRequests: intp(2)}}},
			pools: map[string]*route.ConnectionPool{
				"api": {MaxRequests: 2}, "db": {MaxRequests: 2},
			}},
		{name: "an override replaces the defaults' block",
			uc: &api.UpstreamConfiguration{
				Defaults: &api.UpstreamConfig{Limits: &api.UpstreamLimits{MaxConcurrentRequests: intp(2)}, PassiveHealthCheck: check},
				Overrides: []*api.UpstreamConfig{{Name: "db", Limits: &api.UpstreamLimits{
					MaxConnections: intp(10), MaxPendingRequests: intp(5), MaxConcurrentRequests: intp(20)}}},
			},
			pools: map[string]*route.ConnectionPool{
				"api": {MaxRequests: 2},
				"db":  {MaxConnections: 10, MaxPendingRequests: 5, MaxRequests: 20},
			},
			outliers: map[string]*route.OutlierDetection{
				"api": {ConsecutiveFailures: 3, Interval: route.Duration(2 * time.Second), BaseEjectionTime: route.Duration(time.Minute), MaxEjectedPercent: 50},
				"db":  {ConsecutiveFailures: 3, Interval: route.Duration(2 * time.Second), BaseEjectionTime: route.Duration(time.Minute), MaxEjectedPercent: 50},
			}},
		{name: "connections without a pending bound get Envoy's",
			uc: &api.UpstreamConfiguration{Overrides: []*api.UpstreamConfig{{Name: "api", Limits: &api.UpstreamLimits{MaxConnections: intp(4)}}}},
			pools: map[string]*route.ConnectionPool{
				"api": {MaxConnections: 4, MaxPendingRequests: route.DefaultMaxPendingRequests},
			}},
		{name: "overrides of peers, other namespaces and unwatched services do not apply",
			uc: &api.UpstreamConfiguration{Overrides: []*api.UpstreamConfig{
				{Name: "api", Peer: "east", Limits: &api.UpstreamLimits{MaxConcurrentRequests: intp(1)}},
				{Name: "api", Namespace: "team", Limits: &api.UpstreamLimits{MaxConcurrentRequests: intp(1)}},
				{Name: "cache", ConnectTimeoutMs: 100, Limits: &api.UpstreamLimits{MaxConcurrentRequests: intp(1)}},
			}},
			warnings: []string{"service-defaults/web.UpstreamConfig.Overrides[0].Peer"}},
		{name: "the resolver's connect timeout stays without the upstream's",
			uc:       &api.UpstreamConfiguration{Defaults: &api.UpstreamConfig{Limits: &api.UpstreamLimits{MaxConcurrentRequests: intp(2)}}},
			resolver: route.Duration(3 * time.Second),
			pools: map[string]*route.ConnectionPool{
				"api": {MaxRequests: 2, ConnectTimeout: route.Duration(3 * time.Second)}, "db": {MaxRequests: 2},
			}},
		{name: "the upstream's connect timeout wins over the resolver's, an override over the defaults",
			uc: &api.UpstreamConfiguration{
				Defaults:  &api.UpstreamConfig{ConnectTimeoutMs: 700},
				Overrides: []*api.UpstreamConfig{{Name: "db", ConnectTimeoutMs: 250}, {Name: "api", ConnectTimeoutMs: -1}},
			},
			resolver: route.Duration(3 * time.Second),
			pools: map[string]*route.ConnectionPool{
				"api": {ConnectTimeout: route.Duration(700 * time.Millisecond)},
				"db":  {ConnectTimeout: route.Duration(250 * time.Millisecond)},
			},
			warnings: []string{"service-defaults/web.UpstreamConfig.Overrides[1].ConnectTimeoutMs"}},
		{name: "unsupported fields",
			uc: &api.UpstreamConfiguration{
				Defaults: &api.UpstreamConfig{ConnectTimeoutMs: 500, BalanceOutboundConnections: "exact_balance",
					MeshGateway: api.MeshGatewayConfig{Mode: api.MeshGatewayModeLocal}},
				Overrides: []*api.UpstreamConfig{{Name: "api", Protocol: "http", EnvoyClusterJSON: "{}", EnvoyListenerJSON: "{}",
					Limits:             &api.UpstreamLimits{MaxConcurrentRequests: intp(0)},
					PassiveHealthCheck: &api.PassiveHealthCheck{MaxFailures: 2, EnforcingConsecutive5xx: u32p(40)}}},
			},
			pools: map[string]*route.ConnectionPool{
				"api": {ConnectTimeout: route.Duration(500 * time.Millisecond)},
				"db":  {ConnectTimeout: route.Duration(500 * time.Millisecond)},
			},
			outliers: map[string]*route.OutlierDetection{"api": {ConsecutiveFailures: 2}},
			warnings: []string{
				"service-defaults/web.UpstreamConfig.Defaults.MeshGateway.Mode",
				"service-defaults/web.UpstreamConfig.Defaults.BalanceOutboundConnections",
				"service-defaults/web.UpstreamConfig.Overrides[0].Protocol",
				"service-defaults/web.UpstreamConfig.Overrides[0].EnvoyListenerJSON",
				"service-defaults/web.UpstreamConfig.Overrides[0].EnvoyClusterJSON",
				"service-defaults/web.UpstreamConfig.Overrides[0].Limits.MaxConcurrentRequests",
				"service-defaults/web.UpstreamConfig.Overrides[0].PassiveHealthCheck.EnforcingConsecutive5xx",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := &route.Config{Services: map[string]*route.Service{
				"api": {Protocol: "http", TrafficPolicy: &route.TrafficPolicy{LoadBalancer: &route.LoadBalancer{Policy: "least_request"}}},
			}}
			if tt.resolver > 0 {
				cfg.Services["api"].TrafficPolicy.ConnectionPool = &route.ConnectionPool{ConnectTimeout: tt.resolver}
			}
			shared := cfg.Services["api"]
			sharedPool := shared.TrafficPolicy.ConnectionPool
			warns := route.UpstreamConfigForTest(cfg, callerDefaults(tt.uc), []string{"api", "db"})
			var paths []string
			for _, w := range warns {
				if !errors.Is(w, route.ErrUnsupported) {
					t.Errorf("warning %v does not wrap ErrUnsupported", w)
				}
				paths = append(paths, w.Path)
			}
			if !slices.Equal(paths, tt.warnings) {
				t.Errorf("warnings at\n%q\nwant\n%q", paths, tt.warnings)
			}
			for _, svc := range []string{"api", "db"} {
				var pool *route.ConnectionPool
				var outlier *route.OutlierDetection
				if s := cfg.Services[svc]; s != nil && s.TrafficPolicy != nil {
					pool, outlier = s.TrafficPolicy.ConnectionPool, s.TrafficPolicy.Outlier
				}
				if !reflect.DeepEqual(pool, tt.pools[svc]) {
					t.Errorf("%s: pool %+v, want %+v", svc, pool, tt.pools[svc])
				}
				if !reflect.DeepEqual(outlier, tt.outliers[svc]) {
					t.Errorf("%s: outlier %+v, want %+v", svc, outlier, tt.outliers[svc])
				}
			}
			if lb := cfg.Services["api"].TrafficPolicy.LoadBalancer; lb == nil || lb.Policy != "least_request" {
				t.Errorf("the resolver's load balancer was lost: %+v", cfg.Services["api"].TrafficPolicy)
			}
			if shared.TrafficPolicy.ConnectionPool != sharedPool || shared.TrafficPolicy.Outlier != nil ||
				sharedPool != nil && *sharedPool != (route.ConnectionPool{ConnectTimeout: tt.resolver}) {
				t.Error("the translation changed the chain's own service instead of a copy")
			}
			if _, err := route.Compile(cfg); err != nil {
				t.Errorf("the translated config does not compile: %v", err)
			}
		})
	}
}
