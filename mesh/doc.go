// Package mesh is the face of weft that programs touch: it puts net/http
// and gRPC clients and servers into the mesh.
//
// A [Client] sends requests to services by name. As an [http.RoundTripper]
// it takes the host of the URL as the service name; [Client.DialGRPC]
// returns a gRPC connection to a service. Either way each call is resolved
// through discovery (package discovery), balanced by a policy (package
// balancer) and, with [WithIdentity], carried over mutual TLS 1.3 with
// SPIFFE identities (package tlsid).
//
// A [Server] serves an [http.Handler] over the same mutual TLS;
// [GRPCServerOptions] gives a gRPC server the same. Handlers learn who
// called them with [PeerID].
//
// Configuration is by functional options. An [Option] applies to clients
// and servers alike; [ClientOption] and [ServerOption] to one side only.
// The zero configuration is safe: plaintext until [WithIdentity] gives an
// identity, then mutual TLS 1.3 that admits peers of the same trust domain
// unless [WithAuthorizer] says otherwise. A client also checks, on every
// connection, that the server presents the identity discovery expects of
// its endpoint ([discovery.Endpoint].Identity; secure naming, failing with
// [ErrUnexpectedPeer]); where discovery knows none, it falls back to the
// authorizer and warns once per service, or refuses with
// [WithRequiredIdentities].
//
// # One call path
//
// Every client call — an HTTP request through [Client.RoundTrip], a gRPC
// unary call or stream on a connection of [Client.DialGRPC] — runs through
// one call engine, in the same steps: route ([WithRoutes]), admit (the
// client rate limit, the retry budget and the destination's connection
// pool, which refuses with [ErrOverflow]), pick (the service's balancer,
// skipping open breakers and, for gRPC, endpoints without a ready
// connection), the endpoint's circuit breaker, send, classify, then retry
// or hedge within the budget and the caller's deadline, and record
// (telemetry). HTTP and gRPC calls to a service share its balancer,
// breakers, budget and rate limit. A stream is retried on another
// endpoint only while nothing has been sent; its outcome is counted once,
// however it ends.
//
// The options by concern:
//
//   - where and to whom: [WithDiscovery], [WithBalancer], [WithRoutes],
//     [WithIdentity], [WithAuthorizer], [WithServerAuthorizer],
//     [WithRequiredIdentities];
//   - resilience on the client: [WithRetry], [WithHedging],
//     [WithIdempotent], [WithCircuitBreaker], [WithRateLimit],
//     [WithMaxRetryWait], [WithHTTPClassifier], [WithGRPCClassifier];
//   - protection on the server: [WithAccessPolicy], [WithAccessAudit],
//     [WithRouteRateLimit], [WithPeerRateLimit], [WithConcurrencyLimit],
//     [WithTrustedPriority], [WithServerTimeouts], [WithStreamResetLimit];
//   - what happened: [WithTelemetry], [WithLogger];
//   - tests: [WithClock].
//
// # What a server trusts
//
// A server trusts its identity source's trust bundle and nothing a caller
// sends: headers, metadata and paths are the caller's claims. Every
// request's path is normalized once ([NormalizePath]) before any decision
// reads it, so access policies, rate limits and the handler's routing all
// see the same path.
//
// The priority of a call for load shedding ([PriorityHeader],
// [PriorityMetadataKey]) is such a claim: any caller can send
// "critical". A server honours it only from the callers whose verified
// SPIFFE IDs [WithTrustedPriority] accepts. By default nobody's claim is
// trusted, and under [WithConcurrencyLimit] every call is sheddable.
//
// # The gRPC balancer registration
//
// grpc-go selects load balancers by a global name. Importing mesh registers
// weft's balancer once, as [GRPCBalancerName]; it is the only global
// registration weft makes.
package mesh
