package breaker

import (
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/discovery"
)

// Set holds the breakers of one service: one per endpoint, keyed by
// endpoint ID, created and dropped as discovery changes the endpoint set,
// and optionally one for the service as a whole.
//
// Get and Open are called concurrently on every call and never block on
// Update; Update is called from one goroutine at a time. A Set is safe for
// concurrent use. The zero value is not usable; build one with [NewSet].
type Set struct {
	settings Settings
	pub      *publisher
	service  *Breaker

	mu       sync.Mutex // serialises Update
	breakers atomic.Pointer[map[string]*Breaker]
}

// SetOption configures a [Set].
type SetOption interface{ apply(*setConfig) }

type setConfig struct{ serviceBreaker bool }

type setOptionFunc func(*setConfig)

func (f setOptionFunc) apply(c *setConfig) { f(c) }

// WithServiceBreaker adds a breaker for the service as a whole, which
// sees every call's outcome on top of the endpoint's breaker: when it is
// open, every call to the service fails fast.
func WithServiceBreaker() SetOption {
	return setOptionFunc(func(c *setConfig) { c.serviceBreaker = true })
}

// NewSet returns an empty set of breakers for service, each configured
// by s.
func NewSet(service string, s Settings, opts ...SetOption) *Set {
	var cfg setConfig
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	pub := &publisher{service: service}
	if s.OnStateChange != nil {
		pub.add(s.OnStateChange)
	}
	st := &Set{settings: s.withDefaults(), pub: pub}
	if cfg.serviceBreaker {
		st.service = newBreaker(service, st.settings, pub)
	}
	empty := map[string]*Breaker{}
	st.breakers.Store(&empty)
	return st
}

// Subscribe adds fn to the listeners told of every state change of the
// set's breakers (see [Settings.OnStateChange] for when and how fn is
// called) and returns a function that removes it. A nil fn is ignored.
func (s *Set) Subscribe(fn func(StateChange)) (cancel func()) {
	if fn == nil {
		return func() {}
	}
	return s.pub.add(fn)
}

// Update makes the set hold one breaker per endpoint of eps: breakers of
// IDs that remain are kept with their state, new IDs get a closed
// breaker, and breakers of IDs that left are dropped.
func (s *Set) Update(eps []discovery.Endpoint) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.breakers.Load()
	next := make(map[string]*Breaker, len(eps))
	for i := range eps {
		id := eps[i].ID
		b := old[id]
		if b == nil {
			b = newBreaker(id, s.settings, s.pub)
		}
		next[id] = b
	}
	s.breakers.Store(&next)
}

// Get returns the breaker of endpoint id, or nil when the set has none
// (or s is nil).
func (s *Set) Get(id string) *Breaker {
	if s == nil {
		return nil
	}
	return (*s.breakers.Load())[id]
}

// Service returns the service-wide breaker, or nil when the set was built
// without [WithServiceBreaker] (or s is nil).
func (s *Set) Service() *Breaker {
	if s == nil {
		return nil
	}
	return s.service
}

// Open reports whether the breaker of endpoint id is open (see
// [Breaker.Open]); false for an unknown id.
func (s *Set) Open(id string) bool {
	if b := s.Get(id); b != nil {
		return b.Open()
	}
	return false
}

// Len returns the number of endpoint breakers in the set.
func (s *Set) Len() int { return len(*s.breakers.Load()) }
