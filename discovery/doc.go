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
// [Registration.Drain] takes it out of service gracefully. [DNS] reads SRV records through any
// [net.Resolver] (Consul DNS, Kubernetes headless services).
package discovery
