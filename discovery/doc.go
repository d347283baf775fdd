// Package discovery finds the instances of services.
//
// An [Endpoint] is one instance: an address and the attributes a balancer
// uses to choose between instances. A [Watcher] pushes the full, current set
// of a service's endpoints to its subscribers whenever it changes; it never
// sends diffs, so a subscriber can rebuild its state from each [Update] alone.
//
// [Static] is a Watcher whose sets are given by the program and can be
// changed at run time; it needs no outside service.
//
// [Consul] watches a service's healthy instances with Consul's blocking
// queries, one watch per service shared by every subscriber; when the
// agent fails it keeps the last good set and reports the error in
// [Update.Err] and [Consul.Status]. [Register] announces this process in
// Consul with an HTTP, gRPC or TTL check and keeps it registered: when the
// agent forgets the instance (reaped after DeregisterCriticalServiceAfter,
// an agent restarted without its state) it registers it again and says so
// in [Registration.Status] and to [WithReregisterHook].
// [Registration.Drain] takes it out of service gracefully. A [Target] is
// a part of a service — a datacenter, a Consul filter on the instance,
// passing or also warning instances — that a [TargetWatcher] (Consul)
// watches on its own, as a discovery chain's targets need: a route's
// subset, a failover to another datacenter. [DNS] reads
// SRV records through any [net.Resolver] (Consul DNS, Kubernetes headless
// services).
//
// # Hung agents
//
// Every blocking query of a [Consul] watcher has a client-side timeout of
// its wait + the wait/16 of jitter Consul may add + [WithQueryMargin]: an
// agent that accepts connections and never answers becomes an error
// wrapping [ErrAgentTimeout], with backoff, in [Update.Err] and
// [Consul.Status], within wait + 2 × margin.
//
// # Empty sets
//
// When a service's set becomes empty, the default is to fail fast: the
// watchers deliver the empty set, and callers get no endpoint at once.
// [HoldLastSet] wraps any Watcher to keep delivering the last non-empty
// set, marked with [Update.HeldSince], for a bounded time instead (the
// static stability of Consul's stale reads and of Envoy's panic mode), for
// services where a health signal that fails everywhere at once is likelier
// than every instance failing.
package discovery
