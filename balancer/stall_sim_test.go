package balancer_test

import (
	"container/heap"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/leaktest"
)

// simulateStalls runs the model of simulate for duration, with the
// caller's process pausing: every 100 ms it stalls for stall (0: never),
// as a loaded machine or a GC pause makes it. Nothing completes or
// is picked during a stall; the requests that would have completed in it
// complete at its end, their latency inflated — on every endpoint that
// had requests in flight, as in the real process, while an endpoint with
// none in flight keeps its estimate. The pause is correlated noise of the
// kind that made peak estimates useless in BenchmarkTail.
func simulateStalls(t *testing.T, policy balancer.Policy, slowFactor float64, stall, duration time.Duration) simResult {
	t.Helper()
	const (
		rate   = 500.0
		base   = 10 * time.Millisecond
		period = 100 * time.Millisecond
	)
	clk := newFakeClock()
	start := clk.Now()
	b := balancer.New(policy, clk.option())
	b.Update(endpoints(5))
	r := rand.New(rand.NewPCG(7, 11))
	// resume moves a time inside a stall to the stall's end.
	resume := func(at time.Duration) time.Duration {
		if off := at % period; off < stall {
			return at - off + stall
		}
		return at
	}
	var pending completions
	var lats []time.Duration
	slowPicks, picks := 0, 0
	finish := func(until time.Duration) {
		for len(pending) > 0 && pending[0].at <= until {
			c := heap.Pop(&pending).(completion)
			clk.Set(start.Add(c.at))
			c.ep.Done(balancer.Outcome{Latency: c.lat, Result: balancer.Success})
		}
	}
	for arrival := time.Duration(0); arrival < duration; {
		arrival += time.Duration(r.ExpFloat64() / rate * float64(time.Second))
		now := resume(arrival)
		finish(now)
		clk.Set(start.Add(now))
		e, err := b.Pick(balancer.Info{Method: "user-" + strconv.Itoa(r.IntN(10_000))})
		if err != nil {
			t.Fatal(err)
		}
		service := float64(base) * (0.8 + 0.4*r.Float64())
		if e.ID == "ep-4" {
			slowPicks++
			service *= slowFactor
		}
		picks++
		done := resume(now + time.Duration(service))
		lat := done - arrival // the caller waited through the stall too
		lats = append(lats, lat)
		heap.Push(&pending, completion{at: done, ep: e, lat: done - now})
	}
	finish(1 << 62)
	slices.Sort(lats)
	return simResult{
		slowShare: float64(slowPicks) / float64(picks),
		p50:       lats[len(lats)/2],
		p99:       lats[len(lats)*99/100],
	}
}

// TestSimulationStalls: with the caller pausing for as long as a healthy
// request takes, every 100 ms, peak-EWMA still keeps the slow endpoint's
// share under 1% and the p99 within 1.5× of its all-healthy p99. (Pauses
// of three times that, 30% of the time, defeat it: the requests queued in
// a pause are picked in one burst, the healthy endpoints' in-flight
// counts climb, and the idle slow endpoint wins about 1.5% of the picks.)
func TestSimulationStalls(t *testing.T) {
	leaktest.Check(t)
	for _, stall := range []time.Duration{0, 5 * time.Millisecond, 10 * time.Millisecond} {
		slow := simulateStalls(t, balancer.PeakEWMA(balancer.WithSeed(42)), 10, stall, 60*time.Second)
		healthy := simulateStalls(t, balancer.PeakEWMA(balancer.WithSeed(42)), 1, stall, 60*time.Second)
		ratio := float64(slow.p99) / float64(healthy.p99)
		t.Logf("stall %v: slow share %.2f%%, p99 %v vs all-healthy %v (%.2f×)", stall, 100*slow.slowShare, slow.p99, healthy.p99, ratio)
		if slow.slowShare >= 0.01 || ratio > 1.5 {
			t.Errorf("stall %v: slow share %.2f%%, p99 ratio %.2f×; want < 1%% and ≤ 1.5×", stall, 100*slow.slowShare, ratio)
		}
	}
}
