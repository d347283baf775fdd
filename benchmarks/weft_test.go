package benchmarks

import (
	"context"
	"fmt"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/benchmarks/internal/otelmem"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

// weftVariant is one configuration of the weft client under test.
type weftVariant struct {
	name   string
	policy func() balancer.Policy
	// sampler, when not nil, turns telemetry on at both ends: the client
	// samples with it, the server follows the client's decision.
	sampler sdktrace.Sampler
	// sampled says whether calls must leave spans (with a sampler).
	sampled bool
}

// weftVariants are the weft rows of the path benchmarks, each with
// mutual TLS, a circuit breaker per endpoint and a client rate limit (set
// high enough never to refuse):
//
//   - weft-rr, weft-ewma (path 2 of the issue): round robin or peak EWMA,
//     telemetry off;
//   - weft-rr-unsampled: as weft-rr with telemetry on at both ends but no
//     span sampled (metrics still recorded);
//   - weft-rr-traced (path 3): as weft-rr with every span sampled, at
//     both ends, to an in-memory exporter (package otelmem).
func weftVariants() []weftVariant {
	rr := func() balancer.Policy { return balancer.RoundRobin() }
	return []weftVariant{
		{name: "weft-rr", policy: rr},
		{name: "weft-ewma", policy: func() balancer.Policy { return balancer.PeakEWMA() }},
		{name: "weft-rr-unsampled", policy: rr, sampler: sdktrace.NeverSample()},
		{name: "weft-rr-traced", policy: rr, sampler: sdktrace.AlwaysSample(), sampled: true},
	}
}

// listener returns the benchserver listener v calls for kind ("http",
// "grpc"): the weft server with telemetry when v has it.
func (v weftVariant) listener(kind string) string {
	if v.sampler != nil {
		return kind + "-weft-otel"
	}
	return kind + "-weft"
}

// newWeftClient returns a weft client configured as v, with the client
// identity, that finds service at addr through static discovery; and a
// check that its telemetry, if any, exported spans as v says.
func newWeftClient(tb testing.TB, service, addr string, v weftVariant) (*mesh.Client, func() error) {
	tb.Helper()
	e := getEnv(tb)
	static, err := discovery.NewStatic(map[string][]discovery.Endpoint{
		service: {{ID: "bench-1", Addr: addr}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	opts := []mesh.ClientOption{
		mesh.WithDiscovery(static),
		mesh.WithIdentity(e.client),
		mesh.WithAuthorizer(tlsid.AuthorizeID(serverID)),
		mesh.WithBalancer(func(string) balancer.Policy { return v.policy() }),
		mesh.WithCircuitBreaker(breaker.Settings{}),
		mesh.WithRateLimit(func(string) *mesh.ClientRateLimit {
			return &mesh.ClientRateLimit{RateLimit: breaker.RateLimit{PerSecond: 1e9, Burst: 1 << 20}}
		}),
	}
	check := func() error { return nil }
	if v.sampler != nil {
		o, err := otelmem.New(v.sampler)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = o.Shutdown(ctx)
		})
		opts = append(opts, mesh.WithTelemetry(o.Telemetry))
		check = func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := o.Flush(ctx); err != nil {
				return err
			}
			switch n := o.Exporter.Spans(); {
			case v.sampled && n == 0:
				return fmt.Errorf("%s: no span exported", v.name)
			case !v.sampled && n != 0:
				return fmt.Errorf("%s: %d spans exported, want none", v.name, n)
			}
			return nil
		}
	}
	c, err := mesh.NewClient(opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c, check
}
