package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
)

// A set of breakers follows the endpoints of a service; a breaker that
// trips refuses calls with ErrCircuitOpen before any I/O.
func ExampleSet() {
	set := breaker.NewSet("payments", breaker.Settings{
		ConsecutiveFailures: 2,
		OnStateChange: func(c breaker.StateChange) {
			fmt.Printf("%s/%s: %v -> %v\n", c.Service, c.Name, c.From, c.To)
		},
	})
	set.Update([]discovery.Endpoint{{ID: "payments-1", Addr: "10.0.0.1:8080"}})
	b := set.Get("payments-1")
	for i := 0; i < 2; i++ {
		_ = b.Do(func() breaker.Result { return breaker.Failure })
	}
	err := b.Do(func() breaker.Result { return breaker.Success })
	fmt.Println(errors.Is(err, breaker.ErrCircuitOpen), set.Open("payments-1"))
	// Output:
	// payments/payments-1: closed -> open
	// true true
}

// Settings.Now gives the breaker a clock of the program's own: here a
// clock moved by hand, so the open timeout passes without waiting.
func ExampleSettings_now() {
	now := time.Unix(1_700_000_000, 0)
	b := breaker.New("payments", "payments-1", breaker.Settings{
		ConsecutiveFailures: 1,
		OpenTimeout:         30 * time.Second,
		Now:                 func() time.Time { return now },
	})
	_ = b.Do(func() breaker.Result { return breaker.Failure })
	fmt.Println(b.State())
	now = now.Add(29 * time.Second)
	fmt.Println(b.State())
	now = now.Add(time.Second)
	fmt.Println(b.State())
	// Output:
	// open
	// open
	// half-open
}

// A retry budget allows retries of 20% of recent requests plus a floor.
func ExampleBudget() {
	now := time.Unix(1_700_000_000, 0)
	b := breaker.NewBudget(breaker.BudgetSettings{Ratio: 0.2, PerSecond: -1})
	for i := 0; i < 50; i++ {
		b.Request(now)
	}
	retries := 0
	for b.TryRetry(now) {
		retries++
	}
	fmt.Println(retries)
	// Output: 10
}

// Critical calls keep a reserve of the concurrency limit; sheddable ones
// are refused first.
func ExampleConcurrencyLimiter() {
	l := breaker.NewConcurrencyLimiter(breaker.ConcurrencySettings{Limit: 4, CriticalReserve: 0.5, CriticalWait: -1})
	ctx := context.Background()
	fmt.Println(l.Acquire(ctx, breaker.Sheddable), l.Acquire(ctx, breaker.Sheddable))
	fmt.Println(l.Acquire(ctx, breaker.Sheddable))
	fmt.Println(l.Acquire(ctx, breaker.Critical), l.Acquire(ctx, breaker.Critical))
	fmt.Println(l.Acquire(ctx, breaker.Critical))
	// Output:
	// <nil> <nil>
	// breaker: load shed
	// <nil> <nil>
	// breaker: load shed
}

// A keyed limiter gives each caller its own bucket, in bounded memory.
func ExampleKeyedLimiter() {
	now := time.Unix(1_700_000_000, 0)
	k := breaker.NewKeyedLimiter(breaker.RateLimit{PerSecond: 1, Burst: 2}, 1000)
	for i := 0; i < 3; i++ {
		ok, wait := k.Allow("spiffe://example.org/noisy", now)
		fmt.Println(ok, wait)
	}
	ok, _ := k.Allow("spiffe://example.org/quiet", now)
	fmt.Println(ok)
	// Output:
	// true 0s
	// true 0s
	// false 1s
	// true
}
