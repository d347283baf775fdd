package balancer_test

import (
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is an injected clock moved by hand.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) Set(t time.Time)         { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) Since0() time.Duration   { return time.Duration(c.ns.Load()) }
func (c *fakeClock) option() balancer.Option { return balancer.WithClock(c.Now) }

// endpoints returns n endpoints with IDs ep-0..ep-(n-1).
func endpoints(n int) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, n)
	for i := range eps {
		eps[i] = discovery.Endpoint{ID: fmt.Sprintf("ep-%d", i), Addr: fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)}
	}
	return eps
}

// methodKey hashes the request's Method, so tests need no HTTP request.
func methodKey(info balancer.Info) string { return info.Method }

type namedPolicy struct {
	name string
	new  func(opts ...balancer.Option) balancer.Policy
}

// allPolicies lists every policy, each wrapper around round robin too.
func allPolicies() []namedPolicy {
	return []namedPolicy{
		{"RoundRobin", balancer.RoundRobin},
		{"WeightedRoundRobin", balancer.WeightedRoundRobin},
		{"Random", balancer.Random},
		{"WeightedRandom", balancer.WeightedRandom},
		{"LeastRequest", balancer.LeastRequest},
		{"PeakEWMA", balancer.PeakEWMA},
		{"RingHash", func(opts ...balancer.Option) balancer.Policy { return balancer.RingHash(methodKey, opts...) }},
		{"Maglev", func(opts ...balancer.Option) balancer.Policy { return balancer.Maglev(methodKey, opts...) }},
		{"Outlier(LeastRequest)", func(opts ...balancer.Option) balancer.Policy {
			return balancer.Outlier(balancer.LeastRequest(opts...), opts...)
		}},
		{"ZoneAware(RoundRobin)", func(opts ...balancer.Option) balancer.Policy {
			return balancer.ZoneAware("z1", balancer.RoundRobin(opts...), opts...)
		}},
		{"Outlier(ZoneAware(PeakEWMA))", func(opts ...balancer.Option) balancer.Policy {
			return balancer.Outlier(balancer.ZoneAware("z1", balancer.PeakEWMA(opts...), opts...),
				append(opts, balancer.WithMaxEjected(0.5), balancer.WithConsecutiveFailures(2))...)
		}},
		{"Subset(Random)", func(opts ...balancer.Option) balancer.Policy {
			return balancer.Subset(balancer.MatchTags("canary"), balancer.Random(opts...), balancer.WithFallback())
		}},
	}
}

// chiSquare returns Pearson's statistic of observed counts against
// expected shares, and the critical value at p = 0.001 (Wilson–Hilferty).
func chiSquare(observed []int, shares []float64) (stat, critical float64) {
	total := 0
	for _, o := range observed {
		total += o
	}
	for i, o := range observed {
		e := shares[i] * float64(total)
		stat += (float64(o) - e) * (float64(o) - e) / e
	}
	df := float64(len(observed) - 1)
	const z = 3.090 // one-sided 0.999 quantile of the standard normal
	critical = df * math.Pow(1-2/(9*df)+z*math.Sqrt(2/(9*df)), 3)
	return stat, critical
}
