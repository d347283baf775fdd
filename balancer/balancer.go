package balancer

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/discovery"
)

// ErrNoEndpoints is returned by a pick when the service has no endpoint
// to offer. Errors of pickers that find no endpoint to choose from (an
// empty subset) wrap it.
var ErrNoEndpoints = errors.New("balancer: no endpoints")

// ErrAllSkipped is returned by a pick when every endpoint of the service
// was ruled out by [Info.Skip] (or, under [Outlier], by Skip and ejection).
var ErrAllSkipped = errors.New("balancer: every endpoint skipped")

// Info describes the request being balanced. Policies that ignore the
// request (round robin, least request) do not read it. The zero Info is a
// request with no hash key and nothing skipped.
type Info struct {
	// Context is the request's context.
	Context context.Context
	// HTTP is the request, for HTTP calls; nil for gRPC.
	HTTP *http.Request
	// Method is the gRPC full method name ("/pkg.Service/Method"), for gRPC.
	Method string
	// Metadata is the outgoing gRPC metadata, for gRPC calls.
	Metadata metadata.MD
	// Skip, when not nil, rules endpoints out for this request: an open
	// circuit breaker, an endpoint a retry already tried. No picker of this
	// package returns an endpoint for which Skip reports true, and
	// [Balancer.Pick] checks it again for pickers written elsewhere. Skip is
	// called from the picking goroutine only, possibly several times, and
	// must not be retained.
	Skip func(*Endpoint) bool
	// NoPanic, when true, keeps an outlier-detecting policy ([Outlier])
	// from picking an ejected endpoint even when so many are ejected that
	// it would otherwise balance over all of them (its panic threshold):
	// with every endpoint ejected the pick fails with [ErrAllSkipped].
	// The caller has somewhere else to send the request (a failover).
	NoPanic bool
}

// skipped reports whether info rules e out.
func (info *Info) skipped(e *Endpoint) bool {
	return info.Skip != nil && info.Skip(e)
}

// Policy builds pickers.
//
// Build is called from one goroutine at a time (the [Balancer]'s updater),
// with a non-empty snapshot that neither the policy nor its picker may
// modify; the picker may keep it. Build may keep state across calls (the
// [Outlier] wrapper does), so a Policy value serves one [Balancer]; build
// one per service.
type Policy interface {
	Build(endpoints []*Endpoint) Picker
}

// Picker chooses an endpoint for a request. A picker is immutable once
// built; Pick is called concurrently from many goroutines and must not
// block. It returns one of the endpoints it was built from, never one that
// [Info.Skip] rules out, or an error: [ErrAllSkipped] when Skip rules out
// every endpoint.
type Picker interface {
	Pick(info Info) (*Endpoint, error)
}

// Endpoint is an endpoint as pickers see it: the discovery endpoint and
// the load state kept for its ID. Endpoints are made by [Balancer.Update]
// and not modified afterwards, so they are safe to share between
// goroutines; a zero Endpoint has no Load and cannot be picked.
type Endpoint struct {
	discovery.Endpoint
	// Load is the endpoint's load state, shared by every snapshot that
	// holds an endpoint with the same ID. It is never nil in endpoints
	// handed out by a [Balancer].
	Load *Load
}

// Result classifies the outcome of a request to an endpoint.
type Result uint8

// The results a request can have.
const (
	// Success: the endpoint answered (an application error is still an answer).
	Success Result = iota
	// Failure: the endpoint failed (transport error, 5xx, Unavailable...).
	Failure
	// Dropped: the outcome says nothing about the endpoint (the caller
	// gave up first); only the in-flight count is updated.
	Dropped
)

// Outcome is what became of a picked request. The zero Outcome is a
// success that took no time.
type Outcome struct {
	// Latency is the time from the pick to the end of the request.
	Latency time.Duration
	// Result classifies the outcome.
	Result Result
}

// Done records the outcome of a request that was given this endpoint by
// [Balancer.Pick]: it lowers the in-flight count and, unless the result
// is [Dropped], feeds the latency and the result into the endpoint's load
// state (latency EWMA, failure counts, outlier detection). Call it exactly
// once per pick. It does not block on other picks or updates.
func (e *Endpoint) Done(o Outcome) {
	e.Load.done(o)
}

// Balancer holds the current picker of one service.
//
// The zero value is not usable; call [New]. Update is called from one
// goroutine at a time (a discovery subscriber); Pick, Endpoints and
// [Endpoint.Done] are called concurrently and never block on Update.
type Balancer struct {
	policy Policy
	clock  *clock
	count  bool // count requests in flight: the policy reads them
	picker atomic.Pointer[snapshot]

	mu    sync.Mutex // serialises Update
	loads map[string]*Load
}

type snapshot struct {
	endpoints []*Endpoint
	picker    Picker
}

// New returns a Balancer that builds its pickers with policy. It has no
// endpoints until the first [Balancer.Update]. A nil policy means
// [RoundRobin]. Of the options, New reads [WithClock]; the others
// configure policies and are ignored here.
func New(policy Policy, opts ...Option) *Balancer {
	if policy == nil {
		policy = RoundRobin()
	}
	cfg := newConfig(opts)
	return &Balancer{
		policy: policy,
		count:  readsInFlight(policy),
		clock:  newClock(cfg.now, cfg.onEject),
		loads:  make(map[string]*Load),
	}
}

// Update replaces the endpoint set and publishes a picker built from it.
// Load state is kept for IDs that remain and dropped for IDs that leave;
// picks that start after Update returns never see a removed endpoint. eps
// is not retained.
func (b *Balancer) Update(eps []discovery.Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	snap := &snapshot{endpoints: make([]*Endpoint, len(eps))}
	vals := make([]Endpoint, len(eps))
	if prev := b.picker.Load(); prev != nil && sameIDs(prev.endpoints, eps) {
		// The common push: the same instances, some attribute changed.
		// Their loads are taken in order, without the map.
		for i := range eps {
			vals[i] = Endpoint{Endpoint: eps[i], Load: prev.endpoints[i].Load}
			snap.endpoints[i] = &vals[i]
		}
		b.publish(snap)
		return
	}
	loads := make(map[string]*Load, len(eps))
	var fresh []Load
	var joined int64 // endpoints of the first set start warm
	if len(b.loads) > 0 {
		joined = max(b.clock.nanos(), 1)
	}
	for i := range eps {
		l := b.loads[eps[i].ID]
		if l == nil {
			l = loads[eps[i].ID] // a duplicate ID shares its load
		}
		if l == nil {
			if len(fresh) == 0 {
				fresh = make([]Load, len(eps)-i)
			}
			l, fresh = &fresh[0], fresh[1:]
			l.clk, l.counted, l.joined = b.clock, b.count, joined
		}
		loads[eps[i].ID] = l
		vals[i] = Endpoint{Endpoint: eps[i], Load: l}
		snap.endpoints[i] = &vals[i]
	}
	b.loads = loads
	b.publish(snap)
}

// publish builds the picker of snap and makes it current. b.mu is held.
func (b *Balancer) publish(snap *snapshot) {
	if len(snap.endpoints) > 0 {
		snap.picker = b.policy.Build(snap.endpoints)
	}
	b.picker.Store(snap)
}

// sameIDs reports whether eps has the IDs of prev, in the same order.
func sameIDs(prev []*Endpoint, eps []discovery.Endpoint) bool {
	if len(prev) != len(eps) || len(eps) == 0 {
		return false
	}
	for i := range eps {
		if prev[i].ID != eps[i].ID {
			return false
		}
	}
	return true
}

// Endpoints returns the current snapshot. It must not be modified.
func (b *Balancer) Endpoints() []*Endpoint {
	if s := b.picker.Load(); s != nil {
		return s.endpoints
	}
	return nil
}

// Pick chooses an endpoint for the request described by info. It returns
// [ErrNoEndpoints] at once when the set is empty and [ErrAllSkipped] when
// info.Skip rules out every endpoint. It takes no lock and allocates
// nothing with the policies of this package. The caller must finish the
// pick with [Endpoint.Done].
func (b *Balancer) Pick(info Info) (*Endpoint, error) {
	s := b.picker.Load()
	if s == nil || s.picker == nil {
		return nil, ErrNoEndpoints
	}
	e, err := s.picker.Pick(info)
	if err != nil {
		return nil, err
	}
	if info.Skip != nil && info.Skip(e) {
		// Only pickers written elsewhere get here.
		if e = s.next(info, e); e == nil {
			return nil, ErrAllSkipped
		}
	}
	e.Load.begin()
	return e, nil
}

// inFlightReader is implemented by the policies of this package, which
// say whether they (or the policies they wrap) read [Load.InFlight].
// Policies from elsewhere are assumed to read it.
type inFlightReader interface {
	readsInFlight() bool
}

func readsInFlight(p Policy) bool {
	if r, ok := p.(inFlightReader); ok {
		return r.readsInFlight()
	}
	return true
}

// next returns the first endpoint after skipped, in snapshot order, that
// info.Skip does not rule out, or nil.
func (s *snapshot) next(info Info, skipped *Endpoint) *Endpoint {
	start := 0
	for i, e := range s.endpoints {
		if e == skipped {
			start = i
			break
		}
	}
	n := len(s.endpoints)
	for i := 1; i < n; i++ {
		if e := s.endpoints[(start+i)%n]; !info.Skip(e) {
			return e
		}
	}
	return nil
}
