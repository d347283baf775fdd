package mesh

import (
	"errors"
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/route"
)

// Failover (route.Destination.Failover): a call whose destination has no
// endpoint to give — no healthy instance, or every one ejected or behind
// an open breaker — goes to the first of the destination's failover
// targets that has one. The decision is the engine's, at its one pick
// site ([cluster.pick]), for HTTP and gRPC alike; what differs between
// the protocols is how a failover target is reached, which failTo of the
// call's spec resolves: HTTP sends over the target cluster's transport,
// gRPC over the connection's SubConns to the target's endpoints.

// failoverTarget is a failover destination resolved for one call: the
// cluster whose endpoints it balances over, its balancer, and what rules
// endpoints out for the call's protocol.
type failoverTarget struct {
	cl   *cluster
	bal  *balancer.Balancer
	skip func(*balancer.Endpoint) bool
	grpc *grpcTarget   // gRPC: the connection's target of cl; nil for HTTP
	brk  *destBreakers // the destination's own breakers; nil: the cluster's
}

// pickFailover picks from the call's failover targets in order: the first
// that has an endpoint to give. Every target but the last refuses its
// ejected endpoints (there is somewhere else to go); the last may pick
// one under its panic threshold. It returns the errors of targets that
// could not be resolved when no target gave an endpoint.
func pickFailover(info balancer.Info, spec callSpec, tried, refused []*balancer.Endpoint) (*balancer.Endpoint, *failoverTarget, error) {
	var errs []error
	for i, d := range spec.failover {
		ft, err := spec.failTo(d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		info.NoPanic = i < len(spec.failover)-1
		if ep, err := pickFrom(ft.bal, info, ft.skip, tried, refused); err == nil {
			return ep, ft, nil
		}
	}
	return nil, nil, errors.Join(errs...)
}

// failoverSpec sets spec's failover to dest's targets, resolved by
// failTo; spec is left as it is for a destination without any.
func failoverSpec(spec *callSpec, dest *route.Destination, failTo func(*route.Destination) (*failoverTarget, error)) {
	if len(dest.Failover) == 0 {
		return
	}
	spec.failover, spec.failTo = dest.Failover, failTo
}

// warmedFailovers records the route destinations whose failover targets
// were resolved ([warmFailover]). Each table brings destinations of its
// own, so it forgets them all once it holds maxWarmed: resolving again
// is harmless. The zero value is ready; safe for concurrent use.
type warmedFailovers struct {
	m sync.Map // *route.Destination → struct{}
	n atomic.Int64
}

const maxWarmed = 1024

// warmFailover resolves the failover targets of dest once, so their
// clusters watch discovery — and, for gRPC, the connection holds
// connections to their endpoints — before a call needs them. Resolution
// errors are left for the pick to report.
func warmFailover(w *warmedFailovers, dest *route.Destination, failTo func(*route.Destination) (*failoverTarget, error)) {
	if len(dest.Failover) == 0 {
		return
	}
	if _, done := w.m.Load(dest); done {
		return
	}
	if w.n.Add(1) > maxWarmed {
		w.m.Clear()
		w.n.Store(1)
	}
	w.m.Store(dest, struct{}{})
	for _, d := range dest.Failover {
		_, _ = failTo(d)
	}
}

// httpFailover resolves failover destination d for an HTTP call: the
// cluster of its service or target, its balancer, open breakers skipped.
func (c *Client) httpFailover(d *route.Destination) (*failoverTarget, error) {
	if d.External != nil {
		return nil, errExternalFailover
	}
	cl, err := c.destCluster(d)
	if err != nil {
		return nil, err
	}
	bal, brk := cl.destination(d)
	ft := &failoverTarget{cl: cl, bal: bal, skip: cl.guard.skipOpen, brk: brk}
	if brk != nil {
		ft.skip = brk.skipOpen
	}
	return ft, nil
}

// grpcFailover resolves failover destination d for a gRPC call on gc:
// the cluster's target on the connection, whose endpoints without a
// ready connection are skipped.
func (gc *grpcConn) grpcFailover(d *route.Destination) (*failoverTarget, error) {
	if d.External != nil {
		return nil, errExternalFailover
	}
	cl, err := gc.client.destCluster(d)
	if err != nil {
		return nil, err
	}
	t := gc.self
	if cl != gc.cl {
		t = gc.include(cl)
	}
	bal, brk := cl.destination(d)
	return &failoverTarget{cl: cl, bal: bal, skip: t.skipFor(brk), grpc: t, brk: brk}, nil
}

// errExternalFailover: route validation refuses external failover
// targets; this guards the engine all the same.
var errExternalFailover = errors.New("mesh: an external service cannot be a failover target")

// awaited appends to cands, and returns, the balancers (with the
// connection's key prefix of their endpoints) a gRPC call on gc may go
// to: the call's own, then its failover targets'.
func (gc *grpcConn) awaited(spec *callSpec, prefix string, cands []awaitCand) []awaitCand {
	cands = append(cands, awaitCand{bal: spec.balancer, prefix: prefix})
	for _, d := range spec.failover {
		if ft, err := spec.failTo(d); err == nil {
			cands = append(cands, awaitCand{bal: ft.bal, prefix: ft.grpc.prefix})
		}
	}
	return cands
}
