package balancer

// Maglev returns a policy that hashes the request key (see [KeyFunc])
// into a Maglev lookup table (Eisenbud et al., NSDI 2016) of
// [WithTableSize] entries (a prime, default [DefaultTableSize]), filled
// by the endpoints' permutations in proportion to their discovery weights
// (0 counts as 1), as Envoy does. A pick is a hash and one table read;
// adding or removing one of N endpoints moves a little more than 1/N of
// the keys. A skipped endpoint's keys go to the next table entry of
// another endpoint; requests without a key go to a random endpoint. It
// reads [WithTableSize], [WithSeed].
func Maglev(key KeyFunc, opts ...Option) Policy {
	return maglev{key: key, cfg: newConfig(opts)}
}

type maglev struct {
	key KeyFunc
	cfg config
}

func (maglev) readsInFlight() bool { return false }

func (p maglev) Build(eps []*Endpoint) Picker {
	m := p.cfg.tableSize
	if m < len(eps) {
		m = nextPrime(len(eps))
	}
	n := len(eps)
	// Endpoint i's permutation is offset_i, offset_i + skip_i, ... mod m;
	// pos holds where it stands, so the fill needs no division.
	pos := make([]uint64, n)
	skip := make([]uint64, n)
	weight := make([]float64, n)
	target := make([]float64, n)
	var maxW float64
	mm := uint64(m)
	for i, e := range eps {
		h := hashKey(e.ID)
		pos[i] = h % mm
		skip[i] = mix64(h^0x5851f42d4c957f2d)%(mm-1) + 1
		weight[i] = float64(e.EffectiveWeight())
		maxW = max(maxW, weight[i])
	}
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	advance := func(i int) {
		if pos[i] += skip[i]; pos[i] >= mm {
			pos[i] -= mm
		}
	}
	filled := 0
	for iteration := 0.0; filled < m; iteration++ {
		for i := 0; i < n && filled < m; i++ {
			// An endpoint of the largest weight takes a turn every round,
			// one of a third of it every third round.
			if iteration*weight[i] < target[i] {
				continue
			}
			target[i] += maxW
			for table[pos[i]] >= 0 {
				advance(i)
			}
			table[pos[i]] = int32(i)
			advance(i)
			filled++
		}
	}
	return &maglevPicker{endpoints: eps, key: p.key, rng: newRNG(&p.cfg), table: table}
}

type maglevPicker struct {
	endpoints []*Endpoint
	key       KeyFunc
	rng       *rng
	table     []int32
}

func (p *maglevPicker) Pick(info Info) (*Endpoint, error) {
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
	m := uint64(len(p.table))
	at := hashKey(k) % m
	e := p.endpoints[p.table[at]]
	if !info.skipped(e) {
		return e, nil
	}
	// Walk the table: its entries are a pseudo-random sequence of
	// endpoints, so a skipped endpoint's keys spread over the others.
	for k := uint64(1); k < m; k++ {
		if e := p.endpoints[p.table[(at+k)%m]]; !info.skipped(e) {
			return e, nil
		}
	}
	return nil, ErrAllSkipped
}
