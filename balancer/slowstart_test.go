package balancer_test

import (
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/leaktest"
)

// slowStartShares joins a third endpoint to two at t=0 and returns the
// newcomer's share of the picks in each of the windows [from, from+100ms),
// on an injected clock: 20 picks per millisecond, each done at once with
// a 1 ms latency.
func slowStartShares(t *testing.T, policy balancer.Policy, from ...time.Duration) []float64 {
	t.Helper()
	clk := newFakeClock()
	b := balancer.New(policy, clk.option())
	eps := endpoints(3)
	b.Update(eps[:2])
	clk.Advance(time.Second)
	b.Update(eps)
	t0 := clk.Now()
	out := make([]float64, len(from))
	for i, f := range from {
		clk.Set(t0.Add(f))
		picks, newPicks := 0, 0
		for range 100 {
			for range 20 {
				e, err := b.Pick(balancer.Info{Method: "k" + string(rune('a'+picks%26))})
				if err != nil {
					t.Fatal(err)
				}
				picks++
				if e.ID == eps[2].ID {
					newPicks++
				}
				e.Done(balancer.Outcome{Latency: time.Millisecond})
			}
			clk.Advance(time.Millisecond)
		}
		out[i] = float64(newPicks) / float64(picks)
	}
	return out
}

// TestSlowStart: with slow start, a new endpoint's effective weight ramps
// from MinWeight to 1 over the window (Envoy's slow_start_config): with
// round robin and random picks its share among two old endpoints is
// f/(2+f), f = max(MinWeight, (age/window)^(1/aggression)); the other
// policies scale it about as much; after the window, every policy gives
// it its full share.
func TestSlowStart(t *testing.T) {
	leaktest.Check(t)
	linear := balancer.WithSlowStart(balancer.SlowStart{Window: 10 * time.Second})
	aggressive := balancer.WithSlowStart(balancer.SlowStart{Window: 10 * time.Second, Aggression: 2, MinWeight: 0.2})
	seed := balancer.WithSeed(9)
	ages := []time.Duration{0, 2 * time.Second, 5 * time.Second, 10 * time.Second}
	exact := func(fs ...float64) []float64 {
		out := make([]float64, len(fs))
		for i, f := range fs {
			out[i] = f / (2 + f)
		}
		return out
	}
	// Mid-window factors: age + 50 ms.
	linearWant := exact(0.1, 0.205, 0.505, 1)
	aggressiveWant := exact(0.2, 0.4528, 0.7106, 1) // sqrt(age/window), at least 0.2
	for _, tc := range []struct {
		name   string
		policy balancer.Policy
		want   []float64 // exact shares; nil: a ramp, then a full share
	}{
		{"RoundRobin", balancer.RoundRobin(seed, linear), linearWant},
		{"WeightedRoundRobin", balancer.WeightedRoundRobin(seed, linear), linearWant},
		{"Random", balancer.Random(seed, linear), linearWant},
		{"WeightedRandom", balancer.WeightedRandom(seed, linear), linearWant},
		{"Random aggression 2", balancer.Random(seed, aggressive), aggressiveWant},
		{"LeastRequest", balancer.LeastRequest(seed, linear), nil},
		{"PeakEWMA", balancer.PeakEWMA(seed, linear), nil},
		{"Outlier(RoundRobin)", balancer.Outlier(balancer.RoundRobin(seed, linear)), linearWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := slowStartShares(t, tc.policy, ages...)
			if tc.want != nil {
				for i, w := range tc.want {
					if d := got[i] - w; d < -0.03 || d > 0.03 {
						t.Errorf("share at age %v = %.3f, want %.3f ± 0.03", ages[i], got[i], w)
					}
				}
				return
			}
			if got[0] > 0.15 || got[1] >= got[2] || got[3] < 0.25 {
				t.Errorf("shares at ages %v = %.3f, want a ramp from ≤ 0.15 to ≥ 0.25", ages, got)
			}
		})
	}
}

// TestSlowStartLeavesOthersAlone: the endpoints of a balancer's first set
// start at full weight, hash policies keep their affinity, and a zero
// window means no slow start.
func TestSlowStartLeavesOthersAlone(t *testing.T) {
	leaktest.Check(t)
	ss := balancer.WithSlowStart(balancer.SlowStart{Window: 10 * time.Second})
	for _, tc := range []struct {
		name   string
		policy balancer.Policy
	}{
		{"RingHash", balancer.RingHash(methodKey, ss)},
		{"Maglev", balancer.Maglev(methodKey, ss)},
		{"zero window", balancer.RoundRobin(balancer.WithSlowStart(balancer.SlowStart{}))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := slowStartShares(t, tc.policy, 0)
			if got[0] < 0.2 {
				t.Errorf("newcomer's share at once = %.3f, want its full share", got[0])
			}
		})
	}
	clk := newFakeClock()
	b := balancer.New(balancer.RoundRobin(ss), clk.option())
	b.Update(endpoints(3))
	counts := map[string]int{}
	for range 300 {
		e, _ := b.Pick(balancer.Info{})
		counts[e.ID]++
		e.Done(balancer.Outcome{})
	}
	for id, n := range counts {
		if n != 100 {
			t.Errorf("first set: %s got %d of 300 picks, want 100", id, n)
		}
	}
}

// BenchmarkPickSlowStart measures a round-robin pick while a newcomer
// ramps up (ramping) and after every window ended (settled).
func BenchmarkPickSlowStart(b *testing.B) {
	for _, phase := range []struct {
		name  string
		after time.Duration
	}{{"ramping", time.Second}, {"settled", time.Minute}} {
		b.Run(phase.name, func(b *testing.B) {
			clk := newFakeClock()
			bal := balancer.New(balancer.RoundRobin(balancer.WithSlowStart(balancer.SlowStart{Window: 30 * time.Second})), clk.option())
			eps := endpoints(10)
			bal.Update(eps[:9])
			bal.Update(eps)
			clk.Advance(phase.after)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				e, err := bal.Pick(balancer.Info{})
				if err != nil {
					b.Fatal(err)
				}
				e.Done(balancer.Outcome{})
			}
		})
	}
}
