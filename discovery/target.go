package discovery

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Target is a part of one service's instances that a [TargetWatcher]
// follows with a watch of its own: the instances of Service in
// Datacenter that Filter selects, passing their health checks (and, unless
// OnlyPassing, warning). It is what a Consul discovery chain's target
// names, so that a route's subset, a redirect or a failover to another
// datacenter each have their own set of endpoints.
//
// Target is a comparable value; the zero Target is not watchable (it
// names no service).
type Target struct {
	// Service is the name of the service. Required.
	Service string
	// Datacenter is where the instances are; empty means the watcher's
	// own (for [Consul], the agent's unless [WithDatacenter] says
	// otherwise).
	Datacenter string
	// Filter selects instances by a Consul filter expression on the
	// instance, such as `Service.Meta.version == "2"`, evaluated by the
	// agent; empty selects every instance.
	Filter string
	// OnlyPassing keeps only instances whose checks all pass; when false,
	// instances whose checks warn are kept too, as Consul's resolver
	// subsets do by default.
	OnlyPassing bool
}

// String returns a canonical form of t, such as
// `web@dc2 "Service.Meta.version == \"2\"" passing`: the service, the
// datacenter after "@", the filter quoted, and "passing" or
// "passing|warning". Equal targets have equal strings, and no service
// name is one.
func (t Target) String() string {
	var b strings.Builder
	b.WriteString(t.Service)
	if t.Datacenter != "" {
		b.WriteString("@")
		b.WriteString(strings.ReplaceAll(t.Datacenter, " ", "%20"))
	}
	if t.Filter != "" {
		b.WriteString(" ")
		b.WriteString(strconv.Quote(t.Filter))
	}
	if t.OnlyPassing {
		b.WriteString(" passing")
	} else {
		b.WriteString(" passing|warning")
	}
	return b.String()
}

// TargetWatcher is a [Watcher] that can also watch one [Target] of a
// service. WatchTarget follows the contract of [Watcher.Watch]: fn gets
// every full [Update] of the target's instances, in order, from a
// goroutine the watcher owns (with [Update.Service] the target's
// service), and stop ends the subscription and waits for it. A target
// has a watch of its own, apart from its service's and from other
// targets': each is shared by the subscribers of equal targets.
//
// Implementations are safe for concurrent use. [Consul] is one; the
// watchers of [WithNaming] and [HoldLastSet] are too, over one that is.
type TargetWatcher interface {
	Watcher
	WatchTarget(t Target, fn func(Update)) (stop func(), err error)
}

// ErrNoTargets is wrapped by the error of [TargetWatcher.WatchTarget] on
// a watcher that wraps another ([WithNaming], [HoldLastSet]) when the
// wrapped one does not watch targets.
var ErrNoTargets = errors.New("discovery: the watcher does not watch targets")

// watchTarget watches t through w, when w watches targets.
func watchTarget(w Watcher, t Target, fn func(Update)) (func(), error) {
	tw, ok := w.(TargetWatcher)
	if !ok {
		return nil, fmt.Errorf("%w: %T cannot watch %s", ErrNoTargets, w, t)
	}
	return tw.WatchTarget(t, fn)
}
