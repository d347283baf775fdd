package balancer

// LeastRequest returns a policy that samples two distinct endpoints at
// random and picks the one with fewer requests in flight (the power of two
// choices), ties going to the first. Skipped endpoints are never sampled.
// It reads [WithSeed].
func LeastRequest(opts ...Option) Policy { return leastRequest{cfg: newConfig(opts)} }

type leastRequest struct{ cfg config }

func (p leastRequest) Build(eps []*Endpoint) Picker {
	return &leastRequestPicker{endpoints: eps, rng: newRNG(&p.cfg)}
}

type leastRequestPicker struct {
	endpoints []*Endpoint
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
	ea, eb := p.endpoints[a], p.endpoints[b]
	if eb.Load.inflight.Load() < ea.Load.inflight.Load() {
		return eb, nil
	}
	return ea, nil
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
	a = r.intn(n)
	b = r.intn(n - 1)
	if b >= a {
		b++
	}
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
// [DefaultDecay]), and the estimate decays towards zero while the endpoint
// is not picked, so a slow endpoint is probed again now and then rather
// than starved forever. An endpoint with no history costs
// [WithDefaultLatency] (default [DefaultLatency]). Skipped endpoints are
// never sampled. It reads [WithSeed], [WithDecay], [WithDefaultLatency];
// its clock is the [Balancer]'s ([WithClock]).
func PeakEWMA(opts ...Option) Policy { return peakEWMA{cfg: newConfig(opts)} }

type peakEWMA struct{ cfg config }

func (p peakEWMA) Build(eps []*Endpoint) Picker {
	for _, e := range eps {
		if e.Load.tau.Load() != int64(p.cfg.decay) {
			e.Load.tau.Store(int64(p.cfg.decay))
		}
	}
	return &peakEWMAPicker{
		endpoints: eps,
		rng:       newRNG(&p.cfg),
		noHistory: float64(p.cfg.defaultLatency),
	}
}

type peakEWMAPicker struct {
	endpoints []*Endpoint
	rng       *rng
	noHistory float64
}

func (p *peakEWMAPicker) Pick(info Info) (*Endpoint, error) {
	a, b := pair(p.endpoints, p.rng, &info)
	switch {
	case a < 0:
		return nil, ErrAllSkipped
	case b < 0:
		return p.endpoints[a], nil
	}
	ea, eb := p.endpoints[a], p.endpoints[b]
	now := ea.Load.clk.nanos()
	if p.cost(eb.Load, now) < p.cost(ea.Load, now) {
		return eb, nil
	}
	return ea, nil
}

func (p *peakEWMAPicker) cost(l *Load, now int64) float64 {
	pending := float64(l.inflight.Load() + 1)
	bits := l.ewma.Load()
	if bits == 0 {
		return p.noHistory * pending
	}
	return l.decayed(bits, now) * pending
}
