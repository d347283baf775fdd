package discovery

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrNaming is wrapped by the errors of a [Naming] rule: a template that
// cannot give a SPIFFE ID, or a service name it cannot be given.
var ErrNaming = errors.New("discovery: naming")

// Naming gives the SPIFFE ID the servers of a service must present. It is
// called once per watch of a service, from the goroutine that starts the
// watch.
type Naming func(service string) (spiffeid.ID, error)

// NamingTemplate returns a [Naming] that puts the service name in place
// of every "{service}" in template:
// "spiffe://example.org/ns/prod/sa/{service}" names service "payments"
// spiffe://example.org/ns/prod/sa/payments. It fails with [ErrNaming]
// when template, with a service name in it, is not a valid SPIFFE ID; the
// Naming it returns fails likewise for a service name that does not fit
// in a SPIFFE path segment.
func NamingTemplate(template string) (Naming, error) {
	if _, err := spiffeid.FromString(strings.ReplaceAll(template, "{service}", "service")); err != nil {
		return nil, fmt.Errorf("%w: template %q: %v", ErrNaming, template, err)
	}
	return func(service string) (spiffeid.ID, error) {
		if strings.Contains(template, "{service}") {
			if err := spiffeid.ValidatePathSegment(service); err != nil {
				return spiffeid.ID{}, fmt.Errorf("%w: service %q: %v", ErrNaming, service, err)
			}
		}
		id, err := spiffeid.FromString(strings.ReplaceAll(template, "{service}", service))
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("%w: service %q: %v", ErrNaming, service, err)
		}
		return id, nil
	}, nil
}

// WithNaming returns a [Watcher] that delivers w's updates with the
// [Endpoint.Identity] of every endpoint that has none set to what naming
// gives for the service: the way a static or DNS discovery, which knows
// addresses only, says which identity each service's servers hold. With
// Consul, name services by Connect's naming (tlsid.ConsulSource.ServiceID
// or tlsid.ConsulServiceID). A watch fails when naming fails for its
// service. A nil naming returns w.
func WithNaming(w Watcher, naming Naming) Watcher {
	if naming == nil {
		return w
	}
	return &namedWatcher{w: w, naming: naming}
}

type namedWatcher struct {
	w      Watcher
	naming Naming
}

// Watch implements [Watcher].
func (n *namedWatcher) Watch(service string, fn func(Update)) (stop func(), err error) {
	id, err := n.naming(service)
	if err != nil {
		return nil, err
	}
	return n.w.Watch(service, func(u Update) {
		fn(named(u, id))
	})
}

// WatchTarget implements [TargetWatcher]: the target's endpoints are
// named by its service. It fails with [ErrNoTargets] when the wrapped
// watcher does not watch targets.
func (n *namedWatcher) WatchTarget(t Target, fn func(Update)) (stop func(), err error) {
	id, err := n.naming(t.Service)
	if err != nil {
		return nil, err
	}
	return watchTarget(n.w, t, func(u Update) {
		fn(named(u, id))
	})
}

// named returns u with id as the identity of its endpoints that have
// none; the set is copied only when some endpoint changes.
func named(u Update, id spiffeid.ID) Update {
	var set []Endpoint
	for i, e := range u.Endpoints {
		if !e.Identity.IsZero() {
			continue
		}
		if set == nil {
			set = make([]Endpoint, len(u.Endpoints))
			copy(set, u.Endpoints)
		}
		set[i].Identity = id
	}
	if set != nil {
		u.Endpoints = set
	}
	return u
}
