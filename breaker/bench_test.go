package breaker

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/weftmesh/weft/discovery"
)

func BenchmarkBreakerDo(b *testing.B) {
	br := New("svc", "ep", Settings{})
	fn := func() Result { return Success }
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := br.Do(fn); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkSetOpen(b *testing.B) {
	set := NewSet("svc", Settings{})
	set.Update([]discovery.Endpoint{{ID: "a"}, {ID: "b"}, {ID: "c"}})
	b.ReportAllocs()
	for b.Loop() {
		if set.Open("b") {
			b.Fatal("open")
		}
	}
}

func BenchmarkBudgetRequest(b *testing.B) {
	bg := NewBudget(BudgetSettings{})
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		bg.Request(now)
	}
}

func BenchmarkKeyedLimiterAllow(b *testing.B) {
	k := NewKeyedLimiter(RateLimit{PerSecond: 1e9, Burst: 1e9}, 0)
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "spiffe://example.org/caller-" + strconv.Itoa(i)
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k.Allow(keys[i&63], now)
		i++
	}
}

func BenchmarkConcurrencyLimiter(b *testing.B) {
	l := NewConcurrencyLimiter(ConcurrencySettings{Limit: 1 << 20})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := l.Acquire(ctx, Sheddable); err != nil {
				b.Fatal(err)
			}
			l.Release(time.Millisecond, true)
		}
	})
}

// BenchmarkGobreaker compares gobreaker's two ways of guarding a call,
// single-threaded: Execute (what Breaker.Do uses) and the two-step
// Allow/done.
func BenchmarkGobreaker(b *testing.B) {
	b.Run("execute", func(b *testing.B) {
		cb := gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{})
		fn := func() (struct{}, error) { return struct{}{}, nil }
		b.ReportAllocs()
		for b.Loop() {
			_, _ = cb.Execute(fn)
		}
	})
	b.Run("two-step", func(b *testing.B) {
		cb := gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{})
		b.ReportAllocs()
		for b.Loop() {
			done, err := cb.Allow()
			if err != nil {
				b.Fatal(err)
			}
			done(nil)
		}
	})
}
