package balancer

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// RoundRobin returns a policy that takes the endpoints in turn. Each picker
// starts at a random offset, so a fleet of clients built at the same time
// does not send its first requests to the same endpoint. A pick is one
// atomic add; a skipped endpoint's turn goes to the next turn, so its
// share spreads evenly over the others. It reads [WithSeed] and
// [WithSlowStart].
func RoundRobin(opts ...Option) Policy { return roundRobin{cfg: newConfig(opts)} }

type roundRobin struct{ cfg config }

func (roundRobin) readsInFlight() bool { return false }

func (p roundRobin) Build(eps []*Endpoint) Picker {
	rr := &roundRobinPicker{endpoints: eps, n: newDivider(len(eps))}
	rr.next.Store(uint32(newRNG(&p.cfg).intn(len(eps))))
	return withSlowStart(&p.cfg, eps, rr)
}

type roundRobinPicker struct {
	endpoints []*Endpoint
	n         divider
	next      atomic.Uint32
}

func (p *roundRobinPicker) Pick(info Info) (*Endpoint, error) {
	e := p.endpoints[p.n.mod(p.next.Add(1))]
	if info.Skip == nil || !info.Skip(e) {
		return e, nil
	}
	// Take further turns rather than the skipped endpoint's neighbour,
	// so the skipped endpoint's share spreads evenly over the others.
	for range len(p.endpoints) {
		if e := p.endpoints[p.n.mod(p.next.Add(1))]; !info.Skip(e) {
			return e, nil
		}
	}
	if i := scan(p.endpoints, int(p.n.mod(p.next.Load())), &info); i >= 0 {
		return p.endpoints[i], nil
	}
	return nil, ErrAllSkipped
}

// scan returns the index of the first endpoint from start on, wrapping
// around, that info does not skip, or -1.
func scan(eps []*Endpoint, start int, info *Info) int {
	n := len(eps)
	for k := range n {
		i := (start + k) % n
		if !info.skipped(eps[i]) {
			return i
		}
	}
	return -1
}

// WeightedRoundRobin returns a policy that takes the endpoints in turn in
// proportion to their discovery weights ([discovery.Endpoint.Weight], 0
// counts as 1), spreading each endpoint's turns evenly over the cycle
// rather than in bursts. It is grpc-go's static stride scheduler: a pick
// advances one atomic counter; endpoint i takes position (generation g,
// index i) when (w_i·g + i·65535/2) mod 65535 < w_i, with weights scaled
// so the largest is 65535. A pick costs on average max(w)/mean(w)
// counter steps. With equal weights it is round robin. It reads
// [WithSeed] for its random start, and [WithSlowStart].
func WeightedRoundRobin(opts ...Option) Policy {
	return weightedRoundRobin{cfg: newConfig(opts)}
}

type weightedRoundRobin struct{ cfg config }

func (weightedRoundRobin) readsInFlight() bool { return false }

const strideMax = math.MaxUint16

func (p weightedRoundRobin) Build(eps []*Endpoint) Picker {
	var maxW uint32
	equal := true
	for _, e := range eps {
		w := e.EffectiveWeight()
		if maxW != 0 && w != maxW {
			equal = false
		}
		maxW = max(maxW, w)
	}
	if equal {
		return roundRobin(p).Build(eps)
	}
	sp := &strideRoundRobinPicker{endpoints: eps, n: newDivider(len(eps)), weights: make([]uint64, len(eps))}
	for i, e := range eps {
		w := uint64(math.Round(float64(e.EffectiveWeight()) * strideMax / float64(maxW)))
		sp.weights[i] = max(w, 1)
	}
	sp.next.Store(uint32(newRNG(&p.cfg).intn(len(eps))))
	return withSlowStart(&p.cfg, eps, sp)
}

type strideRoundRobinPicker struct {
	endpoints []*Endpoint
	n         divider
	weights   []uint64 // scaled to 1..strideMax
	next      atomic.Uint32
}

func (p *strideRoundRobinPicker) Pick(info Info) (*Endpoint, error) {
	// The largest weight accepts every position of its index, so a loop
	// of 2n steps always meets it at least once; skipped endpoints aside.
	for range 2 * len(p.endpoints) {
		seq := p.next.Add(1)
		i := uint64(p.n.mod(seq))
		w := p.weights[i]
		if (w*uint64(p.n.div(seq))+i*(strideMax/2))%strideMax < w {
			if e := p.endpoints[i]; !info.skipped(e) {
				return e, nil
			}
		}
	}
	if i := scan(p.endpoints, int(p.n.mod(p.next.Load())), &info); i >= 0 {
		return p.endpoints[i], nil
	}
	return nil, ErrAllSkipped
}

// divider divides 32-bit counters by a fixed n without a division
// instruction (Lemire, Kaser, Kurz: "Faster remainder by direct
// computation", 2019). The counters wrap at 2³²: once per 4 billion picks
// the rotation skips ahead, which no share notices.
type divider struct {
	n, m uint64
}

func newDivider(n int) divider {
	return divider{n: uint64(n), m: ^uint64(0)/uint64(n) + 1}
}

func (d divider) mod(x uint32) uint32 {
	hi, _ := bits.Mul64(d.m*uint64(x), d.n)
	return uint32(hi)
}

// div is exact for n ≥ 2.
func (d divider) div(x uint32) uint32 {
	hi, _ := bits.Mul64(d.m, uint64(x))
	return uint32(hi)
}
