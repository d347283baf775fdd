package balancer_test

import (
	"fmt"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
)

// With slow start, an endpoint that joins gets a tenth of its share at
// first, and its full share once the window is over.
func ExampleWithSlowStart() {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b := balancer.New(
		balancer.RoundRobin(balancer.WithSeed(1), balancer.WithSlowStart(balancer.SlowStart{Window: time.Minute})),
		balancer.WithClock(func() time.Time { return now }),
	)
	a := discovery.Endpoint{ID: "a", Addr: "10.0.0.1:80"}
	c := discovery.Endpoint{ID: "c", Addr: "10.0.0.3:80"}
	b.Update([]discovery.Endpoint{a})
	b.Update([]discovery.Endpoint{a, c}) // c joins
	share := func() float64 {
		n := 0
		for range 10000 {
			e, _ := b.Pick(balancer.Info{})
			if e.ID == "c" {
				n++
			}
			e.Done(balancer.Outcome{})
		}
		return float64(n) / 10000
	}
	fmt.Printf("as it joins: about %.2f\n", share())
	now = now.Add(time.Minute)
	fmt.Printf("a minute later: %.2f\n", share())
	// Output:
	// as it joins: about 0.10
	// a minute later: 0.50
}
