// Package balancer chooses which endpoint serves a request.
//
// A [Policy] builds a [Picker] from an immutable snapshot of endpoints.
// A [Balancer] keeps the current picker of one service, rebuilds it on every
// discovery update and publishes it atomically, so [Balancer.Pick] takes no
// lock and allocates nothing. Per-endpoint load state ([Load]: requests in
// flight, outcomes) is kept by endpoint ID and survives rebuilds.
//
// Every pick must be finished by exactly one call of [Endpoint.Done] with
// the [Outcome] of the request, which feeds the load state back.
package balancer
