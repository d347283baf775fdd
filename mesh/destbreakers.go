package mesh

import (
	"context"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/route"
)

// destBreakers is the circuit breaker set of a route destination whose
// traffic policy has a breaker block (route.TrafficPolicy.Breaker): one
// breaker per endpoint of the destination, configured by the block,
// which its calls go through in place of the client's set. Fields are
// set once, at creation; the set is safe for concurrent use.
type destBreakers struct {
	conf     route.Breaker // the block it was built from
	subset   string
	set      *breaker.Set
	skipOpen func(*balancer.Endpoint) bool // built once
}

// newDestBreakers returns the breaker set of the destination of subset
// (empty: every endpoint) of cl configured by b: the block's settings,
// with the client's OnStateChange and clock ([breaker.Settings.Now],
// else [WithClock]) and set options, recording state changes with cl's
// telemetry.
func (cl *cluster) newDestBreakers(subset string, b route.Breaker) *destBreakers {
	s := breaker.Settings{
		ConsecutiveFailures: b.ConsecutiveFailures,
		FailureRatio:        b.FailureRatio,
		MinRequests:         b.MinRequests,
		Window:              time.Duration(b.Window),
		OpenTimeout:         time.Duration(b.OpenTimeout),
		HalfOpenProbes:      b.HalfOpenProbes,
		Now:                 cl.guard.clock.Now,
	}
	var opts []breaker.SetOption
	if cs := cl.guard.settings; cs != nil {
		s.OnStateChange = cs.OnStateChange
		if cs.Now != nil {
			s.Now = cs.Now
		}
		opts = cl.guard.setOpts
	}
	set := breaker.NewSet(cl.service, s, opts...)
	if t := cl.tel.Telemetry(); t != nil {
		set.Subscribe(func(sc breaker.StateChange) {
			t.DestinationBreakerChanged(context.Background(), sc.Service, subset, sc.Name, sc.From.String(), sc.To.String())
		})
	}
	return &destBreakers{conf: b, subset: subset, set: set, skipOpen: func(e *balancer.Endpoint) bool { return set.Open(e.ID) }}
}

// breakersOf returns the set of breakers a call to an endpoint goes
// through: brk's, a route destination's own, when not nil, else the
// client's for the service (nil without [WithCircuitBreaker]).
func (g *guard) breakersOf(brk *destBreakers) *breaker.Set {
	if brk != nil {
		return brk.set
	}
	return g.breakers
}
