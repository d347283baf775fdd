package balancer_test

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
)

func ExampleNew() {
	b := balancer.New(balancer.RoundRobin())
	b.Update([]discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:8080"},
		{ID: "b", Addr: "10.0.0.2:8080"},
		{ID: "c", Addr: "10.0.0.3:8080"},
	})
	seen := map[string]int{}
	for range 6 {
		e, err := b.Pick(balancer.Info{})
		if err != nil {
			fmt.Println(err)
			return
		}
		seen[e.ID]++
		// ... send the request to e.Addr, then report how it went:
		e.Done(balancer.Outcome{Latency: 3 * time.Millisecond, Result: balancer.Success})
	}
	fmt.Println(seen)

	b.Update(nil)
	_, err := b.Pick(balancer.Info{})
	fmt.Println(errors.Is(err, balancer.ErrNoEndpoints))
	// Output:
	// map[a:2 b:2 c:2]
	// true
}

func ExampleWeightedRoundRobin() {
	b := balancer.New(balancer.WeightedRoundRobin(balancer.WithSeed(1)))
	b.Update([]discovery.Endpoint{
		{ID: "big", Addr: "10.0.0.1:8080", Weight: 3},
		{ID: "small", Addr: "10.0.0.2:8080", Weight: 1},
	})
	seen := map[string]int{}
	for range 400 {
		e, _ := b.Pick(balancer.Info{})
		seen[e.ID]++
		e.Done(balancer.Outcome{Result: balancer.Dropped})
	}
	fmt.Println(seen)
	// Output: map[big:300 small:100]
}

func ExamplePeakEWMA() {
	clk := time.Unix(0, 0)
	b := balancer.New(balancer.PeakEWMA(balancer.WithSeed(1)), balancer.WithClock(func() time.Time { return clk }))
	b.Update([]discovery.Endpoint{
		{ID: "fast", Addr: "10.0.0.1:8080"},
		{ID: "slow", Addr: "10.0.0.2:8080"},
	})
	latency := map[string]time.Duration{"fast": 5 * time.Millisecond, "slow": 200 * time.Millisecond}
	seen := map[string]int{}
	for range 1000 {
		e, _ := b.Pick(balancer.Info{})
		seen[e.ID]++
		clk = clk.Add(time.Millisecond) // one request at a time, in this example
		e.Done(balancer.Outcome{Latency: latency[e.ID]})
	}
	fmt.Println(seen["slow"] < 10)
	// Output: true
}

func ExampleRingHash() {
	b := balancer.New(balancer.RingHash(balancer.HeaderKey("X-User")))
	b.Update([]discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:8080"},
		{ID: "b", Addr: "10.0.0.2:8080"},
		{ID: "c", Addr: "10.0.0.3:8080"},
	})
	r, _ := http.NewRequest("GET", "http://cart/items", nil)
	r.Header.Set("X-User", "alice")
	first, _ := b.Pick(balancer.Info{HTTP: r})
	first.Done(balancer.Outcome{})
	same := true
	for range 100 {
		e, _ := b.Pick(balancer.Info{HTTP: r})
		same = same && e.ID == first.ID
		e.Done(balancer.Outcome{})
	}
	fmt.Println("alice always on the same endpoint:", same)
	// Output: alice always on the same endpoint: true
}

func ExampleMaglev() {
	b := balancer.New(balancer.Maglev(balancer.CookieKey("session")))
	b.Update([]discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:8080"},
		{ID: "b", Addr: "10.0.0.2:8080"},
	})
	r, _ := http.NewRequest("GET", "http://cart/items", nil)
	r.Header.Set("Cookie", "session=s-42")
	e1, _ := b.Pick(balancer.Info{HTTP: r})
	e2, _ := b.Pick(balancer.Info{HTTP: r})
	fmt.Println(e1 == e2)
	// Output: true
}

func ExampleQueryKey() {
	key := balancer.QueryKey("user")
	for _, u := range []string{
		"http://cart/items?user=alice&page=2",
		"http://cart/items?page=2&user=bob%20smith&user=carol",
		"http://cart/items",
	} {
		r, _ := http.NewRequest("GET", u, nil)
		fmt.Printf("%q\n", key(balancer.Info{HTTP: r}))
	}
	// Output:
	// "alice"
	// "bob smith"
	// ""
}

func ExampleOutlier() {
	now := time.Unix(0, 0)
	b := balancer.New(
		balancer.Outlier(balancer.RoundRobin()),
		balancer.WithClock(func() time.Time { return now }),
	)
	b.Update([]discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:8080"},
		{ID: "b", Addr: "10.0.0.2:8080"},
		{ID: "c", Addr: "10.0.0.3:8080"},
	})
	// "b" fails five requests in a row.
	onlyB := func(e *balancer.Endpoint) bool { return e.ID != "b" }
	for range 5 {
		e, _ := b.Pick(balancer.Info{Skip: onlyB})
		e.Done(balancer.Outcome{Latency: time.Millisecond, Result: balancer.Failure})
	}
	count := func() int {
		n := 0
		for range 30 {
			e, _ := b.Pick(balancer.Info{})
			if e.ID == "b" {
				n++
			}
			e.Done(balancer.Outcome{Latency: time.Millisecond})
		}
		return n
	}
	fmt.Println("picks of b while ejected:", count())
	now = now.Add(30 * time.Second) // the first ejection lasts 30 s
	fmt.Println("picks of b after 30 s:", count())
	// Output:
	// picks of b while ejected: 0
	// picks of b after 30 s: 10
}

func ExampleSubset() {
	b := balancer.New(balancer.Subset(balancer.MatchMeta("version", "v2"), balancer.RoundRobin()))
	b.Update([]discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:8080", Meta: map[string]string{"version": "v1"}},
		{ID: "b", Addr: "10.0.0.2:8080", Meta: map[string]string{"version": "v2"}},
	})
	e, _ := b.Pick(balancer.Info{})
	fmt.Println(e.ID)
	// Output: b
}

func ExampleZoneAware() {
	b := balancer.New(balancer.Outlier(balancer.ZoneAware("eu-1a", balancer.LeastRequest())))
	b.Update([]discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:8080", Zone: "eu-1a"},
		{ID: "b", Addr: "10.0.0.2:8080", Zone: "eu-1b"},
		{ID: "c", Addr: "10.0.0.3:8080", Zone: "eu-1a"},
	})
	zones := map[string]int{}
	for range 100 {
		e, _ := b.Pick(balancer.Info{})
		zones[e.Zone]++
		e.Done(balancer.Outcome{Latency: time.Millisecond})
	}
	fmt.Println(zones)
	// Output: map[eu-1a:100]
}

func ExampleInfo_skip() {
	b := balancer.New(balancer.LeastRequest())
	b.Update([]discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:8080"},
		{ID: "b", Addr: "10.0.0.2:8080"},
	})
	// A retry must not go back to the endpoint that just failed.
	tried := "a"
	e, _ := b.Pick(balancer.Info{Skip: func(e *balancer.Endpoint) bool { return e.ID == tried }})
	fmt.Println(e.ID)
	// Output: b
}
