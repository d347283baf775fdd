// Package balancer chooses which endpoint serves a request.
//
// A [Policy] builds a [Picker] from an immutable snapshot of endpoints.
// A [Balancer] keeps the current picker of one service, rebuilds it on every
// discovery update ([Balancer.Update]) and publishes it atomically, so
// [Balancer.Pick] takes no lock and, with the policies of this package,
// allocates nothing. Per-endpoint load state ([Load]: requests in flight, a
// peak-sensitive latency EWMA, recent outcomes, outlier ejection) is kept by
// endpoint ID and survives rebuilds. Every pick must be finished by exactly
// one call of [Endpoint.Done] with the [Outcome] of the request, which feeds
// the load state back.
//
// # Policies
//
//   - [RoundRobin]: in turn, from a random start;
//   - [WeightedRoundRobin]: in turn by discovery weight, evenly spread
//     (grpc-go's static stride scheduler);
//   - [Random], [WeightedRandom] (an alias table);
//   - [LeastRequest]: the power of two choices on requests in flight;
//   - [PeakEWMA]: the power of two choices on latency × (in flight + 1),
//     as in Finagle and linkerd2-proxy — the policy that keeps the tail
//     fast when one endpoint turns slow; estimates decay towards zero
//     with time, and an endpoint with no latency sample is tried at once,
//     one probe at a time, so new endpoints are never starved;
//   - [RingHash] and [Maglev]: consistent hashing of a request key
//     ([HeaderKey], [CookieKey] or any [KeyFunc]), for affinity.
//
// # Wrappers
//
//   - [Subset] balances over the endpoints a [Match] selects (tags,
//     metadata: [MatchTags], [MatchMeta]);
//   - [ZoneAware] prefers the caller's zone while enough of it is healthy;
//   - [Outlier] ejects endpoints that fail (consecutive failures, success
//     rate) for a growing time, within a maximum share and a panic
//     threshold, and readmits them on its own.
//
// Wrap in this order: Outlier(ZoneAware(zone, Subset(match, policy))).
//
// # New endpoints
//
// Every policy gives an endpoint that joins its share at once: a new
// endpoint next to busy ones gets at least a third of the calls under the
// P2C policies, its share of turns under the others. [WithSlowStart]
// instead ramps a new endpoint's weight up over a window, as Envoy's
// slow_start_config does, for servers that need to warm up (caches, JIT);
// every policy but the hash policies reads it.
//
// # Skipping endpoints
//
// [Info.Skip] rules endpoints out for one request (an open circuit breaker,
// an endpoint a retry already tried). Every policy honours it with its own
// fallback — round robin takes further turns, P2C samples among the rest,
// the hash policies walk on to the next endpoint of the ring or table — and
// a pick fails with [ErrAllSkipped] only when nothing is left.
//
// # Time
//
// Latency EWMAs and ejections read the Balancer's clock; [WithClock]
// injects one for tests and simulations. Nothing in the package starts a
// goroutine or a timer: ejections end when their time is up, as the next
// pick observes it.
//
// # Threading
//
// [Balancer.Update] is called from one goroutine at a time; Pick and Done
// from any number, concurrently with Update. A Policy may keep state across
// builds ([Outlier], [RingHash] do), so each Balancer gets its own Policy
// value.
package balancer
