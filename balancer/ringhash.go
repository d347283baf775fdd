package balancer

import (
	"math"
	"slices"
	"sync/atomic"
)

// RingHash returns a policy that hashes the request key (see [KeyFunc],
// [HeaderKey], [CookieKey]) onto a ring of points, each endpoint owning
// points in proportion to its discovery weight (0 counts as 1): the key
// goes to the endpoint of the first point at or after its hash. Adding
// or removing one of N endpoints moves about 1/N of the keys. The ring has
// at least [WithRingSize] points (default [DefaultRingSize]) and at
// least one per endpoint. To keep key movement near 1/N, a rebuild keeps
// the previous ring's density (points per unit of weight) while the ring
// stays between the minimum size and 8× it; only when the total weight
// changes beyond that is the density reset, and more keys move once. A skipped endpoint's keys go to the next point
// of another endpoint; requests without a key go to a random endpoint. A
// nil key function gives every request no key. It reads [WithRingSize],
// [WithSeed].
func RingHash(key KeyFunc, opts ...Option) Policy {
	return &ringHash{key: key, cfg: newConfig(opts)}
}

type ringHash struct {
	key     KeyFunc
	cfg     config
	density atomic.Uint64 // float64 bits: points per unit of weight
}

func (*ringHash) readsInFlight() bool { return false }

func (p *ringHash) Build(eps []*Endpoint) Picker {
	var sum float64
	for _, e := range eps {
		sum += float64(e.EffectiveWeight())
	}
	minSize := float64(p.cfg.ringSize)
	density := math.Float64frombits(p.density.Load())
	if size := density * sum; size < minSize || size > 8*minSize {
		density = minSize / sum
		p.density.Store(math.Float64bits(density))
	}
	counts := make([]int, len(eps))
	total := 0
	for i, e := range eps {
		counts[i] = max(1, int(math.Ceil(density*float64(e.EffectiveWeight()))))
		total += counts[i]
	}
	type point struct {
		hash uint64
		idx  int32
	}
	points := make([]point, 0, total)
	for i, e := range eps {
		h := hashKey(e.ID)
		for j := range counts[i] {
			points = append(points, point{mix64(h + uint64(j)*0x9e3779b97f4a7c15), int32(i)})
		}
	}
	slices.SortFunc(points, func(a, b point) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return int(a.idx) - int(b.idx)
	})
	rp := &ringHashPicker{
		endpoints: eps,
		key:       p.key,
		rng:       newRNG(&p.cfg),
		hashes:    make([]uint64, len(points)),
		owners:    make([]int32, len(points)),
	}
	for i, pt := range points {
		rp.hashes[i], rp.owners[i] = pt.hash, pt.idx
	}
	return rp
}

type ringHashPicker struct {
	endpoints []*Endpoint
	key       KeyFunc
	rng       *rng
	hashes    []uint64 // sorted
	owners    []int32  // endpoint index of each point
}

func (p *ringHashPicker) Pick(info Info) (*Endpoint, error) {
	var k string
	if p.key != nil {
		k = p.key(info)
	}
	if k == "" {
		if i := draw(p.endpoints, p.rng, &info, -1); i >= 0 {
			return p.endpoints[i], nil
		}
		return nil, ErrAllSkipped
	}
	h := hashKey(k)
	// The first point with hash ≥ h, wrapping to 0.
	lo, hi := 0, len(p.hashes)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if p.hashes[mid] < h {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	n := len(p.owners)
	for k := range n {
		e := p.endpoints[p.owners[(lo+k)%n]]
		if !info.skipped(e) {
			return e, nil
		}
	}
	return nil, ErrAllSkipped
}
