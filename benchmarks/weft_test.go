package benchmarks

import (
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

// weftVariant is one configuration of the weft client under test.
type weftVariant struct {
	name string
	opts func(tb testing.TB) []mesh.ClientOption
}

// weftVariants are the weft rows of the path benchmarks (path 2 of the
// issue): mutual TLS, a balancer, a circuit breaker per endpoint and a
// client rate limit (set high enough never to refuse), telemetry off.
func weftVariants() []weftVariant {
	resilience := []mesh.ClientOption{
		mesh.WithCircuitBreaker(breaker.Settings{}),
		mesh.WithRateLimit(func(string) *mesh.ClientRateLimit {
			return &mesh.ClientRateLimit{RateLimit: breaker.RateLimit{PerSecond: 1e9, Burst: 1 << 20}}
		}),
	}
	with := func(p func() balancer.Policy) func(testing.TB) []mesh.ClientOption {
		return func(testing.TB) []mesh.ClientOption {
			return append([]mesh.ClientOption{mesh.WithBalancer(func(string) balancer.Policy { return p() })}, resilience...)
		}
	}
	return []weftVariant{
		{"weft-rr", with(func() balancer.Policy { return balancer.RoundRobin() })},
		{"weft-ewma", with(func() balancer.Policy { return balancer.PeakEWMA() })},
	}
}

// newWeftClient returns a weft client with the client identity that finds
// service at addr through static discovery.
func newWeftClient(tb testing.TB, service, addr string, v weftVariant) *mesh.Client {
	tb.Helper()
	e := getEnv(tb)
	static, err := discovery.NewStatic(map[string][]discovery.Endpoint{
		service: {{ID: "bench-1", Addr: addr}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	opts := append([]mesh.ClientOption{
		mesh.WithDiscovery(static),
		mesh.WithIdentity(e.client),
		mesh.WithAuthorizer(tlsid.AuthorizeID(serverID)),
	}, v.opts(tb)...)
	c, err := mesh.NewClient(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}
