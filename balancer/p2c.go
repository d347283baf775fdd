package balancer

import "math"

// LeastRequest returns a policy that samples two distinct endpoints at
// random and picks the one with fewer requests in flight (the power of two
// choices), ties going to the first. Skipped endpoints are never sampled.
// It reads [WithSeed] and [WithSlowStart].
func LeastRequest(opts ...Option) Policy { return leastRequest{cfg: newConfig(opts)} }

type leastRequest struct{ cfg config }

func (leastRequest) readsInFlight() bool { return true }

func (p leastRequest) Build(eps []*Endpoint) Picker {
	return withSlowStart(&p.cfg, eps, &leastRequestPicker{endpoints: eps, loads: loadsOf(eps), rng: newRNG(&p.cfg)})
}

// loadsOf returns the endpoints' loads, so P2C compares candidates
// without reading the endpoints themselves.
func loadsOf(eps []*Endpoint) []*Load {
	loads := make([]*Load, len(eps))
	for i, e := range eps {
		loads[i] = e.Load
	}
	return loads
}

type leastRequestPicker struct {
	endpoints []*Endpoint
	loads     []*Load
	rng       *rng
}

func (p *leastRequestPicker) Pick(info Info) (*Endpoint, error) {
	a, b := pair(p.endpoints, p.rng, &info)
	switch {
	case a < 0:
		return nil, ErrAllSkipped
	case b < 0:
		return p.endpoints[a], nil
	}
	if p.loads[b].inflight.Load() < p.loads[a].inflight.Load() {
		a = b
	}
	return p.endpoints[a], nil
}

// pair samples two distinct indexes of endpoints that info does not skip;
// b is -1 when only one is left, a is -1 when none is.
func pair(eps []*Endpoint, r *rng, info *Info) (a, b int) {
	n := len(eps)
	if n == 1 {
		if info.skipped(eps[0]) {
			return -1, -1
		}
		return 0, -1
	}
	a, b = r.pair(n)
	if info.Skip == nil {
		return a, b
	}
	if info.Skip(eps[a]) {
		if a = draw(eps, r, info, b); a < 0 {
			// Every endpoint but b is skipped.
			if info.Skip(eps[b]) {
				return -1, -1
			}
			return b, -1
		}
	}
	if info.Skip(eps[b]) {
		b = draw(eps, r, info, a)
	}
	return a, b
}

// PeakEWMA returns a policy that samples two distinct endpoints at random
// and picks the cheaper, where the cost is the endpoint's peak-sensitive
// latency EWMA × (requests in flight + 1), as in Finagle and
// linkerd2-proxy. A latency above the estimate replaces it at once; lower
// latencies pull it down with a time constant of [WithDecay] (default
// [DefaultDecay]), and every estimate decays towards zero with the time
// since its last update, so an endpoint that is not picked becomes cheap
// again and is probed rather than starved.
//
// An endpoint with no latency sample yet (new, or back after it left the
// set) is tried at once, one probe at a time, as in Finagle: it costs
// nothing while no request to it is in flight, and a prohibitive penalty
// per request in flight until the first one completes with a latency.
//
// Skipped endpoints are never sampled. It reads [WithSeed], [WithDecay]
// and [WithSlowStart]; its clock is the [Balancer]'s ([WithClock]). To
// spare a clock read per pick, costs are decayed to the time of the
// latest reported outcome, which trails the clock by at most a
// millisecond while outcomes arrive.
func PeakEWMA(opts ...Option) Policy { return peakEWMA{cfg: newConfig(opts)} }

type peakEWMA struct{ cfg config }

func (peakEWMA) readsInFlight() bool { return true }

func (p peakEWMA) Build(eps []*Endpoint) Picker {
	for _, e := range eps {
		if e.Load.tau.Load() != int64(p.cfg.decay) {
			e.Load.tau.Store(int64(p.cfg.decay))
		}
	}
	return withSlowStart(&p.cfg, eps, &peakEWMAPicker{
		endpoints: eps,
		loads:     loadsOf(eps),
		clk:       eps[0].Load.clk,
		rng:       newRNG(&p.cfg),
		invTau:    1 / float64(p.cfg.decay),
	})
}

type peakEWMAPicker struct {
	endpoints []*Endpoint
	loads     []*Load
	clk       *clock
	rng       *rng
	invTau    float64
}

// probePenalty is the cost of each request in flight to an endpoint with
// no latency sample (Finagle's Penalty, Long.MaxValue >> 16 ns): above any
// cost an endpoint with samples can have, so a new endpoint gets one
// probe at a time, yet finite, so such endpoints still compare by how
// many probes they have in flight.
const probePenalty = float64(math.MaxInt64 >> 16)

func (p *peakEWMAPicker) Pick(info Info) (*Endpoint, error) {
	a, b := pair(p.endpoints, p.rng, &info)
	switch {
	case a < 0:
		return nil, ErrAllSkipped
	case b < 0:
		return p.endpoints[a], nil
	}
	now := p.clk.coarse()
	if p.cost(p.loads[b], now) < p.cost(p.loads[a], now) {
		a = b
	}
	return p.endpoints[a], nil
}

func (p *peakEWMAPicker) cost(l *Load, now int64) float64 {
	inflight := float64(l.inflight.Load())
	bits := l.ewma.Load()
	if bits == 0 {
		return probePenalty * inflight
	}
	return l.decayed(bits, now, p.invTau) * (inflight + 1)
}
