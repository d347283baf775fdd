// Package weft is a proxyless service mesh for Go: the work a sidecar
// proxy would do — finding instances, choosing one, refusing to hammer a
// sick one, proving who is calling whom, tracing the call — done inside
// the process, with no extra network hop.
//
// This package holds no code; it is the map of the others:
//
//   - [github.com/weftmesh/weft/mesh] is what programs use: an
//     [net/http.RoundTripper] and a gRPC connection that call services by
//     name, and servers for [net/http.Handler]s and gRPC, over mutual TLS.
//   - [github.com/weftmesh/weft/discovery] knows where the instances of a
//     service are and pushes full endpoint sets to subscribers.
//   - [github.com/weftmesh/weft/route] says where a call goes and under
//     what policy: ordered routes, weighted subsets, timeouts, retries,
//     faults and mirrors, validated and compiled into immutable tables.
//   - [github.com/weftmesh/weft/balancer] chooses the instance for each
//     request from an immutable snapshot, with no lock and no allocation.
//   - [github.com/weftmesh/weft/breaker] says no: circuit breakers, retry
//     budgets, rate and concurrency limits.
//   - [github.com/weftmesh/weft/tlsid] proves identities: SPIFFE
//     X.509-SVIDs, mutual TLS configurations, authorization of peers.
//   - [github.com/weftmesh/weft/telemetry] records traces and RED metrics
//     through OpenTelemetry.
//
// A client call flows down that list: mesh takes the service name from the
// request, discovery has already pushed the service's endpoints into its
// balancer, the balancer picks one, the breaker of that endpoint may refuse
// it, and the request goes out over a pooled mutual TLS connection whose
// server SPIFFE ID is verified; the outcome feeds back into the balancer's
// load state. On the server side a connection's client SVID is verified at
// the handshake and its ID is handed to the handler.
//
// Arrows point down only: mesh imports the other packages; they do not
// import mesh.
//
// Run the quickstart, which needs no outside service:
//
//	go run ./examples/quickstart
package weft
