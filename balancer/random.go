package balancer

// Random returns a policy that picks an endpoint uniformly at random,
// ignoring weights. A skipped endpoint is replaced by another random draw
// (a few times), then by the next endpoint not skipped. It reads
// [WithSeed] and [WithSlowStart].
func Random(opts ...Option) Policy { return random{cfg: newConfig(opts)} }

type random struct{ cfg config }

func (random) readsInFlight() bool { return false }

func (p random) Build(eps []*Endpoint) Picker {
	return withSlowStart(&p.cfg, eps, &randomPicker{endpoints: eps, rng: newRNG(&p.cfg)})
}

type randomPicker struct {
	endpoints []*Endpoint
	rng       *rng
}

func (p *randomPicker) Pick(info Info) (*Endpoint, error) {
	if i := draw(p.endpoints, p.rng, &info, -1); i >= 0 {
		return p.endpoints[i], nil
	}
	return nil, ErrAllSkipped
}

// draw returns a random index of eps that info does not skip and that is
// not other, or -1: a few random draws, then a scan from a random start.
// With other ≥ 0 and no other choice, it returns -1.
func draw(eps []*Endpoint, r *rng, info *Info, other int) int {
	n := len(eps)
	for range 3 {
		i := r.intn(n)
		if i != other && !info.skipped(eps[i]) {
			return i
		}
	}
	start := r.intn(n)
	for k := range n {
		i := (start + k) % n
		if i != other && !info.skipped(eps[i]) {
			return i
		}
	}
	return -1
}

// WeightedRandom returns a policy that picks an endpoint at random with
// probability proportional to its discovery weight (0 counts as 1), in
// constant time through Vose's alias table. A skipped endpoint is
// replaced by another draw (a few times), then by the next endpoint not
// skipped. It reads [WithSeed] and [WithSlowStart].
func WeightedRandom(opts ...Option) Policy { return weightedRandom{cfg: newConfig(opts)} }

type weightedRandom struct{ cfg config }

func (weightedRandom) readsInFlight() bool { return false }

func (p weightedRandom) Build(eps []*Endpoint) Picker {
	n := len(eps)
	wp := &weightedRandomPicker{
		endpoints: eps,
		rng:       newRNG(&p.cfg),
		prob:      make([]uint64, n),
		alias:     make([]int32, n),
	}
	var sum float64
	for _, e := range eps {
		sum += float64(e.EffectiveWeight())
	}
	scaled := make([]float64, n)
	small := make([]int32, 0, n)
	large := make([]int32, 0, n)
	for i, e := range eps {
		scaled[i] = float64(e.EffectiveWeight()) * float64(n) / sum
		if scaled[i] < 1 {
			small = append(small, int32(i))
		} else {
			large = append(large, int32(i))
		}
	}
	for len(small) > 0 && len(large) > 0 {
		s, l := small[len(small)-1], large[len(large)-1]
		small = small[:len(small)-1]
		wp.prob[s] = toThreshold(scaled[s])
		wp.alias[s] = l
		scaled[l] = scaled[l] + scaled[s] - 1
		if scaled[l] < 1 {
			large = large[:len(large)-1]
			small = append(small, l)
		}
	}
	for _, i := range large {
		wp.prob[i] = ^uint64(0)
		wp.alias[i] = i
	}
	for _, i := range small { // rounding leftovers
		wp.prob[i] = ^uint64(0)
		wp.alias[i] = i
	}
	return withSlowStart(&p.cfg, eps, wp)
}

// toThreshold maps a probability in [0, 1) to a uint64 threshold.
func toThreshold(p float64) uint64 {
	if p >= 1 {
		return ^uint64(0)
	}
	return uint64(p * (1 << 63) * 2)
}

type weightedRandomPicker struct {
	endpoints []*Endpoint
	rng       *rng
	prob      []uint64 // keep column i when a uniform uint64 is below prob[i]
	alias     []int32
}

func (p *weightedRandomPicker) Pick(info Info) (*Endpoint, error) {
	for range 4 {
		i := p.rng.intn(len(p.endpoints))
		if p.rng.uint64() >= p.prob[i] {
			i = int(p.alias[i])
		}
		if e := p.endpoints[i]; !info.skipped(e) {
			return e, nil
		}
	}
	if i := scan(p.endpoints, p.rng.intn(len(p.endpoints)), &info); i >= 0 {
		return p.endpoints[i], nil
	}
	return nil, ErrAllSkipped
}
