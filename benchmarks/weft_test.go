package benchmarks

import (
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

// weftVariant is one configuration of the weft client under test.
type weftVariant struct {
	name string
	opts func(tb testing.TB) []mesh.ClientOption
}

// weftVariants are the weft rows of the path benchmarks: mutual TLS and a
// balancer, telemetry off.
func weftVariants() []weftVariant {
	return []weftVariant{
		{"weft-rr", func(testing.TB) []mesh.ClientOption {
			return []mesh.ClientOption{mesh.WithBalancer(func(string) balancer.Policy { return balancer.RoundRobin() })}
		}},
		{"weft-ewma", func(testing.TB) []mesh.ClientOption {
			return []mesh.ClientOption{mesh.WithBalancer(func(string) balancer.Policy { return balancer.PeakEWMA() })}
		}},
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
