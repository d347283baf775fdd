package mesh

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
)

var benchEndpoints = []discovery.Endpoint{
	{ID: "a", Addr: "127.0.0.1:1001"}, {ID: "b", Addr: "127.0.0.1:1002"}, {ID: "c", Addr: "127.0.0.1:1003"},
}

// BenchmarkClientDecision measures the mesh's decision for one call,
// without I/O: "bare" is a balancer pick alone; "weft" adds what the
// client path adds with every protection on — one clock read, the rate
// limiter, the retry budget's deposit, the pick skipping open breakers
// and the endpoint's breaker around the (empty) call.
func BenchmarkClientDecision(b *testing.B) {
	b.Run("bare", func(b *testing.B) {
		bal := balancer.New(nil)
		bal.Update(benchEndpoints)
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			ep, err := bal.Pick(balancer.Info{Context: ctx})
			if err != nil {
				b.Fatal(err)
			}
			ep.Done(balancer.Outcome{Result: balancer.Success})
		}
	})
	// The parts, for a breakdown: one clock read (on some VMs the most
	// expensive part), the rate limiter, the budget deposit, a breaker.
	b.Run("clock", func(b *testing.B) {
		b.ReportAllocs()
		var t time.Time
		for b.Loop() {
			t = time.Now()
		}
		_ = t
	})
	b.Run("limiter", func(b *testing.B) {
		lim := breaker.RateLimit{PerSecond: 1e12, Burst: 1 << 30}.NewLimiter()
		now := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			lim.AllowN(now, 1)
		}
	})
	b.Run("breaker", func(b *testing.B) {
		br := breaker.New("bench", "a", breaker.Settings{})
		run := func() breaker.Result { return breaker.Success }
		b.ReportAllocs()
		for b.Loop() {
			_ = br.Do(run)
		}
	})
	b.Run("weft", func(b *testing.B) {
		g := newGuard("bench", &resilienceConfig{
			retry:    &RetryPolicy{},
			breakers: &breaker.Settings{},
			rateLimit: func(string) *ClientRateLimit {
				return &ClientRateLimit{RateLimit: breaker.RateLimit{PerSecond: 1e12, Burst: 1 << 30}}
			},
		}, nil)
		g.breakers.Update(benchEndpoints)
		bal := balancer.New(nil)
		bal.Update(benchEndpoints)
		ctx := context.Background()
		run := func() breaker.Result { return breaker.Success }
		b.ReportAllocs()
		for b.Loop() {
			if err := g.admit(ctx); err != nil {
				b.Fatal(err)
			}
			ep, err := bal.Pick(balancer.Info{Context: ctx, Skip: g.skipOpen})
			if err != nil {
				b.Fatal(err)
			}
			if err := g.breakers.Get(ep.ID).Do(run); err != nil {
				b.Fatal(err)
			}
			ep.Done(balancer.Outcome{Result: balancer.Success})
		}
	})
}

// BenchmarkClientRoundTrip measures whole calls to a real server on
// loopback: a bare http.Transport, the weft client without protections,
// and the weft client with breakers, retries (none needed), budget and a
// rate limit.
func BenchmarkClientRoundTrip(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	d := &discovery.Static{}
	if err := d.Set("bench", discovery.Endpoint{ID: "bench-1", Addr: addr}); err != nil {
		b.Fatal(err)
	}
	roundTrip := func(b *testing.B, rt http.RoundTripper, url string) {
		req, err := http.NewRequest("GET", url, nil)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			resp, err := rt.RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	b.Run("bare", func(b *testing.B) {
		tr := &http.Transport{MaxIdleConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		roundTrip(b, tr, "http://"+addr+"/")
	})
	b.Run("weft", func(b *testing.B) {
		c, err := NewClient(WithDiscovery(d))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		roundTrip(b, c, "http://bench/")
	})
	b.Run("weft-protected", func(b *testing.B) {
		c, err := NewClient(WithDiscovery(d),
			WithCircuitBreaker(breaker.Settings{}),
			WithRetry(RetryPolicy{}),
			WithRateLimit(func(string) *ClientRateLimit {
				return &ClientRateLimit{RateLimit: breaker.RateLimit{PerSecond: 1e12, Burst: 1 << 30}}
			}))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		roundTrip(b, c, "http://bench/")
	})
}

// nopWriter is a ResponseWriter that keeps nothing.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// BenchmarkServerProtection measures what the server-side protections add
// to a request, without I/O: "bare" calls the handler; "weft" goes
// through a route rate limit, a per-peer rate limit and the concurrency
// limiter first.
func BenchmarkServerProtection(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	req := httptest.NewRequest("GET", "/charge", nil)
	w := &nopWriter{h: http.Header{}}
	b.Run("bare", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
		}
	})
	b.Run("weft", func(b *testing.B) {
		var cfg serverConfig
		for _, o := range []ServerOption{
			WithRouteRateLimit("/charge", breaker.RateLimit{PerSecond: 1e12, Burst: 1 << 30}),
			WithPeerRateLimit(breaker.RateLimit{PerSecond: 1e12, Burst: 1 << 30}, 0),
			WithConcurrencyLimit(breaker.ConcurrencySettings{Limit: 1 << 20}),
		} {
			o.applyServer(&cfg)
		}
		ph := protectHandler(h, &cfg)
		b.ReportAllocs()
		for b.Loop() {
			ph.ServeHTTP(w, req)
		}
	})
}
