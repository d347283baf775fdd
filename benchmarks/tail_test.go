package benchmarks

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
)

// The tail-latency benchmark: five real HTTP servers on loopback, each
// taking tailService to answer; with slow=one, one of them takes ten
// times as long. The handlers' delay is the simulated service time (the
// servers are real; only their work is simulated).
const (
	tailService   = time.Millisecond
	tailServers   = 5
	tailCallers   = 4 // × GOMAXPROCS concurrent callers
	tailSlowIndex = 2
	tailWarmup    = 50 // calls before measuring
)

// tailPolicies are the policies compared under a slow server.
func tailPolicies() []namedPolicy {
	return []namedPolicy{
		{"rr", balancer.RoundRobin()},
		{"random", balancer.Random()},
		{"least-request", balancer.LeastRequest()},
		{"peak-ewma", balancer.PeakEWMA()},
	}
}

// BenchmarkTail reports, per policy, with every server healthy
// (slow=none) and with one ten times slower (slow=one), the median and
// 99th percentile latency of calls through a weft client (p50-ms,
// p99-ms) and the share of calls the slow server served (slow-share).
func BenchmarkTail(b *testing.B) {
	var slowHits atomic.Int64
	var slowOn atomic.Bool
	var eps []discovery.Endpoint
	for i := range tailServers {
		d := tailService
		slow := i == tailSlowIndex
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			delay := d
			if slow && slowOn.Load() {
				delay = 10 * d
				slowHits.Add(1)
			}
			time.Sleep(delay) // the simulated service time
			_, _ = w.Write([]byte(strings.Repeat("x", 64)))
		}))
		b.Cleanup(srv.Close)
		eps = append(eps, discovery.Endpoint{ID: fmt.Sprintf("server-%d", i), Addr: strings.TrimPrefix(srv.URL, "http://")})
	}
	for _, p := range tailPolicies() {
		for _, slow := range []string{"none", "one"} {
			b.Run("policy="+p.name+"/slow="+slow, func(b *testing.B) {
				// A fresh client per run: no load history carried over.
				static, err := discovery.NewStatic(map[string][]discovery.Endpoint{"tail": eps})
				if err != nil {
					b.Fatal(err)
				}
				c, err := mesh.NewClient(mesh.WithDiscovery(static), mesh.WithBalancer(func(string) balancer.Policy { return p.policy }))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				hc := c.HTTPClient()
				ctx := context.Background()
				slowOn.Store(slow == "one")
				// Warm up: the policy learns the servers before the
				// measured calls, as a long-running client would have.
				for range tailWarmup {
					if err := httpGet(ctx, hc, "http://tail/"); err != nil {
						b.Fatal(err)
					}
				}
				slowHits.Store(0)
				var mu sync.Mutex
				var all []time.Duration
				b.ReportAllocs()
				b.SetParallelism(tailCallers)
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					var mine []time.Duration
					for pb.Next() {
						start := time.Now()
						if err := httpGet(ctx, hc, "http://tail/"); err != nil {
							b.Error(err)
							return
						}
						mine = append(mine, time.Since(start))
					}
					mu.Lock()
					all = append(all, mine...)
					mu.Unlock()
				})
				b.StopTimer()
				slowOn.Store(false)
				if len(all) == 0 {
					return
				}
				slices.Sort(all)
				q := func(f float64) float64 {
					return float64(all[min(len(all)-1, int(f*float64(len(all))))]) / float64(time.Millisecond)
				}
				b.ReportMetric(q(0.50), "p50-ms")
				b.ReportMetric(q(0.99), "p99-ms")
				b.ReportMetric(float64(slowHits.Load())/float64(len(all)), "slow-share")
			})
		}
	}
}
