package balancer

import (
	"slices"
	"sync/atomic"
)

// ZoneAware returns a policy that prefers the endpoints of the caller's
// zone ([discovery.Endpoint.Zone] equal to zone), balanced among
// themselves by inner, while enough of them are healthy: while at least
// [WithZoneMinHealthy] (default 70%) of the local endpoints are not
// ejected by an enclosing [Outlier], every request stays local. Below
// that, the local zone gets traffic in proportion to its healthy share
// (h/min) and the rest spills over to all endpoints, balanced by inner
// too; and when the caller's Skip (or ejection) rules out every local
// endpoint, the request spills over at once. The healthy count is
// recounted by one picking goroutine when an ejection starts or ends; with
// nothing ejected a pick reads no clock. With an
// empty zone, no local endpoint, or only local endpoints, it is inner
// alone. It reads [WithZoneMinHealthy], [WithSeed].
func ZoneAware(zone string, inner Policy, opts ...Option) Policy {
	if inner == nil {
		inner = RoundRobin()
	}
	return zoneAware{zone: zone, inner: inner, cfg: newConfig(opts)}
}

// Unwrap returns the policy that picks within the chosen zone.
func (z zoneAware) Unwrap() Policy { return z.inner }

type zoneAware struct {
	zone  string
	inner Policy
	cfg   config
}

func (z zoneAware) readsInFlight() bool { return readsInFlight(z.inner) }

func (z zoneAware) Build(eps []*Endpoint) Picker {
	var local []*Endpoint
	if z.zone != "" {
		for _, e := range eps {
			if e.Zone == z.zone {
				local = append(local, e)
			}
		}
	}
	if len(local) == 0 || len(local) == len(eps) {
		return z.inner.Build(eps)
	}
	p := &zonePicker{
		localEps:   local,
		local:      z.inner.Build(local),
		all:        z.inner.Build(eps),
		rng:        newRNG(&z.cfg),
		clk:        eps[0].Load.clk,
		minHealthy: z.cfg.zoneMinHealthy,
	}
	// An enclosing Outlier attaches its detector before building inner
	// policies; without one, nothing is ever ejected.
	p.det = local[0].Load.det.Load()
	return p
}

type zonePicker struct {
	localEps   []*Endpoint
	local, all Picker
	rng        *rng
	clk        *clock
	minHealthy float64
	det        *detector // nil: no outlier detection

	// The local share computed for one ejection state, valid until the
	// next ejection in it ends. The three words are written by the one
	// goroutine that wins the CAS on countedUntil; a reader that sees
	// them mixed uses a share at most one change old.
	counted      atomic.Pointer[ejectState]
	countedUntil atomic.Int64
	countedShare atomic.Uint64
}

const (
	allLocal = ^uint64(0)
	counting = -1 // countedUntil while one goroutine recounts
)

// localShare returns the share of requests to keep local, in 1/2⁶⁴.
func (p *zonePicker) localShare() uint64 {
	if p.det == nil {
		return allLocal
	}
	st := p.det.state.Load()
	if st == nil || len(st.until) == 0 {
		return allLocal
	}
	now := p.clk.nanos()
	if now >= st.until[len(st.until)-1] {
		return allLocal
	}
	until := p.countedUntil.Load()
	if until == counting || p.counted.Load() == st && now < until {
		return p.countedShare.Load()
	}
	if !p.countedUntil.CompareAndSwap(until, counting) {
		return p.countedShare.Load() // another goroutine is counting
	}
	healthy := 0
	for _, e := range p.localEps {
		if u := e.Load.ejectedUntil.Load(); u == 0 || u <= now {
			healthy++
		}
	}
	share := toThreshold(float64(healthy) / float64(len(p.localEps)) / p.minHealthy)
	// Valid until the next ejection of the state ends.
	next, _ := slices.BinarySearch(st.until, now+1)
	p.countedShare.Store(share)
	p.counted.Store(st)
	p.countedUntil.Store(st.until[next])
	return share
}

func (p *zonePicker) Pick(info Info) (*Endpoint, error) {
	share := p.localShare()
	if share == allLocal || (share != 0 && p.rng.uint64() < share) {
		e, err := p.local.Pick(info)
		if err != ErrAllSkipped {
			return e, err
		}
	}
	return p.all.Pick(info)
}
