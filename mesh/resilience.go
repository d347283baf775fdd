package mesh

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
)

// ErrCircuitOpen is returned (wrapped) by a call when every endpoint of
// the service has an open circuit breaker, or the service's breaker is
// open: the call failed fast, without network I/O. It wraps
// [breaker.ErrCircuitOpen], so either can be tested with [errors.Is].
var ErrCircuitOpen = fmt.Errorf("mesh: every endpoint's circuit is open: %w", breaker.ErrCircuitOpen)

// ErrRateLimited is returned (wrapped) by a call refused by the client's
// rate limit for the destination service. It wraps
// [breaker.ErrRateLimited].
var ErrRateLimited = fmt.Errorf("mesh: client rate limit: %w", breaker.ErrRateLimited)

// PriorityHeader is the HTTP header by which a caller claims a priority
// for load shedding on a weft server: "critical" claims a critical
// request; any other value, or none, a sheddable one. The claim is the
// caller's own: a server honours it only from the callers
// [WithTrustedPriority] accepts, and from nobody by default.
const PriorityHeader = "Weft-Priority"

// PriorityMetadataKey is the gRPC metadata key that plays the role of
// [PriorityHeader] for gRPC calls.
const PriorityMetadataKey = "weft-priority"

// RetryPushbackKey is the gRPC trailer by which a server tells the client
// when to retry (milliseconds; negative: do not retry), as in gRPC's
// retry design (A6). A weft server sets it on ResourceExhausted answers.
const RetryPushbackKey = "grpc-retry-pushback-ms"

// Defaults of [RetryPolicy].
const (
	DefaultMaxAttempts   = 3
	DefaultBackoff       = 25 * time.Millisecond
	DefaultMaxBackoff    = time.Second
	DefaultMinRemaining  = 5 * time.Millisecond
	DefaultMaxRetryBody  = 64 << 10
	DefaultHedgeDelay    = 50 * time.Millisecond
	hedgeMinObservations = 20
)

// MaxRetryWait is the default of [WithMaxRetryWait]: the longest a call
// waits before a retry, whatever a server asks for with Retry-After or
// gRPC pushback, deadline or not.
const MaxRetryWait = 30 * time.Second

// WithMaxRetryWait caps the wait before a retry (default [MaxRetryWait]):
// when a server asks, with Retry-After or gRPC pushback, for a longer
// wait, or the backoff is longer, the call ends at once with the answer or
// error it has, whether or not its context has a deadline. A server
// cannot park a caller. Values ≤ 0 are ignored.
func WithMaxRetryWait(d time.Duration) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if d > 0 {
			c.resilience.maxWait = d
		}
	})
}

// RetryPolicy says how a [Client] retries. The zero value gives the
// defaults: up to 3 attempts, exponential backoff from 25 ms to 1 s with
// full jitter, no per-try timeout, no attempt started with less than
// 5 ms left before the caller's deadline, bodies up to 64 KiB replayed,
// and the default [breaker.BudgetSettings].
//
// Only idempotent calls are retried once they may have reached a server
// (see [WithIdempotent]: HTTP GET, HEAD, OPTIONS, PUT and DELETE by
// default, and what [WithIdempotent] accepts). Any call is retried when it
// provably never left the process (no connection was ready, or the
// connection was refused before a byte was written). A retry goes to
// another endpoint than the ones already tried, when there is one.
type RetryPolicy struct {
	// MaxAttempts is the most attempts per call, the first included.
	// Zero means [DefaultMaxAttempts].
	MaxAttempts int
	// Backoff is the base of the exponential backoff between attempts;
	// MaxBackoff caps it. Zero means [DefaultBackoff] and
	// [DefaultMaxBackoff]. The wait is drawn uniformly from
	// [0, min(MaxBackoff, Backoff×2^(n-1))], and is at least what the
	// server asked for with Retry-After or gRPC retry pushback.
	Backoff, MaxBackoff time.Duration
	// PerTryTimeout, when positive, bounds each attempt (within the
	// caller's deadline, which bounds them all).
	PerTryTimeout time.Duration
	// MinRemaining: no retry starts when less than this remains before
	// the caller's deadline. Zero means [DefaultMinRemaining].
	MinRemaining time.Duration
	// MaxBodyBytes is the largest request body that is replayed; a body
	// must also have GetBody and a known length. Zero means
	// [DefaultMaxRetryBody].
	MaxBodyBytes int64
	// Budget bounds retries and hedges over a sliding window; see
	// [breaker.Budget].
	Budget breaker.BudgetSettings
	// IdempotentMethod reports whether a gRPC method (full name,
	// "/pkg.Service/Method") is idempotent, for retries and hedges alike.
	//
	// Deprecated: use [WithIdempotent], which serves both protocols and
	// hedging without retries. A method either accepts is idempotent.
	IdempotentMethod func(fullMethod string) bool
}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.Backoff <= 0 {
		p.Backoff = DefaultBackoff
	}
	if p.MaxBackoff <= 0 {
		p.MaxBackoff = DefaultMaxBackoff
	}
	if p.MinRemaining <= 0 {
		p.MinRemaining = DefaultMinRemaining
	}
	if p.MaxBodyBytes <= 0 {
		p.MaxBodyBytes = DefaultMaxRetryBody
	}
	return p
}

// HedgePolicy says which calls a [Client] hedges: after Delay without an
// answer, a second attempt goes to another endpoint, the first good
// answer wins and the other attempt is cancelled: what it receives is
// never seen by the caller. Hedges draw on the retry budget, and no hedge
// starts once an answer is in. Only idempotent calls ([WithIdempotent])
// with a replayable body are hedged, HTTP requests and gRPC unary calls;
// streams are not. The zero value hedges every idempotent call after the
// service's observed p95 latency.
type HedgePolicy struct {
	// Delay is how long to wait before hedging. Zero means the observed
	// 95th percentile latency of the service, or [DefaultHedgeDelay]
	// until 20 calls have been observed.
	Delay time.Duration
	// Route selects the calls to hedge by service and route (the URL path
	// for HTTP, the full method name for gRPC). Nil means every
	// idempotent call.
	Route func(service, route string) bool
}

// ClientRateLimit limits the calls a client makes to one service. The
// zero value admits one call, then fails every call at once.
type ClientRateLimit struct {
	breaker.RateLimit
	// Wait makes a call wait for a token (within its context's deadline)
	// instead of failing at once with [ErrRateLimited]; a call whose
	// deadline would pass first fails at once.
	Wait bool
}

type resilienceConfig struct {
	retry        *RetryPolicy
	hedge        *HedgePolicy
	breakers     *breaker.Settings
	breakerOpts  []breaker.SetOption
	rateLimit    func(service string) *ClientRateLimit
	classifyHTTP breaker.HTTPClassifier
	classifyGRPC breaker.GRPCClassifier
	idempotent   func(service, route string) bool
	routed       bool          // routes may retry and hedge calls: keep a budget and latencies
	maxWait      time.Duration // 0: MaxRetryWait
}

// WithRetry turns on retries as described by p (see [RetryPolicy]).
func WithRetry(p RetryPolicy) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		p := p.withDefaults()
		c.resilience.retry = &p
	})
}

// WithHedging turns on hedged calls as described by p (see
// [HedgePolicy]). The retry budget of [WithRetry], or the default one,
// bounds the hedges.
func WithHedging(p HedgePolicy) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		c.resilience.hedge = &p
	})
}

// WithCircuitBreaker gives every endpoint of every service its own
// circuit breaker configured by s (and a breaker per service with
// [breaker.WithServiceBreaker]). An endpoint whose breaker is open is
// not picked; when all are open, calls fail at once with
// [ErrCircuitOpen]. Calls that a route sends to a destination whose
// traffic policy has a breaker block go through that destination's own
// breakers instead (see [WithRoutes]).
func WithCircuitBreaker(s breaker.Settings, opts ...breaker.SetOption) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		c.resilience.breakers = &s
		c.resilience.breakerOpts = opts
	})
}

// WithRateLimit limits the calls to each destination service: limit is
// called once per service, when the client first calls it, and a nil
// result means no limit. A nil function is ignored.
func WithRateLimit(limit func(service string) *ClientRateLimit) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if limit != nil {
			c.resilience.rateLimit = limit
		}
	})
}

// WithHTTPClassifier replaces [breaker.ClassifyHTTP] as the judge of HTTP
// outcomes for breakers, balancers and retries. A nil f is ignored.
func WithHTTPClassifier(f breaker.HTTPClassifier) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if f != nil {
			c.resilience.classifyHTTP = f
		}
	})
}

// WithGRPCClassifier replaces [breaker.ClassifyGRPC] as the judge of gRPC
// outcomes for breakers, balancers and retries. A nil f is ignored.
func WithGRPCClassifier(f breaker.GRPCClassifier) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if f != nil {
			c.resilience.classifyGRPC = f
		}
	})
}

// WithIdempotent says which calls are idempotent beyond HTTP's own
// idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE): f is asked with
// the destination service and the call's route — the URL path of an HTTP
// request, the full method name ("/pkg.Service/Method") of a gRPC call —
// and a call it accepts may be retried after it may have reached a server,
// and hedged. gRPC calls are idempotent only when f (or the deprecated
// [RetryPolicy.IdempotentMethod]) says so. A nil f is ignored.
func WithIdempotent(f func(service, route string) bool) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if f != nil {
			c.resilience.idempotent = f
		}
	})
}

// WithClock sets the clock that clients and servers read — for rate
// limits, retry budgets, backoff, Retry-After and pushback waits, hedge
// delays and per-try timeouts — for tests. The default is the system
// clock. A nil c is ignored.
func WithClock(c Clock) Option {
	return sharedOption{
		client: func(cfg *clientConfig) {
			if c != nil {
				cfg.clock = c
			}
		},
		server: func(cfg *serverConfig) {
			if c != nil {
				cfg.protect.now = c.Now
			}
		},
	}
}

// guard is the resilience state of calls to one service: breakers,
// budget, rate limit and the policies. Fields are set once, at creation.
type guard struct {
	service      string
	breakers     *breaker.Set                  // nil: none
	skipOpen     func(*balancer.Endpoint) bool // nil without breakers; built once
	settings     *breaker.Settings             // the client's breaker settings; nil: none
	setOpts      []breaker.SetOption           // the client's breaker set options
	budget       *breaker.Budget               // nil without retries or hedging
	limiter      *rate.Limiter                 // nil: no rate limit
	limitWait    bool
	retry        *RetryPolicy
	hedge        *HedgePolicy
	latency      *latencyWindow // nil without hedging on observed latency
	clock        clock
	classifyHTTP breaker.HTTPClassifier
	classifyGRPC breaker.GRPCClassifier
	idempotent   func(service, route string) bool // nil: none beyond HTTP's methods
	maxWait      time.Duration                    // the longest wait before a retry
}

func newGuard(service string, rc *resilienceConfig, c Clock) *guard {
	g := &guard{
		service:      service,
		retry:        rc.retry,
		hedge:        rc.hedge,
		clock:        newClock(c),
		classifyHTTP: rc.classifyHTTP,
		classifyGRPC: rc.classifyGRPC,
		idempotent:   rc.idempotent,
		maxWait:      rc.maxWait,
	}
	if g.maxWait <= 0 {
		g.maxWait = MaxRetryWait
	}
	if g.classifyHTTP == nil {
		g.classifyHTTP = breaker.ClassifyHTTP
	}
	if g.classifyGRPC == nil {
		g.classifyGRPC = breaker.ClassifyGRPC
	}
	if rc.retry != nil && rc.retry.IdempotentMethod != nil {
		byMethod, other := rc.retry.IdempotentMethod, rc.idempotent
		g.idempotent = func(service, route string) bool {
			return byMethod(route) || (other != nil && other(service, route))
		}
	}
	if rc.breakers != nil {
		g.settings, g.setOpts = rc.breakers, rc.breakerOpts
		set := breaker.NewSet(service, *rc.breakers, rc.breakerOpts...)
		g.breakers = set
		g.skipOpen = func(e *balancer.Endpoint) bool { return set.Open(e.ID) }
	}
	if g.retry != nil || g.hedge != nil || rc.routed {
		var bs breaker.BudgetSettings
		if g.retry != nil {
			bs = g.retry.Budget
		}
		g.budget = breaker.NewBudget(bs)
	}
	if (g.hedge != nil && g.hedge.Delay <= 0) || rc.routed {
		g.latency = &latencyWindow{}
	}
	if rc.rateLimit != nil {
		if l := rc.rateLimit(service); l != nil {
			g.limiter = l.NewLimiter()
			g.limitWait = l.Wait
		}
	}
	return g
}

// Breakers returns the circuit breakers of the client's calls to
// service, HTTP and gRPC alike, or nil when it has none (no
// [WithCircuitBreaker], or no call to service yet). Use it to read
// states or [breaker.Set.Subscribe] to state changes. It is the
// client's set: route destinations with a breaker block have sets of
// their own, whose states the admin handler's /clusters shows
// (destinationBreakers) and whose changes [breaker.Settings.OnStateChange]
// and [WithTelemetry] see.
func (c *Client) Breakers(service string) *breaker.Set {
	if cl := (*c.clusters.Load())[service]; cl != nil {
		return cl.guard.breakers
	}
	return nil
}

// idempotentCall reports whether a call with route (URL path or full
// gRPC method) is idempotent; httpMethod is the HTTP method, "" for gRPC.
func (g *guard) idempotentCall(httpMethod, route string, grpc bool) bool {
	if !grpc && idempotentHTTP(httpMethod) {
		return true
	}
	return g.idempotent != nil && g.idempotent(g.service, route)
}

// admit applies the client rate limit and counts the call in the retry
// budget.
func (g *guard) admit(ctx context.Context) error {
	if g.limiter == nil && g.budget == nil {
		return nil
	}
	now := g.clock.Now()
	if err := g.rateLimit(ctx, now); err != nil {
		return err
	}
	if g.budget != nil {
		g.budget.Request(now)
	}
	return nil
}

// rateLimit applies the client rate limit at now, waiting for a token
// when the limit says to wait.
func (g *guard) rateLimit(ctx context.Context, now time.Time) error {
	if g.limiter == nil {
		return nil
	}
	if !g.limitWait {
		if g.limiter.AllowN(now, 1) {
			return nil
		}
		return fmt.Errorf("%w: %q", ErrRateLimited, g.service)
	}
	r := g.limiter.ReserveN(now, 1)
	if !r.OK() {
		return fmt.Errorf("%w: %q", ErrRateLimited, g.service)
	}
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		r.CancelAt(now)
		return fmt.Errorf("%w: %q: deadline too close", ErrRateLimited, g.service)
	}
	if err := g.clock.sleep(ctx, d); err != nil {
		r.CancelAt(g.clock.Now())
		return fmt.Errorf("%w: %q: %w", ErrRateLimited, g.service, err)
	}
	return nil
}

// through makes an attempt run to ep through ep's circuit breaker in
// set (the call's: [guard.breakersOf]), and the set's service-wide one
// when there is one, then finishes the pick of ep with the
// attempt's outcome and feeds the latency of a success to the hedge
// delay. It reports false, without calling run, when a breaker refused;
// ep is then done as dropped.
func (g *guard) through(set *breaker.Set, ep *balancer.Endpoint, run func() breaker.Result) bool {
	start := g.clock.Now()
	var result breaker.Result
	var refused error
	if br := set.Get(ep.ID); br == nil {
		result = run()
	} else if svc := set.Service(); svc == nil {
		refused = br.Do(func() breaker.Result { result = run(); return result })
	} else {
		refused = svc.Do(func() breaker.Result {
			if refused = br.Do(func() breaker.Result { result = run(); return result }); refused != nil {
				return breaker.Excluded
			}
			return result
		})
	}
	if refused != nil {
		ep.Done(balancer.Outcome{Result: balancer.Dropped})
		return false
	}
	g.finish(ep, start, result)
	return true
}

// finish accounts the outcome of a call to ep that started at start: the
// balancer's load state and, for a success, the hedge delay's window.
func (g *guard) finish(ep *balancer.Endpoint, start time.Time, result breaker.Result) {
	latency := g.clock.Now().Sub(start)
	ep.Done(balancer.Outcome{Latency: latency, Result: balancerResult(result)})
	if g.latency != nil && result == breaker.Success {
		g.latency.observe(latency)
	}
}

// record counts the outcome of a call that did not ask the breakers
// first (a stream, whose outcome comes long after it was admitted) with
// ep's breaker in set and the set's service-wide one, and accounts it
// like [guard.finish].
func (g *guard) record(set *breaker.Set, ep *balancer.Endpoint, start time.Time, result breaker.Result) {
	if br := set.Get(ep.ID); br != nil {
		br.Record(result)
	}
	if svc := set.Service(); svc != nil {
		svc.Record(result)
	}
	g.finish(ep, start, result)
}

// breakerState returns the state of ep's breaker in set, "" without
// one.
func breakerState(set *breaker.Set, ep *balancer.Endpoint) string {
	if br := set.Get(ep.ID); br != nil {
		return br.State().String()
	}
	return ""
}

// backoff returns the wait before retry number n (1 for the first retry).
func (p *RetryPolicy) backoff(n int) time.Duration {
	d := p.Backoff << min(n-1, 30)
	if d <= 0 || d > p.MaxBackoff {
		d = p.MaxBackoff
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}

// roomFor reports whether a retry may wait wait: no longer than the cap
// ([WithMaxRetryWait]), so that a server cannot park a caller, and with
// at least minRemaining left before ctx's deadline afterwards.
func (g *guard) roomFor(ctx context.Context, wait, minRemaining time.Duration) bool {
	if wait > g.maxWait {
		return false
	}
	dl, ok := ctx.Deadline()
	if !ok {
		return true
	}
	return time.Until(dl)-wait >= minRemaining
}

func balancerResult(r breaker.Result) balancer.Result {
	switch r {
	case breaker.Success:
		return balancer.Success
	case breaker.Failure:
		return balancer.Failure
	}
	return balancer.Dropped
}

// idempotentHTTP reports whether an HTTP method is idempotent.
func idempotentHTTP(method string) bool {
	switch method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// grpcError is an error that gRPC reports with code and that wraps err,
// so both status.Code and errors.Is work on it.
type grpcError struct {
	code codes.Code
	err  error
}

func (e *grpcError) Error() string { return e.err.Error() }
func (e *grpcError) Unwrap() error { return e.err }
func (e *grpcError) GRPCStatus() *status.Status {
	return status.New(e.code, e.err.Error())
}
