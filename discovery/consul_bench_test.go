package discovery

import (
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"

	"github.com/weftmesh/weft/internal/consultest"
)

// BenchmarkConsulPropagation measures the time from a registration (or a
// deregistration) returning to a subscriber getting the new set, against a
// real agent. It reports the median, p99 and worst. Back-to-back changes
// meet the watch's rate limit (10 queries/s by default, burst 2); the
// "spaced" case leaves 250 ms between changes, as real changes usually
// are, and "rate=100" shows what is left with a looser limit.
//
//	go test -run '^$' -bench ConsulPropagation -benchtime 200x ./discovery/
func BenchmarkConsulPropagation(b *testing.B) {
	a := consultest.Start(b)
	for _, bc := range []struct {
		name  string
		opts  []ConsulOption
		space time.Duration // pause between changes
	}{
		{"rate=default/back-to-back", nil, 0},
		{"rate=default/spaced", nil, 250 * time.Millisecond},
		{"rate=100/back-to-back", []ConsulOption{WithRate(rate.Limit(100))}, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			svc := "bench-prop-" + bc.name
			w := newConsul(b, a.Config(), bc.opts...)
			r, stop := watch(b, w, svc)
			defer stop()
			r.waitFor(b, 5*time.Second, "initial set", hasIDs())
			c := a.Client()
			lat := make([]time.Duration, 0, b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("p%d", i)
				start := time.Now()
				register(b, c, &api.AgentServiceRegistration{ID: id, Name: svc, Address: "127.0.0.1", Port: 1000 + i%1000})
				_, at := r.waitFor(b, 10*time.Second, "registration", hasIDs(id))
				lat = append(lat, at.Sub(start))
				pause(bc.space)
				start = time.Now()
				if err := c.Agent().ServiceDeregister(id); err != nil {
					b.Fatal(err)
				}
				_, at = r.waitFor(b, 10*time.Second, "deregistration", hasIDs())
				lat = append(lat, at.Sub(start))
				pause(bc.space)
			}
			b.StopTimer()
			reportLatencies(b, lat)
		})
	}
}

// pause spaces changes out, so the watch's token bucket refills: the
// shape of the workload, not a wait for state.
func pause(d time.Duration) {
	if d > 0 {
		time.Sleep(d) // the workload's spacing between changes, not a wait for state
	}
}

func reportLatencies(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// BenchmarkConsulWatchMemory watches 1 000 services, each with one
// instance, from one Consul watcher and reports the heap and goroutines
// each watched service costs (blocking queries held open, one per
// service; the agent's per-client connection limit is raised for it).
//
//	go test -run '^$' -bench ConsulWatchMemory -benchtime 1x ./discovery/
func BenchmarkConsulWatchMemory(b *testing.B) {
	const n = 1000
	a := consultest.Start(b, consultest.WithHCL(`limits { http_max_conns_per_client = 4000 }`))
	c := a.Client()
	var wg sync.WaitGroup
	var regErr atomic.Value
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := g; i < n; i += 8 {
				err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
					ID: fmt.Sprintf("m%d", i), Name: fmt.Sprintf("mem-%d", i), Address: "127.0.0.1", Port: 1000 + i,
					Tags: []string{"a", "b"}, Meta: map[string]string{"version": "1"},
				})
				if err != nil {
					regErr.Store(err)
				}
			}
		}(g)
	}
	wg.Wait()
	if err := regErr.Load(); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		cfg := api.DefaultConfig() // pooled: one kept-alive connection per blocking query
		cfg.Address = a.HTTPAddr()
		w := newConsul(b, cfg)
		var got atomic.Int64
		var stops []func()
		for i := 0; i < n; i++ {
			var once sync.Once
			stop, err := w.Watch(fmt.Sprintf("mem-%d", i), func(u Update) {
				if len(u.Endpoints) == 1 {
					once.Do(func() { got.Add(1) })
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			stops = append(stops, stop)
		}
		deadline := time.Now().Add(60 * time.Second)
		for got.Load() < n {
			if time.Now().After(deadline) {
				b.Fatalf("only %d of %d watches have their set", got.Load(), n)
			}
			time.Sleep(10 * time.Millisecond) // poll interval
		}
		// Let every watch settle into its blocking query.
		time.Sleep(500 * time.Millisecond) // settle time for a memory reading, not a state wait
		runtime.GC()
		runtime.ReadMemStats(&after)
		g1 := runtime.NumGoroutine()
		b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, "heap-B/service")
		b.ReportMetric(float64(g1-g0)/n, "goroutines/service")
		for _, s := range stops {
			s()
		}
		cfg.Transport.CloseIdleConnections()
	}
}

// BenchmarkConsulEndpoints measures the conversion of one Consul answer
// (50 instances) into a set, done on every change of a watched service.
//
//	go test -run '^$' -bench ConsulEndpoints ./discovery/
func BenchmarkConsulEndpoints(b *testing.B) {
	w := &Consul{cfg: consulConfig{passingOnly: true, zoneKey: "zone"}}
	entries := make([]*api.ServiceEntry, 50)
	for i := range entries {
		entries[i] = &api.ServiceEntry{
			Node: &api.Node{Address: "10.0.0.1", Meta: map[string]string{"zone": "a"}},
			Service: &api.AgentService{ID: fmt.Sprintf("i%d", i), Address: fmt.Sprintf("10.0.1.%d", i), Port: 8080,
				Tags: []string{"v2"}, Meta: map[string]string{"version": "2"}, Weights: api.AgentWeights{Passing: 1}},
		}
	}
	log := slog.New(slog.DiscardHandler)
	b.ReportAllocs()
	for b.Loop() {
		if set := w.endpoints(log, entries, true); len(set) != 50 {
			b.Fatal(len(set))
		}
	}
}
