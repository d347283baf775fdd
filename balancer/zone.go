package balancer

import (
	"sync/atomic"
	"time"
)

// zoneRecount is how often a zone-aware picker recounts the healthy
// endpoints of the local zone.
const zoneRecount = time.Second

// ZoneAware returns a policy that prefers the endpoints of the caller's
// zone ([discovery.Endpoint.Zone] equal to zone), balanced among
// themselves by inner, while enough of them are healthy: while at least
// [WithZoneMinHealthy] (default 70%) of the local endpoints are not
// ejected by an enclosing [Outlier], every request stays local. Below
// that, the local zone gets traffic in proportion to its healthy share
// (h/min) and the rest spills over to all endpoints, balanced by inner
// too; and when the caller's Skip (or ejection) rules out every local
// endpoint, the request spills over at once. The healthy count is
// refreshed at most once a second, by one picking goroutine. With an
// empty zone, no local endpoint, or only local endpoints, it is inner
// alone. It reads [WithZoneMinHealthy], [WithSeed].
func ZoneAware(zone string, inner Policy, opts ...Option) Policy {
	if inner == nil {
		inner = RoundRobin()
	}
	return zoneAware{zone: zone, inner: inner, cfg: newConfig(opts)}
}

type zoneAware struct {
	zone  string
	inner Policy
	cfg   config
}

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
	p.recount(p.clk.nanos())
	return p
}

type zonePicker struct {
	localEps   []*Endpoint
	local, all Picker
	rng        *rng
	clk        *clock
	minHealthy float64

	recountAt  atomic.Int64
	localShare atomic.Uint64 // share of requests kept local, in 1/2⁶⁴
}

func (p *zonePicker) recount(now int64) {
	healthy := 0
	for _, e := range p.localEps {
		if u := e.Load.ejectedUntil.Load(); u == 0 || u <= now {
			healthy++
		}
	}
	share := float64(healthy) / float64(len(p.localEps)) / p.minHealthy
	p.localShare.Store(toThreshold(share))
}

func (p *zonePicker) Pick(info Info) (*Endpoint, error) {
	now := p.clk.nanos()
	if at := p.recountAt.Load(); now >= at && p.recountAt.CompareAndSwap(at, now+int64(zoneRecount)) {
		p.recount(now)
	}
	share := p.localShare.Load()
	if share == ^uint64(0) || (share != 0 && p.rng.uint64() < share) {
		e, err := p.local.Pick(info)
		if err != ErrAllSkipped {
			return e, err
		}
	}
	return p.all.Pick(info)
}
