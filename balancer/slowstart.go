package balancer

import (
	"math"
	"sync/atomic"
	"time"
)

// Slow-start defaults (Envoy's slow_start_config).
const (
	// DefaultSlowStartAggression makes the ramp linear.
	DefaultSlowStartAggression = 1.0
	// DefaultSlowStartMinWeight is the share of its weight a new endpoint
	// starts with.
	DefaultSlowStartMinWeight = 0.1
)

// SlowStart configures [WithSlowStart], after Envoy's slow_start_config.
// The zero value turns slow start off.
type SlowStart struct {
	// Window is how long a new endpoint's weight ramps up; ≤ 0 turns slow
	// start off.
	Window time.Duration
	// Aggression shapes the ramp: the weight factor is
	// (age/Window)^(1/Aggression), so 1 is linear, larger values ramp
	// faster at first. Values ≤ 0 mean [DefaultSlowStartAggression].
	Aggression float64
	// MinWeight is the smallest weight factor, in (0, 1]: a new endpoint
	// starts with this share of its weight. Values outside (0, 1] mean
	// [DefaultSlowStartMinWeight].
	MinWeight float64
}

// WithSlowStart ramps up the traffic of endpoints that join a [Balancer]
// that already had endpoints, as Envoy's slow_start_config does: for
// s.Window after it joined, an endpoint's effective weight is its weight
// × max(s.MinWeight, (age/s.Window)^(1/s.Aggression)). Endpoints of a
// balancer's first set, and every endpoint once its window is over, take
// their full share. An endpoint that leaves and comes back starts over.
//
// It is read by [RoundRobin], [WeightedRoundRobin], [Random],
// [WeightedRandom], [LeastRequest] and [PeakEWMA] (and so by [Subset],
// [ZoneAware] and [Outlier] around them), which apply it the same way: a
// pick of an endpoint in its window is kept with a probability of its
// weight factor, and otherwise the policy picks again (up to four times).
// With round robin and random picks this is exactly weighting by the
// factor; with the power of two choices it scales the endpoint's share
// about as much. [RingHash] and [Maglev] ignore it: turning a key away
// from its endpoint would break the affinity they exist for (Envoy, too,
// slow-starts only round robin and least request).
//
// Slow start reads the Balancer's clock ([WithClock]). Once every window
// of a picker's set is over, a pick costs one atomic load more. A zero
// or negative window is ignored.
func WithSlowStart(s SlowStart) Option {
	return optionFunc(func(c *config) {
		if s.Window <= 0 {
			return
		}
		if s.Aggression <= 0 {
			s.Aggression = DefaultSlowStartAggression
		}
		if s.MinWeight <= 0 || s.MinWeight > 1 {
			s.MinWeight = DefaultSlowStartMinWeight
		}
		c.slowStart = s
	})
}

// slowStartTries bounds the picks a slow-start picker makes for one
// request.
const slowStartTries = 4

// withSlowStart wraps picker when c asks for slow start and an endpoint
// of eps is still in its window.
func withSlowStart(c *config, eps []*Endpoint, picker Picker) Picker {
	s := c.slowStart
	if s.Window <= 0 {
		return picker
	}
	var until int64
	for _, e := range eps {
		if j := e.Load.joined; j != 0 {
			until = max(until, j+int64(s.Window))
		}
	}
	if until == 0 || eps[0].Load.clk.nanos() >= until {
		return picker
	}
	return &slowStartPicker{
		inner:   picker,
		clk:     eps[0].Load.clk,
		rng:     newRNG(c),
		until:   until,
		window:  float64(s.Window),
		inverse: 1 / s.Aggression,
		minW:    s.MinWeight,
	}
}

type slowStartPicker struct {
	inner   Picker
	clk     *clock
	rng     *rng
	until   int64 // clock reading when the last window ends
	window  float64
	inverse float64 // 1/aggression
	minW    float64
	over    atomic.Bool // every window has ended
}

func (p *slowStartPicker) Pick(info Info) (*Endpoint, error) {
	e, err := p.inner.Pick(info)
	if err != nil || p.over.Load() {
		return e, err
	}
	now := p.clk.nanos()
	if now >= p.until {
		p.over.Store(true)
		return e, nil
	}
	for range slowStartTries - 1 {
		if f := p.factor(e.Load, now); f >= 1 || p.rng.float64() < f {
			return e, nil
		}
		next, err := p.inner.Pick(info)
		if err != nil {
			return e, nil
		}
		e = next
	}
	return e, nil
}

// factor returns the weight factor of l at now: 1 outside its window.
func (p *slowStartPicker) factor(l *Load, now int64) float64 {
	if l.joined == 0 {
		return 1
	}
	age := float64(now - l.joined)
	if age >= p.window {
		return 1
	}
	f := max(age, 0) / p.window
	if p.inverse != 1 {
		f = math.Pow(f, p.inverse)
	}
	return max(f, p.minW)
}
