package balancer

import (
	"fmt"

	"github.com/weftmesh/weft/discovery"
)

// Match selects endpoints for a [Subset]. It is called from Build only,
// never on the pick path.
type Match func(*discovery.Endpoint) bool

// MatchTags matches endpoints that carry every one of tags.
func MatchTags(tags ...string) Match {
	return func(e *discovery.Endpoint) bool {
		for _, t := range tags {
			if !e.HasTag(t) {
				return false
			}
		}
		return true
	}
}

// MatchMeta matches endpoints whose metadata has key set to value
// (e.g. MatchMeta("version", "v2")).
func MatchMeta(key, value string) Match {
	return func(e *discovery.Endpoint) bool {
		v, ok := e.Meta[key]
		return ok && v == value
	}
}

// MatchAll matches endpoints that every one of ms matches; nil matches
// are ignored.
func MatchAll(ms ...Match) Match {
	return func(e *discovery.Endpoint) bool {
		for _, m := range ms {
			if m != nil && !m(e) {
				return false
			}
		}
		return true
	}
}

// errNoSubset is returned by the picks of an empty subset.
var errNoSubset = fmt.Errorf("%w: no endpoint in the subset", ErrNoEndpoints)

// Subset returns a policy that balances with inner over the endpoints
// match selects, so traffic can be pinned to a version, a canary or a
// hardware class; to split traffic between subsets, route between
// Balancers built with different subsets. When no endpoint matches,
// picks fail at once with an error wrapping [ErrNoEndpoints], or, with
// [WithFallback], balance over every endpoint. A nil match selects every
// endpoint. It reads [WithFallback].
func Subset(match Match, inner Policy, opts ...Option) Policy {
	if inner == nil {
		inner = RoundRobin()
	}
	return subset{match: match, inner: inner, cfg: newConfig(opts)}
}

// Unwrap returns the policy that picks within the subset.
func (s subset) Unwrap() Policy { return s.inner }

type subset struct {
	match Match
	inner Policy
	cfg   config
}

func (s subset) readsInFlight() bool { return readsInFlight(s.inner) }

func (s subset) Build(eps []*Endpoint) Picker {
	if s.match == nil {
		return s.inner.Build(eps)
	}
	var in []*Endpoint
	for _, e := range eps {
		if s.match(&e.Endpoint) {
			in = append(in, e)
		}
	}
	switch {
	case len(in) > 0:
		return s.inner.Build(in)
	case s.cfg.fallback:
		return s.inner.Build(eps)
	}
	return errPicker{errNoSubset}
}

type errPicker struct{ err error }

func (p errPicker) Pick(Info) (*Endpoint, error) { return nil, p.err }
