// Package route is weft's traffic management: which backend a call goes
// to and under what policy — what Istio's VirtualService, DestinationRule
// and ServiceEntry, or Consul's service-router, -splitter and -resolver,
// say for a sidecar. It holds the types, their validation, their
// compilation into immutable tables, and the matching of calls; the
// package mesh applies what a table decides.
//
// # The model
//
// A [Config] maps service names to a [Service]:
//
//   - [Service.Subsets] name groups of endpoints by tags and meta, as
//     balancer.Subset does; [Service.DefaultSubset] takes what no route
//     takes.
//   - [Service.Routes] are tried in order and the first that matches a
//     call takes it; an implicit catch-all sends everything else to the
//     default subset. A [Route] has [Match] entries, ORed, whose fields —
//     [PathMatch] (exact, prefix or RE2 regex matching the whole path,
//     optionally ignoring case), methods, headers and query parameters
//     ([StringMatch]: exact, prefix, suffix, regex, present, each
//     invertible) — are ANDed.
//   - A route sends its calls to weighted [Backend]s (a service and
//     subset; weights in basis points summing to [TotalWeight], so steps of
//     0.01%), or answers itself with a [Redirect] or a [DirectResponse].
//     It may rewrite the path and authority ([Rewrite]), change headers
//     ([Headers], also per backend), bound the call ([Route.Timeout]),
//     retry ([Retry]) and hedge ([Hedge]) within the chosen backend,
//     inject faults ([Fault]) and mirror calls ([Mirror]).
//   - [TrafficPolicy] — load balancer (hashing by a header, cookie or
//     query parameter for ring_hash and maglev), outlier detection,
//     breaker, retries, connection pool ([ConnectionPool]: the calls in
//     flight, and the service's connect timeout) — applies
//     per service, and per subset block by block over it, as
//     DestinationRule's trafficPolicy does.
//   - [Config.External] names services outside the mesh
//     ([ExternalService]: fixed addresses or DNS names, reached over TLS
//     with their own server name and CA), which backends and mirrors may
//     name.
//
// For gRPC the path is the full method name, "/pkg.Service/Method", and
// the headers are the metadata; paths are matched as the server's
// authorization sees them, after normalization.
//
// # Validation
//
// [Compile] and [Validate] check the whole config, as Istio's Galley
// does, and report every problem at once in a [*ValidationError], each a
// [*FieldError] with the path of its field:
//
//	services.payments.routes[2].match[0].headers["x-canary"].regex: error parsing regexp: missing closing ): `(a`
//
// Warnings (a route that never matches, a per-try timeout not below the
// route's timeout, a mirror to where the route already sends) do not
// refuse a config; [Table.Warnings] keeps them. [Parse] reads YAML and
// JSON, refusing unknown fields.
//
// # Tables and matching
//
// A [Table] is immutable. [Table.Match] takes a service name, a
// [Request] (method, normalized path, query, headers or metadata) and a
// random number from the caller, and returns a [Decision]: the [Rule]
// that took the call, with its policy (timeout, [RetryPolicy],
// [HedgePolicy], [FaultPolicy], [MirrorPolicy], [HeaderRules], rewrite,
// redirect or direct response), and the [Target] the weights chose, whose
// [Destination] is a service and subset with its effective [Policy].
// Matching takes no lock and allocates nothing.
//
// # Sources
//
// A [Source] publishes tables through an atomic pointer, so readers see
// one table or the next, never a mix. [Static] holds configs given in
// code; [File] follows a YAML or JSON file, applying a change only once it
// reads the same twice. Neither ever applies an invalid config, or part
// of one: the last good table stays, and the rejection is kept
// ([Status]) and reported ([WithOnReject]). [Consul] follows Consul's
// config entries, as the next section says.
//
// # Consul as the control plane
//
// [Consul] follows Consul's L7 config entries — service-router,
// service-splitter, service-resolver and service-defaults — as Consul's
// own proxies do, without a sidecar. It watches the discovery chain of
// each named service with blocking queries (discovery's rules: the index
// reset when it goes backwards and never 0, a token bucket, backoff with
// jitter, a client-side timeout per query) and translates it:
//
//   - router routes become [Route]s in order, their matches (path exact,
//     prefix or regex, headers with invert, query parameters, methods) a
//     [Match]; the destination's prefix rewrite, request timeout, retries
//     (NumRetries, RetryOnConnectFailure, RetryOn, RetryOnStatusCodes) and
//     header changes the route's; Consul's implied catch-all comes last;
//   - splitter splits become weighted [Backend]s, percentages in steps of
//     0.01 as basis points, with the splits' header changes;
//   - resolver subsets become [Subset]s: by meta and tags from the
//     filters that say no more — Service.Meta.<key> == "<value>", "<tag>"
//     in Service.Tags, Service.Tags contains "<tag>", joined by and —,
//     by [Subset.Filter] (with the only-passing flag, for a discovery
//     watch of their own) from any other; redirects and default subsets
//     become the backends Consul resolved them to;
//   - resolver failover (by subset or "*": services, subsets,
//     datacenters, targets) becomes the [Failover] list of the subset or
//     service, in the order Consul compiled it;
//     the resolver's request timeout bounds routes that set none, its
//     connect timeout is the service's [ConnectionPool.ConnectTimeout],
//     and its load balancer (policy, a header, cookie or query-parameter
//     hash) is the service's;
//   - service-defaults' protocol is [Service.Protocol];
//   - with [WithConsulCaller], the caller's own service-defaults
//     UpstreamConfig (Defaults, and the Override naming the called
//     service) gives the called service's [ConnectionPool] (Limits,
//     and ConnectTimeoutMs, which wins over the resolver's
//     ConnectTimeout, as in Consul's Envoy clusters) and
//     [OutlierDetection] (PassiveHealthCheck), as Consul configures a
//     caller's sidecar: upstream settings belong to the caller.
//
// Whatever the chain cannot express — a split's headers, a resolver's
// timeouts — is read from the config entries themselves.
// A chain weft cannot apply (a redirect to another datacenter, a retry
// on Envoy's rate-limit header) is refused whole with a [*FieldError]
// naming the entry and field, such as
// service-router/web.Routes[0].Destination.RetryOn[0], and the last good
// table stays; a field weft leaves unapplied (failover targets in
// another namespace, idle timeout, extra hash policies) is a warning in [Table.Warnings] under
// the same kind of path. List every service the process calls: a
// service that only appears as another's target routes to its subsets
// as that chain says, not by its own chain.
package route
