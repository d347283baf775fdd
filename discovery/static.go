package discovery

import (
	"fmt"
	"slices"
	"sync"
)

// Static is a [Watcher] whose endpoint sets are given by the program.
// Sets can be replaced at any time with [Static.Set]; subscribers see each
// change. Static needs no outside service, which makes it the discovery of
// tests, examples and fixed deployments.
//
// The zero value is an empty Static ready to use. It is safe for
// concurrent use.
type Static struct {
	mu    sync.Mutex // serialises Set so updates reach subscribers in order
	table fanout
}

// NewStatic returns a Static holding the given sets, keyed by service.
// It fails, holding nothing, if any endpoint is invalid.
func NewStatic(sets map[string][]Endpoint) (*Static, error) {
	s := &Static{}
	for service, eps := range sets {
		if _, err := checkSet(service, eps); err != nil {
			return nil, err
		}
	}
	for service, eps := range sets {
		if err := s.Set(service, eps...); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Set replaces the endpoints of service. Every endpoint is validated first
// ([Endpoint.Validate]; IDs must be unique): on error nothing changes.
// An empty set is valid and means the service has no instance. The
// endpoints are copied; the caller may reuse eps.
func (s *Static) Set(service string, eps ...Endpoint) error {
	set, err := checkSet(service, eps)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.table.mu.Lock()
	h := s.table.hub(service)
	s.table.mu.Unlock()
	h.publish(Update{Endpoints: set})
	return nil
}

// Endpoints returns the current set of service, and false when no set was
// ever given for it.
func (s *Static) Endpoints(service string) ([]Endpoint, bool) {
	s.table.mu.Lock()
	h := s.table.hubs[service]
	s.table.mu.Unlock()
	if h == nil {
		return nil, false
	}
	u, ok := h.current()
	return u.Endpoints, ok
}

// Watch implements [Watcher]. Watching a service that has no set yet is
// allowed: the subscriber hears of it when [Static.Set] gives one.
func (s *Static) Watch(service string, fn func(Update)) (stop func(), err error) {
	return s.table.watch(service, fn)
}

// checkSet validates eps for service and returns a deep copy.
func checkSet(service string, eps []Endpoint) ([]Endpoint, error) {
	if service == "" {
		return nil, fmt.Errorf("discovery: static: empty service name")
	}
	seen := make(map[string]bool, len(eps))
	set := make([]Endpoint, len(eps))
	for i, e := range eps {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("discovery: static %q: %w", service, err)
		}
		if seen[e.ID] {
			return nil, fmt.Errorf("discovery: static %q: %w: duplicate ID %q", service, ErrBadEndpoint, e.ID)
		}
		seen[e.ID] = true
		e.Tags = slices.Clone(e.Tags)
		if e.Meta != nil {
			m := make(map[string]string, len(e.Meta))
			for k, v := range e.Meta {
				m[k] = v
			}
			e.Meta = m
		}
		set[i] = e
	}
	return set, nil
}
