// Package breaker holds the parts of weft that say no, each usable on its
// own; package mesh composes them on the client and server paths.
//
//   - Circuit breakers: a [Breaker] wraps github.com/sony/gobreaker/v2 with
//     a trip policy ([Settings]: consecutive failures, or a failure ratio
//     over a minimum number of calls in a sliding window), half-open
//     probes, and state changes published outside gobreaker's lock
//     ([Settings.OnStateChange], [Set.Subscribe]). A [Set] keeps one
//     breaker per endpoint ID, following discovery updates, and optionally
//     one per service. Outcomes are classified by a replaceable
//     [HTTPClassifier] or [GRPCClassifier]; a refused call fails with
//     [ErrCircuitOpen] before any I/O.
//   - A retry [Budget] (Finagle and Linkerd style): retries and hedges may
//     add at most a ratio of recent requests plus a floor per second, over
//     a sliding window, with time passed in by the caller.
//   - Rate limits on golang.org/x/time/rate: a [RateLimit] token bucket,
//     and a [KeyedLimiter] with one bucket per key (peer identity, route)
//     in a bounded LRU, so a flood of identities cannot exhaust memory.
//   - A [ConcurrencyLimiter] with [Priority] classes for load shedding:
//     sheddable calls are refused first and fast, critical calls keep a
//     reserve and may briefly wait; optionally an [AIMD] adaptive limit.
package breaker
