package balancer_test

import (
	"container/heap"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/leaktest"
)

// warmupShare runs a deterministic discrete-event model on an injected
// clock: two endpoints serve alone for warm (long enough to be busy and
// fully known to the policy), then a third joins; it returns the share
// of picks the newcomer got in [join, join+window). Requests arrive
// every 100 µs; a request's latency is 1 ms × (1 + the
// endpoint's requests in flight when it started / 20) × a jitter in
// [0.8, 1.2], so busy endpoints answer more slowly than the newcomer,
// idle, but still far below the 30 ms a policy might assume for an
// endpoint it knows nothing about. Keys are random (for the hash policies).
func warmupShare(t *testing.T, policy balancer.Policy, warm, window time.Duration) float64 {
	t.Helper()
	const gap = 100 * time.Microsecond
	clk := newFakeClock()
	start := clk.Now()
	b := balancer.New(policy, clk.option())
	eps := endpoints(3)
	b.Update(eps[:2])
	r := rand.New(rand.NewPCG(3, 5))
	inflight := map[string]int{}
	var pending completions
	finish := func(until time.Duration) {
		for len(pending) > 0 && pending[0].at <= until {
			c := heap.Pop(&pending).(completion)
			clk.Set(start.Add(c.at))
			inflight[c.ep.ID]--
			c.ep.Done(balancer.Outcome{Latency: c.lat, Result: balancer.Success})
		}
	}
	newPicks, picks := 0, 0
	for now := time.Duration(0); now < warm+window; now += gap {
		finish(now)
		clk.Set(start.Add(now))
		if now == warm {
			b.Update(eps)
		}
		e, err := b.Pick(balancer.Info{Method: "user-" + strconv.Itoa(r.IntN(10_000))})
		if err != nil {
			t.Fatal(err)
		}
		lat := time.Duration(float64(time.Millisecond) * (1 + float64(inflight[e.ID])/20) * (0.8 + 0.4*r.Float64()))
		inflight[e.ID]++
		heap.Push(&pending, completion{at: now + lat, ep: e, lat: lat})
		if now >= warm {
			picks++
			if e.ID == eps[2].ID {
				newPicks++
			}
		}
	}
	finish(1 << 62)
	return float64(newPicks) / float64(picks)
}

// warmupPolicies are every policy of the package, with a fixed seed.
func warmupPolicies(opts ...balancer.Option) []struct {
	name string
	new  func() balancer.Policy
} {
	opts = append(opts, balancer.WithSeed(42))
	return []struct {
		name string
		new  func() balancer.Policy
	}{
		{"RoundRobin", func() balancer.Policy { return balancer.RoundRobin(opts...) }},
		{"WeightedRoundRobin", func() balancer.Policy { return balancer.WeightedRoundRobin(opts...) }},
		{"Random", func() balancer.Policy { return balancer.Random(opts...) }},
		{"WeightedRandom", func() balancer.Policy { return balancer.WeightedRandom(opts...) }},
		{"LeastRequest", func() balancer.Policy { return balancer.LeastRequest(opts...) }},
		{"PeakEWMA", func() balancer.Policy { return balancer.PeakEWMA(opts...) }},
		{"Outlier(PeakEWMA)", func() balancer.Policy { return balancer.Outlier(balancer.PeakEWMA(opts...)) }},
		{"RingHash", func() balancer.Policy { return balancer.RingHash(methodKey, opts...) }},
		{"Maglev", func() balancer.Policy { return balancer.Maglev(methodKey, opts...) }},
	}
}

// TestNewEndpointWarmup: a healthy endpoint that joins two busy ones gets
// at least a quarter of the calls within five seconds of joining, under
// every policy — in the first second already, and in the whole five. The
// hash policies do too, because the keys are spread: each key keeps its
// endpoint, and a third of the keys move to the newcomer.
func TestNewEndpointWarmup(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range warmupPolicies() {
		t.Run(tc.name, func(t *testing.T) {
			for _, window := range []time.Duration{time.Second, 5 * time.Second} {
				if got := warmupShare(t, tc.new(), 3*time.Second, window); got < 0.25 {
					t.Errorf("new endpoint got %.1f%% of the calls in its first %v, want ≥ 25%%", 100*got, window)
				} else {
					t.Logf("new endpoint's share of its first %v: %.1f%%", window, 100*got)
				}
			}
		})
	}
}

// TestPeakEWMAProbesOneAtATime: an endpoint with no latency sample is
// picked at once, but gets no second request before its first completes;
// once it has a sample, it competes on cost.
func TestPeakEWMAProbesOneAtATime(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.PeakEWMA(balancer.WithSeed(1)), clk.option())
	eps := endpoints(3)
	b.Update(eps[:2])
	// The known endpoints have history and a request in flight each.
	for _, e := range b.Endpoints() {
		picked, _ := b.Pick(balancer.Info{Skip: func(o *balancer.Endpoint) bool { return o != e }})
		picked.Done(balancer.Outcome{Latency: time.Millisecond})
		if _, err := b.Pick(balancer.Info{Skip: func(o *balancer.Endpoint) bool { return o != e }}); err != nil {
			t.Fatal(err)
		}
	}
	b.Update(eps)
	var probe *balancer.Endpoint
	counts := map[string]int{}
	for range 200 {
		e, err := b.Pick(balancer.Info{})
		if err != nil {
			t.Fatal(err)
		}
		counts[e.ID]++
		if e.ID == eps[2].ID {
			probe = e
		}
	}
	if counts[eps[2].ID] != 1 {
		t.Fatalf("new endpoint picked %d times with its probe in flight, want exactly 1 (picks %v)", counts[eps[2].ID], counts)
	}
	// Its probe answers fast: it is the cheapest now and gets picked.
	probe.Done(balancer.Outcome{Latency: 100 * time.Microsecond})
	if lat, ok := probe.Load.Latency(); !ok || lat != 100*time.Microsecond {
		t.Fatalf("latency after the probe = %v, %v", lat, ok)
	}
	e, err := b.Pick(balancer.Info{Skip: func(o *balancer.Endpoint) bool { return o.ID == eps[0].ID }})
	if err != nil || e.ID != eps[2].ID {
		t.Errorf("pick between a loaded known endpoint and the probed newcomer = %v, %v; want the newcomer", e, err)
	}
}

// TestPeakEWMADecaysToZero: every estimate, whatever it was, decays
// towards zero with the time since its last update (exp(-Δt/τ)).
func TestPeakEWMADecaysToZero(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.PeakEWMA(balancer.WithDecay(time.Second)), clk.option())
	b.Update([]discovery.Endpoint{{ID: "a", Addr: "10.0.0.1:80"}})
	e, _ := b.Pick(balancer.Info{})
	e.Done(balancer.Outcome{Latency: 800 * time.Millisecond})
	at := clk.Now()
	for _, tc := range []struct {
		after time.Duration
		want  time.Duration
	}{
		{0, 800 * time.Millisecond},
		{time.Second, 294 * time.Millisecond}, // 800 ms / e
		{10 * time.Second, 36 * time.Microsecond},
	} {
		clk.Set(at.Add(tc.after))
		got, ok := e.Load.Latency()
		if !ok || got < tc.want*99/100 || got > tc.want*101/100 {
			t.Errorf("latency %v after the sample = %v, %v; want %v", tc.after, got, ok, tc.want)
		}
	}
}

// TestPeakEWMAPeakFades: a lone peak (a pause that delays every endpoint
// at once) leaves the estimate within a few samples, even when samples
// arrive far more often than the decay time; a latency above the
// estimate still replaces it at once.
func TestPeakEWMAPeakFades(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.PeakEWMA(), clk.option())
	b.Update([]discovery.Endpoint{{ID: "a", Addr: "10.0.0.1:80"}})
	sample := func(lat time.Duration) time.Duration {
		clk.Advance(time.Millisecond)
		e, _ := b.Pick(balancer.Info{})
		e.Done(balancer.Outcome{Latency: lat})
		got, _ := e.Load.Latency()
		return got
	}
	sample(time.Millisecond)
	if got := sample(10 * time.Millisecond); got != 10*time.Millisecond {
		t.Fatalf("after a peak: %v, want the peak at once", got)
	}
	var got time.Duration
	for range 10 {
		got = sample(time.Millisecond)
	}
	if got > 1300*time.Microsecond {
		t.Errorf("ten 1 ms samples after a 10 ms peak: estimate %v, want < 1.3ms", got)
	}
}
