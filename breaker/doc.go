// Package breaker holds the parts of weft that say no: circuit breakers
// (built on github.com/sony/gobreaker/v2), retry budgets, rate limits
// (golang.org/x/time/rate) and concurrency limits. Each is usable on its
// own; package mesh composes them on the client and server paths.
package breaker
