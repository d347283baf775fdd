package benchmarks

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/tlsid"
)

// Microbenchmarks of the mesh decisions taken on every call, without any
// I/O. Picks of every policy are measured in pick_test.go; the breaker,
// balancer and tlsid packages have their own benchmarks of their parts.

// sink keeps results alive so the compiler cannot drop the work.
var sink any

// endpoints returns n endpoints on distinct loopback ports.
func endpoints(n int) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, n)
	for i := range eps {
		eps[i] = discovery.Endpoint{ID: "ep-" + strconv.Itoa(i), Addr: fmt.Sprintf("127.0.0.%d:%d", 1+i/60000, 1024+i%60000)}
	}
	return eps
}

// BenchmarkDecision measures the per-call decision of the mesh client
// beside a bare function call: the client rate limit (x/time/rate), the
// retry budget's request count, the pick (round robin over 3 endpoints,
// skipping open breakers), the circuit breaker (gobreaker through
// package breaker) and the outcome fed back to the balancer. The clock is
// read once per call and passed to every part that needs it; step=all is
// the target figure (≤ 300 ns, 0 allocs).
func BenchmarkDecision(b *testing.B) {
	lim := rate.NewLimiter(rate.Inf, 1)
	limited := breaker.RateLimit{PerSecond: 1e12, Burst: 1 << 30}.NewLimiter()
	budget := breaker.NewBudget(breaker.BudgetSettings{})
	bal := balancer.New(balancer.RoundRobin())
	bal.Update(endpoints(3))
	breakers := map[string]*breaker.Breaker{}
	for _, e := range bal.Endpoints() {
		breakers[e.ID] = breaker.New("bench", e.ID, breaker.Settings{})
	}
	skip := func(e *balancer.Endpoint) bool { return breakers[e.ID].Open() }
	call := func() breaker.Result { return breaker.Success }
	var bare func() breaker.Result = call
	_ = lim

	b.Run("step=bare", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			sink = bare()
		}
	})
	b.Run("step=clock", func(b *testing.B) {
		b.ReportAllocs()
		var t time.Time
		for range b.N {
			t = time.Now()
		}
		sink = t
	})
	b.Run("step=limiter", func(b *testing.B) {
		b.ReportAllocs()
		now := time.Now()
		for range b.N {
			if !limited.AllowN(now, 1) {
				b.Fatal("rate limited")
			}
		}
	})
	b.Run("step=budget", func(b *testing.B) {
		b.ReportAllocs()
		now := time.Now()
		for range b.N {
			budget.Request(now)
		}
	})
	b.Run("step=pick", func(b *testing.B) {
		b.ReportAllocs()
		info := balancer.Info{Skip: skip}
		for range b.N {
			e, err := bal.Pick(info)
			if err != nil {
				b.Fatal(err)
			}
			e.Done(balancer.Outcome{Latency: time.Millisecond})
		}
	})
	b.Run("step=breaker", func(b *testing.B) {
		b.ReportAllocs()
		br := breakers["ep-0"]
		for range b.N {
			if err := br.Do(call); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("step=all", func(b *testing.B) {
		b.ReportAllocs()
		info := balancer.Info{Skip: skip}
		for range b.N {
			now := time.Now()
			if !limited.AllowN(now, 1) {
				b.Fatal("rate limited")
			}
			budget.Request(now)
			e, err := bal.Pick(info)
			if err != nil {
				b.Fatal(err)
			}
			if err := breakers[e.ID].Do(call); err != nil {
				b.Fatal(err)
			}
			e.Done(balancer.Outcome{Latency: time.Since(now)})
		}
	})
	b.Run("step=all-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			info := balancer.Info{Skip: skip}
			for pb.Next() {
				now := time.Now()
				if !limited.AllowN(now, 1) {
					b.Error("rate limited")
					return
				}
				budget.Request(now)
				e, err := bal.Pick(info)
				if err != nil {
					b.Error(err)
					return
				}
				if err := breakers[e.ID].Do(call); err != nil {
					b.Error(err)
					return
				}
				e.Done(balancer.Outcome{Latency: time.Since(now)})
			}
		})
	})
}

// BenchmarkAuthorize measures the authorization of a peer identity, as
// made on every handshake (and, with per-request policies, every
// request): an allowed peer against each kind of authorizer.
func BenchmarkAuthorize(b *testing.B) {
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	var many []spiffeid.ID
	for i := range 100 {
		many = append(many, spiffeid.RequireFromPath(td, "/svc/"+strconv.Itoa(i)))
	}
	many = append(many, clientID)
	for _, c := range []struct {
		name string
		a    tlsid.Authorizer
	}{
		{"any", tlsid.AuthorizeAny()},
		{"id", tlsid.AuthorizeID(clientID)},
		{"one-of-101", tlsid.AuthorizeOneOf(many...)},
		{"member-of", tlsid.AuthorizeMemberOf(td)},
	} {
		b.Run("authorizer="+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for range b.N {
				if err := c.a(clientID); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("authorizer=id/denied", func(b *testing.B) {
		a := tlsid.AuthorizeID(serverID)
		b.ReportAllocs()
		for range b.N {
			if err := a(clientID); err == nil {
				b.Fatal("allowed")
			}
		}
	})
}

// BenchmarkRebuild measures a discovery update reaching the balancer: the
// load state carried over by ID and a new picker built and published,
// for 3, 100 and 10 000 endpoints.
func BenchmarkRebuild(b *testing.B) {
	for _, n := range []int{3, 100, 10_000} {
		eps := endpoints(n)
		for _, p := range rebuildPolicies() {
			b.Run(fmt.Sprintf("policy=%s/endpoints=%d", p.name, n), func(b *testing.B) {
				bal := balancer.New(p.policy)
				bal.Update(eps)
				b.ReportAllocs()
				for range b.N {
					bal.Update(eps)
				}
			})
		}
	}
}

// namedPolicy is a balancing policy under a short name.
type namedPolicy struct {
	name   string
	policy balancer.Policy
}

// rebuildPolicies are the policies whose rebuild is measured.
func rebuildPolicies() []namedPolicy {
	key := balancer.HeaderKey("x-user")
	return []namedPolicy{
		{"rr", balancer.RoundRobin()},
		{"wrr", balancer.WeightedRoundRobin()},
		{"least-request", balancer.LeastRequest()},
		{"peak-ewma", balancer.PeakEWMA()},
		{"ring-hash", balancer.RingHash(key)},
		{"maglev", balancer.Maglev(key)},
	}
}
