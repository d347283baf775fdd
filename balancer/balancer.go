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
// to offer.
var ErrNoEndpoints = errors.New("balancer: no endpoints")

// ErrAllSkipped is returned by a pick when every endpoint of the service
// was ruled out by [Info.Skip].
var ErrAllSkipped = errors.New("balancer: every endpoint skipped")

// Info describes the request being balanced. Policies that ignore the
// request (round robin, least request) do not read it.
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
	// circuit breaker, an endpoint a retry already tried. [Balancer.Pick]
	// never returns an endpoint for which Skip reports true.
	Skip func(*Endpoint) bool
}

// Policy builds pickers. Build is called from one goroutine at a time,
// with a non-empty snapshot that neither the policy nor its picker may
// modify; the picker may keep it.
type Policy interface {
	Build(endpoints []*Endpoint) Picker
}

// Picker chooses an endpoint for a request. A picker is immutable once
// built; Pick is called concurrently from many goroutines and must not
// block. It returns one of the endpoints it was built from, or an error.
type Picker interface {
	Pick(info Info) (*Endpoint, error)
}

// Endpoint is an endpoint as pickers see it: the discovery endpoint and
// the load state kept for its ID.
type Endpoint struct {
	discovery.Endpoint
	// Load is the endpoint's load state, shared by every snapshot that
	// holds an endpoint with the same ID.
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

// Outcome is what became of a picked request.
type Outcome struct {
	// Latency is the time from the pick to the end of the request.
	Latency time.Duration
	// Result classifies the outcome.
	Result Result
}

// Done records the outcome of a request that was given this endpoint by
// [Balancer.Pick]. Call it exactly once per pick.
func (e *Endpoint) Done(o Outcome) {
	e.Load.done(o)
}

// Load is the load state of one endpoint. Its methods are safe for
// concurrent use.
type Load struct {
	inflight atomic.Int64
}

// InFlight returns the number of picked requests not yet done.
func (l *Load) InFlight() int64 { return l.inflight.Load() }

func (l *Load) begin() { l.inflight.Add(1) }

func (l *Load) done(o Outcome) { l.inflight.Add(-1) }

// Balancer holds the current picker of one service.
//
// Update is called from one goroutine at a time (a discovery subscriber);
// Pick is called concurrently and never blocks on Update.
type Balancer struct {
	policy Policy
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
// [RoundRobin].
func New(policy Policy) *Balancer {
	if policy == nil {
		policy = RoundRobin()
	}
	return &Balancer{policy: policy, loads: make(map[string]*Load)}
}

// Update replaces the endpoint set. Load state is kept for IDs that remain
// and dropped for IDs that leave. eps is not retained.
func (b *Balancer) Update(eps []discovery.Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	loads := make(map[string]*Load, len(eps))
	snap := &snapshot{endpoints: make([]*Endpoint, len(eps))}
	for i := range eps {
		l := b.loads[eps[i].ID]
		if l == nil {
			l = &Load{}
		}
		loads[eps[i].ID] = l
		snap.endpoints[i] = &Endpoint{Endpoint: eps[i], Load: l}
	}
	b.loads = loads
	if len(snap.endpoints) > 0 {
		snap.picker = b.policy.Build(snap.endpoints)
	}
	b.picker.Store(snap)
}

// Endpoints returns the current snapshot. It must not be modified.
func (b *Balancer) Endpoints() []*Endpoint {
	if s := b.picker.Load(); s != nil {
		return s.endpoints
	}
	return nil
}

// Pick chooses an endpoint for the request described by info. It returns
// [ErrNoEndpoints] at once when the set is empty. The
// caller must finish the pick with [Endpoint.Done].
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
		if e = s.next(info, e); e == nil {
			return nil, ErrAllSkipped
		}
	}
	e.Load.begin()
	return e, nil
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
