package balancer_test

import (
	"math/rand/v2"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
)

var benchSizes = []int{3, 100, 10_000}

// benchPolicies are every policy, the wrappers around the policy they
// would usually wrap.
func benchPolicies() []namedPolicy {
	return append(allPolicies()[:8:8],
		namedPolicy{"Outlier(PeakEWMA)", func(opts ...balancer.Option) balancer.Policy {
			return balancer.Outlier(balancer.PeakEWMA(opts...), opts...)
		}},
		namedPolicy{"ZoneAware(LeastRequest)", func(opts ...balancer.Option) balancer.Policy {
			return balancer.ZoneAware("z1", balancer.LeastRequest(opts...), opts...)
		}},
	)
}

var benchKeys = func() []string {
	k := make([]string, 1024)
	for i := range k {
		k[i] = "user-" + strconv.Itoa(i*7919)
	}
	return k
}()

func benchBalancer(b *testing.B, p namedPolicy, n int) *balancer.Balancer {
	eps := endpoints(n)
	for i := range eps {
		eps[i].Zone = []string{"z1", "z2", "z3"}[i%3]
		eps[i].Weight = uint32(i%4 + 1)
	}
	bal := balancer.New(p.new())
	bal.Update(eps)
	// Give every endpoint some history (latency EWMA).
	for i := range 4 * n {
		e, err := bal.Pick(balancer.Info{Method: benchKeys[i%len(benchKeys)]})
		if err != nil {
			b.Fatal(err)
		}
		e.Done(balancer.Outcome{Latency: time.Duration(i%7+1) * time.Millisecond})
	}
	return bal
}

// BenchmarkPick measures Balancer.Pick alone (the in-flight count it
// raises is left up), sequentially and under RunParallel.
func BenchmarkPick(b *testing.B) {
	for _, p := range benchPolicies() {
		for _, n := range benchSizes {
			name := p.name + "/n=" + strconv.Itoa(n)
			b.Run(name+"/seq", func(b *testing.B) {
				bal := benchBalancer(b, p, n)
				b.ReportAllocs()
				cpu := startCPU()
				for i := 0; b.Loop(); i++ {
					if _, err := bal.Pick(balancer.Info{Method: benchKeys[i&1023]}); err != nil {
						b.Fatal(err)
					}
				}
				cpu.report(b)
			})
			b.Run(name+"/parallel", func(b *testing.B) {
				bal := benchBalancer(b, p, n)
				b.ReportAllocs()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for i := 0; pb.Next(); i++ {
						if _, err := bal.Pick(balancer.Info{Method: benchKeys[i&1023]}); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}

// BenchmarkPickDone measures a pick and the report of its outcome, the
// full per-request cost in the balancer, at 100 endpoints.
func BenchmarkPickDone(b *testing.B) {
	for _, p := range benchPolicies() {
		b.Run(p.name, func(b *testing.B) {
			bal := benchBalancer(b, p, 100)
			o := balancer.Outcome{Latency: 3 * time.Millisecond}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for i := 0; pb.Next(); i++ {
					e, err := bal.Pick(balancer.Info{Method: benchKeys[i&1023]})
					if err != nil {
						b.Fatal(err)
					}
					e.Done(o)
				}
			})
		})
	}
}

// BenchmarkPickSkip measures picks that must pass over skipped endpoints
// (a tenth of 100), as with open breakers.
func BenchmarkPickSkip(b *testing.B) {
	skip := func(e *balancer.Endpoint) bool { return e.ID[len(e.ID)-1] == '7' }
	for _, p := range benchPolicies() {
		b.Run(p.name, func(b *testing.B) {
			bal := benchBalancer(b, p, 100)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if _, err := bal.Pick(balancer.Info{Method: benchKeys[i&1023], Skip: skip}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRebuild measures Balancer.Update with 10 000 endpoints: with
// the same IDs (load state reused in order, as on a push that changes an
// attribute) and with one endpoint replaced (load state found by ID).
func BenchmarkRebuild(b *testing.B) {
	eps := endpoints(10_001)
	for i := range eps {
		eps[i].Zone = []string{"z1", "z2", "z3"}[i%3]
		eps[i].Weight = uint32(i%4 + 1)
	}
	sets := [2][]discovery.Endpoint{eps[:10_000], eps[1:]}
	for _, p := range benchPolicies() {
		b.Run(p.name+"/n=10000/same", func(b *testing.B) {
			bal := balancer.New(p.new())
			bal.Update(sets[0])
			b.ReportAllocs()
			cpu := startCPU()
			for b.Loop() {
				bal.Update(sets[0])
			}
			cpu.report(b)
		})
		b.Run(p.name+"/n=10000/replace-one", func(b *testing.B) {
			bal := balancer.New(p.new())
			bal.Update(sets[0])
			b.ReportAllocs()
			cpu := startCPU()
			for i := 0; b.Loop(); i++ {
				bal.Update(sets[(i+1)%2])
			}
			cpu.report(b)
		})
	}
}

// BenchmarkReference measures the two yardsticks of the issue in the same
// run as the policies (an atomic round-robin pick; a power-of-two-choices
// pick on atomic in-flight counters), so figures taken on a loaded
// machine can be read as ratios.
func BenchmarkReference(b *testing.B) {
	eps := make([]*balancer.Endpoint, 10_000)
	for i := range eps {
		eps[i] = &balancer.Endpoint{Load: new(balancer.Load)}
	}
	b.Run("atomic-round-robin/n=10000", func(b *testing.B) {
		var next atomic.Uint64
		b.ReportAllocs()
		var sink *balancer.Endpoint
		cpu := startCPU()
		for b.Loop() {
			sink = eps[next.Add(1)%uint64(len(eps))]
		}
		cpu.report(b)
		_ = sink
	})
	b.Run("p2c-atomic/n=10000", func(b *testing.B) {
		counts := make([]atomic.Int64, len(eps))
		b.ReportAllocs()
		var sink *balancer.Endpoint
		cpu := startCPU()
		for b.Loop() {
			i, j := rand.IntN(len(eps)), rand.IntN(len(eps))
			if counts[j].Load() < counts[i].Load() {
				i = j
			}
			sink = eps[i]
		}
		cpu.report(b)
		_ = sink
	})
}

// cpuMeter measures a sequential benchmark loop's thread CPU time and
// reports it as cpu-ns/op: on a machine shared with other work, ns/op
// counts the time the thread waits for a core, cpu-ns/op does not.
type cpuMeter struct {
	start time.Duration
	ok    bool
}

func startCPU() cpuMeter {
	runtime.LockOSThread()
	t, ok := threadCPU()
	return cpuMeter{start: t, ok: ok}
}

func (m cpuMeter) report(b *testing.B) {
	defer runtime.UnlockOSThread()
	end, ok := threadCPU()
	if !m.ok || !ok || b.N == 0 {
		return
	}
	b.ReportMetric(float64(end-m.start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkKeyFuncs measures reading a hash key from an HTTP request:
// a header, a cookie and a query parameter, plain and escaped.
func BenchmarkKeyFuncs(b *testing.B) {
	r, err := http.NewRequest("GET", "http://svc/cart?page=2&user=alice-42&sort=price&esc=a%20b", nil)
	if err != nil {
		b.Fatal(err)
	}
	r.Header.Set("X-User", "alice-42")
	r.Header.Set("Cookie", "theme=dark; session=alice-42")
	for _, k := range []struct {
		name string
		key  balancer.KeyFunc
	}{
		{"header", balancer.HeaderKey("x-user")},
		{"cookie", balancer.CookieKey("session")},
		{"query", balancer.QueryKey("user")},
		{"query escaped", balancer.QueryKey("esc")},
	} {
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			info := balancer.Info{HTTP: r}
			for b.Loop() {
				if k.key(info) == "" {
					b.Fatal("no key")
				}
			}
		})
	}
}
