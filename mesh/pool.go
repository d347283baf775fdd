package mesh

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/semaphore"

	"github.com/weftmesh/weft/route"
)

// ErrOverflow is returned (wrapped) by a call that its destination's
// connection pool refused ([route.ConnectionPool], such as a Consul
// caller's upstream Limits): the destination had its most calls in
// flight, or its most HTTP calls waiting for a connection. The call
// failed fast, before an endpoint was picked, so no endpoint's breaker,
// balancer or outlier detection counts it, and it is not retried.
// gRPC callers get it with code Unavailable, as Envoy answers an
// overflow with 503; telemetry records it as rejected for
// concurrency_limit.
var ErrOverflow = errors.New("mesh: destination's connection pool is full")

// pools are the connection-pool limits of a cluster's destinations,
// built on first use; a limit lives on across route tables while its
// settings stay the same, so calls in flight keep counting.
type pools struct {
	mu sync.Mutex
	m  map[string]*poolLimit // by subset; "" for every endpoint
}

// pool returns the limit of dest, nil when its policy bounds nothing.
func (cl *cluster) pool(dest *route.Destination) *poolLimit {
	cp := dest.Policy.ConnectionPool
	if cp == nil || (cp.MaxConnections <= 0 && cp.MaxRequests <= 0) {
		return nil
	}
	cl.pools.mu.Lock()
	defer cl.pools.mu.Unlock()
	if p := cl.pools.m[dest.Subset]; p != nil && p.set == *cp {
		return p
	}
	p := newPoolLimit(dest.String(), *cp)
	if cl.pools.m == nil {
		cl.pools.m = make(map[string]*poolLimit)
	}
	cl.pools.m[dest.Subset] = p
	return p
}

// poolLimit applies a destination's connection pool: MaxRequests calls
// in flight, MaxConnections HTTP calls in flight (each holds an HTTP/1.1
// connection of its own) with up to MaxPendingRequests waiting for one.
// It is safe for concurrent use; admitting a call does not allocate,
// and takes a lock (the semaphore's) only for MaxConnections.
type poolLimit struct {
	name    string
	set     route.ConnectionPool
	conns   *semaphore.Weighted // nil: no MaxConnections
	calls   atomic.Int64        // in flight
	pending atomic.Int64        // HTTP calls waiting for a connection
	// releaseCall and releaseConn end an admitted call that holds no
	// connection of the pool, or one; built once, so admitting a call
	// does not allocate. Nil when there is nothing to release.
	releaseCall, releaseConn func()
}

func newPoolLimit(name string, set route.ConnectionPool) *poolLimit {
	p := &poolLimit{name: name, set: set}
	if set.MaxRequests > 0 {
		p.releaseCall = func() { p.calls.Add(-1) }
	}
	if set.MaxConnections > 0 {
		p.conns = semaphore.NewWeighted(int64(set.MaxConnections))
		p.releaseConn = func() {
			p.conns.Release(1)
			release(p.releaseCall)
		}
	}
	return p
}

// acquire admits a call, or refuses it with an error wrapping
// [ErrOverflow] (or, for a call that waited for a connection, ctx's
// error). ownConn says the call holds a connection of its own (HTTP).
// The release function it returns must be called once, when the call is
// over; it is nil when there is nothing to release (a nil p admits every
// call).
func (p *poolLimit) acquire(ctx context.Context, ownConn bool) (func(), error) {
	if p == nil {
		return nil, nil
	}
	conn := ownConn && p.conns != nil
	if conn && !p.conns.TryAcquire(1) {
		if p.pending.Add(1) > int64(p.set.MaxPendingRequests) {
			p.pending.Add(-1)
			return nil, fmt.Errorf("%w: %s: %d HTTP calls in flight and %d waiting for a connection (maxConnections, maxPendingRequests)",
				ErrOverflow, p.name, p.set.MaxConnections, p.set.MaxPendingRequests)
		}
		err := p.conns.Acquire(ctx, 1)
		p.pending.Add(-1)
		if err != nil {
			return nil, fmt.Errorf("mesh: %s: waiting for a connection: %w", p.name, err)
		}
	}
	if p.set.MaxRequests > 0 && p.calls.Add(1) > int64(p.set.MaxRequests) {
		p.calls.Add(-1)
		if conn {
			p.conns.Release(1)
		}
		return nil, fmt.Errorf("%w: %s: %d calls in flight (maxRequests)", ErrOverflow, p.name, p.set.MaxRequests)
	}
	if conn {
		return p.releaseConn, nil
	}
	return p.releaseCall, nil
}

// admit is the admission of every call, unary or stream, HTTP or gRPC:
// the client's rate limit and retry budget for the service, then the
// connection pool of the call's destination. The function it returns,
// nil when no pool applies, ends the call's hold on the pool.
func (cl *cluster) admit(ctx context.Context, spec *callSpec) (func(), error) {
	if err := cl.guard.admit(ctx); err != nil {
		return nil, err
	}
	return spec.pool.acquire(ctx, spec.ownConn)
}

// both returns a function that calls a then b, either of which may be
// nil; nil when both are.
func both(a, b func()) func() {
	switch {
	case b == nil:
		return a
	case a == nil:
		return b
	}
	return func() { a(); b() }
}
