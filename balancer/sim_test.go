package balancer_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/leaktest"
)

// The simulation is a deterministic discrete-event model driven by an
// injected clock:
//
//   - 5 endpoints serve requests concurrently without queueing (a delay
//     server: latency does not depend on load); a request's latency is
//     the endpoint's base latency × a uniform jitter in [0.8, 1.2];
//     healthy endpoints have a 10 ms base, the slow one 100 ms;
//   - requests arrive as a Poisson process at 500/s for 120 s of
//     simulated time (60 000 requests), each with a random key out of
//     10 000 (used by the hash policies);
//   - at each event the clock is set to the event's time: completions
//     due before an arrival are reported (Done with their latency) before
//     it is picked.
//
// The random streams (arrivals, jitter, keys) and the policies' seeds are
// fixed, so the figures are the same on every run.

type simResult struct {
	slowShare float64
	p50, p99  time.Duration
}

type completion struct {
	at  time.Duration
	ep  *balancer.Endpoint
	lat time.Duration
}

type completions []completion

func (c completions) Len() int           { return len(c) }
func (c completions) Less(i, j int) bool { return c[i].at < c[j].at }
func (c completions) Swap(i, j int)      { c[i], c[j] = c[j], c[i] }
func (c *completions) Push(x any)        { *c = append(*c, x.(completion)) }
func (c *completions) Pop() any {
	old := *c
	x := old[len(old)-1]
	*c = old[:len(old)-1]
	return x
}

func simulate(t *testing.T, policy balancer.Policy, slowFactor float64) simResult {
	t.Helper()
	return simulateStalls(t, policy, slowFactor, 0, 120*time.Second)
}

func TestSimulationOneSlowEndpoint(t *testing.T) {
	leaktest.Check(t)
	seed := balancer.WithSeed(42)
	cases := []struct {
		name string
		new  func() balancer.Policy
	}{
		{"RoundRobin", func() balancer.Policy { return balancer.RoundRobin(seed) }},
		{"WeightedRoundRobin", func() balancer.Policy { return balancer.WeightedRoundRobin(seed) }},
		{"Random", func() balancer.Policy { return balancer.Random(seed) }},
		{"WeightedRandom", func() balancer.Policy { return balancer.WeightedRandom(seed) }},
		{"LeastRequest", func() balancer.Policy { return balancer.LeastRequest(seed) }},
		{"PeakEWMA", func() balancer.Policy { return balancer.PeakEWMA(seed) }},
		{"RingHash", func() balancer.Policy { return balancer.RingHash(methodKey, seed) }},
		{"Maglev", func() balancer.Policy { return balancer.Maglev(methodKey, seed) }},
		{"Outlier(PeakEWMA)", func() balancer.Policy { return balancer.Outlier(balancer.PeakEWMA(seed)) }},
	}
	var table strings.Builder
	table.WriteString("\npolicy               slow share   p50 slow   p99 slow   p99 healthy   p99 ratio\n")
	results := map[string][2]simResult{}
	for _, c := range cases {
		slow := simulate(t, c.new(), 10)
		healthy := simulate(t, c.new(), 1)
		results[c.name] = [2]simResult{slow, healthy}
		table.WriteString(padRight(c.name, 20) + " " +
			padLeft(strconv.FormatFloat(100*slow.slowShare, 'f', 2, 64)+"%", 10) + " " +
			padLeft(slow.p50.Round(10*time.Microsecond).String(), 10) + " " +
			padLeft(slow.p99.Round(10*time.Microsecond).String(), 10) + " " +
			padLeft(healthy.p99.Round(10*time.Microsecond).String(), 13) + " " +
			padLeft(strconv.FormatFloat(float64(slow.p99)/float64(healthy.p99), 'f', 2, 64)+"×", 11) + "\n")
	}
	t.Log(table.String())

	rr := results["RoundRobin"][0]
	if rr.p99 < 80*time.Millisecond {
		t.Errorf("round robin p99 = %v, want the slow endpoint's latency (≥ 80ms): the model is off", rr.p99)
	}
	pe := results["PeakEWMA"]
	if pe[0].slowShare >= 0.05 {
		t.Errorf("PeakEWMA sent %.2f%% of requests to the slow endpoint, want < 5%%", 100*pe[0].slowShare)
	}
	if ratio := float64(pe[0].p99) / float64(pe[1].p99); ratio > 1.5 {
		t.Errorf("PeakEWMA p99 %v is %.2f× the all-healthy p99 %v, want ≤ 1.5×", pe[0].p99, ratio, pe[1].p99)
	}
	if lr := results["LeastRequest"][0]; lr.slowShare >= rr.slowShare {
		t.Errorf("least request sent %.2f%% to the slow endpoint, no better than round robin's %.2f%%", 100*lr.slowShare, 100*rr.slowShare)
	}
}

func padRight(s string, n int) string { return s + strings.Repeat(" ", max(n-len([]rune(s)), 0)) }
func padLeft(s string, n int) string  { return strings.Repeat(" ", max(n-len([]rune(s)), 0)) + s }
