package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/route"
)

// The call engine: every client call, HTTP or gRPC, unary or stream,
// goes through the steps below, each written once. What differs between
// the protocols is an [exchange], the protocol adapter of one call.
//
//	admit → pick → breaker → send → classify → retry or hedge → record

// exchange is the protocol adapter of one unary call (an HTTP request,
// a gRPC unary call): what the engine needs to know of the call and do
// with it. send may run for two attempts at once (a hedge); the other
// methods are called from the call's goroutine.
type exchange interface {
	// balancerInfo describes the call to the balancer.
	balancerInfo(ctx context.Context) balancer.Info
	// send makes attempt a to a.ep with the attempt's context actx, and
	// records in a what came of it: err or the answer, a.sent, a.retry,
	// a.pushback. It classifies the outcome into a.result.
	send(actx context.Context, a *attempt)
	// discard releases what an attempt holds that is not the call's
	// answer (a response body).
	discard(a *attempt)
	// keep makes a, the call's last attempt, its outcome: what the
	// caller sees is a's. cancel, when not nil, ends the attempt's
	// context; keep calls it when the caller is done with the answer
	// (HTTP: the body is closed), or at once.
	keep(a *attempt, cancel context.CancelFunc)
}

// callSpec is what the engine knows of a call beyond its exchange.
type callSpec struct {
	// route is the URL path (HTTP) or full method name (gRPC), for
	// [HedgePolicy.Route] and [WithIdempotent].
	route string
	// idempotent: the call may be sent more than once (retried after it
	// may have reached a server, or hedged).
	idempotent bool
	// replayable: the request can be sent again (its body can be
	// replayed).
	replayable bool
	// skip rules endpoints out for the call: open breakers (the guard's
	// skipOpen) and, for gRPC, endpoints without a ready connection. Nil
	// rules nothing out.
	skip func(*balancer.Endpoint) bool
	// brk is the breaker set of the call's destination when its route
	// policy has a breaker block; nil: the client's (the guard's).
	brk *destBreakers
	// concurrent: two attempts may run side by side (the exchange can
	// give each its own memory), which hedging needs.
	concurrent bool
	// balancer picks the call's endpoints: the service's, or a subset's
	// when a route sends the call to one.
	balancer *balancer.Balancer
	// retry and hedge are the call's policies: the client's for the
	// service, or its route's; nil for none.
	retry *RetryPolicy
	hedge *HedgePolicy
	// retryOn, when not nil, says which outcomes are retried, in place of
	// the defaults: a route's retry conditions. Calls of such a route
	// are retried whatever their method: the route says they may be.
	retryOn *route.RetryOn
	// pool is the connection-pool limit of the call's destination; nil
	// for none.
	pool *poolLimit
	// ownConn: the call holds a connection of its own while in flight
	// (HTTP/1.1), so the pool's MaxConnections bounds it.
	ownConn bool
	// failover lists, in order, where the call goes when balancer has no
	// endpoint to give: a route destination's failover targets, which
	// failTo resolves for the call's protocol. Nil for none.
	failover []*route.Destination
	failTo   func(*route.Destination) (*failoverTarget, error)
}

// attempt is one attempt of a call: the endpoint it went to and what
// came of it.
type attempt struct {
	n    int                // 1 for the first attempt of the call
	ep   *balancer.Endpoint // nil when none was picked
	via  *failoverTarget    // where ep is when a failover target gave it; nil for the call's own
	set  *breaker.Set       // the breakers ep's attempt goes through; nil for none
	err  error
	sent bool // the request may have reached the server
	// unsent: the attempt found no connection to its endpoint ready and
	// sent nothing (gRPC), so another endpoint may take it at once.
	unsent bool
	// retry: the outcome may be worth another try (a transport error, a
	// retryable status or code).
	retry bool
	// good: an answer to return at once, with no retry or hedge.
	good bool
	// own: the attempt receives into memory of its own (a hedge), which
	// the exchange copies to the caller's only for the winner.
	own bool
	// pushback is the wait the server asked for before a retry; negative
	// when it asked for none at all.
	pushback    time.Duration
	hasPushback bool
	result      breaker.Result

	resp *http.Response // HTTP: the response
	grpc *grpcAttempt   // gRPC: what a hedged attempt received
	code codes.Code     // gRPC: the status code
}

// do runs one unary call through the engine: the client's admission
// (rate limit, budget), then attempts — one, or more when retries or
// hedging are on — until one gives an answer worth returning, the policy
// or the budget says stop, or ctx ends. It fills a, storage of the
// exchange's, with the call's outcome, which it has kept
// ([exchange.keep]).
func (cl *cluster) do(ctx context.Context, ex exchange, spec callSpec, a *attempt) {
	g := cl.guard
	done, err := cl.admit(ctx, &spec)
	if err != nil {
		*a = attempt{err: err}
		return
	}
	if spec.retry == nil && spec.hedge == nil {
		cl.attempt(ctx, ctx, ex, spec, 1, nil, a)
		ex.keep(a, done)
		return
	}
	pol := spec.retry
	maxAttempts := 1
	if pol != nil {
		maxAttempts = pol.MaxAttempts
	}
	hedge := spec.hedge != nil && spec.idempotent && spec.replayable && spec.concurrent &&
		(spec.hedge.Route == nil || spec.hedge.Route(cl.service, spec.route))
	var tried []*balancer.Endpoint // allocated on the first retry only
	for n := 1; ; n++ {
		var cancel context.CancelFunc
		switch {
		case hedge:
			cancel = cl.hedged(ctx, ex, spec, n, tried, a)
		case pol != nil && pol.PerTryTimeout > 0:
			var actx context.Context
			actx, cancel = g.clock.withTimeout(ctx, pol.PerTryTimeout)
			cl.attempt(ctx, actx, ex, spec, n, tried, a)
		default:
			cl.attempt(ctx, ctx, ex, spec, n, tried, a)
		}
		if pol == nil || n >= maxAttempts || !retryable(ctx, a, spec) {
			ex.keep(a, both(cancel, done))
			return
		}
		wait := pol.backoff(n)
		if a.hasPushback {
			wait = max(wait, a.pushback)
		}
		if !g.roomFor(ctx, wait, pol.MinRemaining) || !cl.retryAllowed(ctx) {
			ex.keep(a, both(cancel, done))
			return
		}
		ex.discard(a)
		release(cancel)
		if err := g.clock.sleep(ctx, wait); err != nil {
			release(done)
			*a = attempt{err: fmt.Errorf("mesh: %q: waiting to retry: %w", cl.service, err)}
			return
		}
		if a.ep != nil {
			tried = append(tried, a.ep)
		}
	}
}

// errHedgeLost is the cause of the cancellation of a hedged call's
// attempt that lost.
var errHedgeLost = errors.New("mesh: another attempt of the call answered first")

// release calls cancel, when not nil.
func release(cancel context.CancelFunc) {
	if cancel != nil {
		cancel()
	}
}

// retryable reports whether attempt a of a call may be tried again.
// Anything that may have reached the server is tried again only when
// the call is idempotent; what provably did not (no connection, a
// refused dial) always may be, when the request can be replayed.
func retryable(ctx context.Context, a *attempt, spec callSpec) bool {
	if !spec.replayable || ctx.Err() != nil || errors.Is(a.err, ErrCircuitOpen) || a.ep == nil {
		return false
	}
	if a.hasPushback && a.pushback < 0 {
		return false // the server said not to
	}
	if on := spec.retryOn; on != nil {
		switch {
		case !a.sent:
			return on.ConnectFailure
		case a.grpc != nil || a.code != codes.OK:
			return on.GRPCCode(a.code)
		case a.resp != nil:
			return on.HTTPStatus(a.resp.StatusCode)
		}
		return on.Reset // a transport error once sent
	}
	if !a.sent {
		return true
	}
	return spec.idempotent && a.retry
}

// attempt makes one attempt of a call, into a: a pick among the
// endpoints that neither skip rules out nor tried holds (when there is
// one), through the endpoint's circuit breaker. ctx is the call's
// context, actx the attempt's. It makes no network I/O when no endpoint
// is available.
func (cl *cluster) attempt(ctx, actx context.Context, ex exchange, spec callSpec, n int, tried []*balancer.Endpoint, a *attempt) {
	ep, via, err := cl.pick(ex.balancerInfo(ctx), spec, tried, nil)
	if err != nil {
		*a = attempt{n: n, err: err}
		return
	}
	cl.attemptTo(ctx, actx, ex, spec, n, ep, via, tried, false, a)
}

// attemptTo is [cluster.attempt] with the endpoint picked (in via, a
// failover target, when not nil): when ep's breaker refuses, or ep had
// no ready connection when the attempt was sent, it picks again (up to
// twice), avoiding the endpoints that refused. own says the
// attempt receives into memory of its own.
func (cl *cluster) attemptTo(ctx, actx context.Context, ex exchange, spec callSpec, n int, ep *balancer.Endpoint, via *failoverTarget, tried []*balancer.Endpoint, own bool, a *attempt) {
	var refused []*balancer.Endpoint
	for i := 0; ; i++ {
		g, set := cl.guard, cl.guard.breakersOf(spec.brk)
		if via != nil {
			// The endpoint's breakers are its cluster's, or its
			// destination's.
			g, set = via.cl.guard, via.cl.guard.breakersOf(via.brk)
		}
		*a = attempt{n: n, ep: ep, via: via, own: own, set: set}
		if g.through(set, ep, func() breaker.Result {
			ex.send(actx, a)
			if context.Cause(actx) == errHedgeLost {
				// Cancelled by weft: nothing to learn of the endpoint.
				a.result = breaker.Excluded
			}
			return a.result
		}) {
			if !a.unsent || i == 2 || ctx.Err() != nil {
				return
			}
			// ep's connection went away between the pick and the send
			// (discovery removed it, or it failed): nothing was sent, so
			// another endpoint takes the attempt, retry policy or not.
		} else if svc := set.Service(); i == 2 || (svc != nil && svc.Open()) {
			break
		}
		refused = append(refused, ep)
		var err error
		if ep, via, err = cl.pick(ex.balancerInfo(ctx), spec, tried, refused); err != nil {
			*a = attempt{n: n, err: err}
			return
		}
	}
	*a = attempt{n: n, err: fmt.Errorf("mesh: %q: %w", cl.service, ErrCircuitOpen)}
}

// pick is the one pick site of the client: it asks the service's
// balancer for an endpoint that spec.skip does not rule out (an open
// breaker, no ready connection) and, when another one is available,
// that is neither in tried nor in refused. When the balancer has none to
// give — no endpoint at all, or every one ruled out or ejected — it asks
// the call's failover targets in order ([pickFailover]) and returns the
// endpoint with the target that gave it; via is nil for the call's own.
func (cl *cluster) pick(info balancer.Info, spec callSpec, tried, refused []*balancer.Endpoint) (ep *balancer.Endpoint, via *failoverTarget, err error) {
	info.NoPanic = len(spec.failover) > 0 // ejected endpoints fail over
	ep, err = pickFrom(spec.balancer, info, spec.skip, tried, refused)
	if err != nil && len(spec.failover) > 0 && (errors.Is(err, balancer.ErrNoEndpoints) || errors.Is(err, balancer.ErrAllSkipped)) {
		var ferr error
		if ep, via, ferr = pickFailover(info, spec, tried, refused); ep != nil {
			return ep, via, nil
		}
		if ferr != nil {
			return nil, nil, fmt.Errorf("mesh: %q: %w; failover: %w", cl.service, primaryErr(err), ferr)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("mesh: %q: %w", cl.service, primaryErr(err))
	}
	return ep, nil, nil
}

// primaryErr is the error of a pick that found nothing: ErrCircuitOpen
// when every endpoint was ruled out.
func primaryErr(err error) error {
	if errors.Is(err, balancer.ErrAllSkipped) {
		return ErrCircuitOpen
	}
	return err
}

// pickFrom picks from bal an endpoint that skip does not rule out and,
// when another one is available, that is neither in tried nor in
// refused.
func pickFrom(bal *balancer.Balancer, info balancer.Info, skip func(*balancer.Endpoint) bool, tried, refused []*balancer.Endpoint) (*balancer.Endpoint, error) {
	info.Skip = skipping(skip, tried, refused)
	ep, err := bal.Pick(info)
	if errors.Is(err, balancer.ErrAllSkipped) && len(tried) > 0 {
		// Every other endpoint was tried: a retry may go back to one.
		info.Skip = skipping(skip, nil, refused)
		ep, err = bal.Pick(info)
	}
	return ep, err
}

// skipping returns the skip function that rules out what skip, tried and
// refused rule out: skip itself when tried and refused are empty.
func skipping(skip func(*balancer.Endpoint) bool, tried, refused []*balancer.Endpoint) func(*balancer.Endpoint) bool {
	if len(tried) == 0 && len(refused) == 0 {
		return skip
	}
	return func(e *balancer.Endpoint) bool {
		return (skip != nil && skip(e)) || holds(tried, e) || holds(refused, e)
	}
}

// hedged is one hedged attempt of a call: an attempt goes to an
// endpoint and, when no good answer came within the hedge delay, a
// second one to another endpoint (budget permitting). The first good
// answer wins; the other attempt is cancelled, and what it receives is
// its own, never the caller's. No hedge starts once an answer is in.
// When both fail, the last failure is the outcome. It fills a with the
// winner and returns the cancel function of the winner's context.
func (cl *cluster) hedged(ctx context.Context, ex exchange, spec callSpec, n int, tried []*balancer.Endpoint, a *attempt) context.CancelFunc {
	g := cl.guard
	first, via, err := cl.pick(ex.balancerInfo(ctx), spec, tried, nil)
	if err != nil {
		*a = attempt{n: n, err: err}
		return nil
	}
	type result struct {
		a      attempt
		idx    int
		cancel context.CancelFunc
	}
	results := make(chan result, 2)
	var cancels [2]context.CancelCauseFunc
	launch := func(i int, ep *balancer.Endpoint, via *failoverTarget) {
		actx, cancel := context.WithCancelCause(ctx)
		cancels[i] = cancel
		go func() {
			var a attempt
			cl.attemptTo(ctx, actx, ex, spec, n+i, ep, via, tried, true, &a)
			results <- result{a: a, idx: i, cancel: func() { cancel(context.Canceled) }}
		}()
	}
	launch(0, first, via)
	pending := 1
	timer, stop := g.clock.timer(g.hedgeDelay(spec.hedge))
	defer func() { stop() }()
	var last *result
	finish := func(res result) context.CancelFunc {
		if pending > 0 {
			// The loser is cancelled; what it gets is dropped when it
			// returns.
			for i, c := range cancels {
				if c != nil && i != res.idx {
					c(errHedgeLost)
				}
			}
			go func(k int) {
				for range k {
					lr := <-results
					ex.discard(&lr.a)
					lr.cancel()
				}
			}(pending)
		}
		if last != nil {
			ex.discard(&last.a)
			last.cancel()
		}
		*a = res.a
		return res.cancel
	}
	for {
		select {
		case res := <-results:
			pending--
			if res.a.good || pending == 0 {
				return finish(res)
			}
			if last != nil {
				ex.discard(&last.a)
				last.cancel()
			}
			last = &res
		case <-timer:
			timer = nil
			// A result that came in with the timer wins over the hedge.
			select {
			case res := <-results:
				pending--
				if res.a.good || pending == 0 {
					return finish(res)
				}
				last = &res
			default:
			}
			if pending == 0 {
				continue
			}
			// A hedge goes to another endpoint than the first attempt's
			// (and a retry's tried ones); while there is none to go to,
			// the hedge waits another delay.
			info := ex.balancerInfo(ctx)
			info.Skip = skipping(spec.skip, append(slices.Clip(tried), first), nil)
			ep, err := spec.balancer.Pick(info)
			if err != nil {
				stop()
				timer, stop = g.clock.timer(g.hedgeDelay(spec.hedge))
				continue
			}
			if !cl.retryAllowed(ctx) {
				ep.Done(balancer.Outcome{Result: balancer.Dropped})
				continue
			}
			launch(1, ep, nil)
			pending++
		}
	}
}

// holds reports whether eps holds an endpoint with e's ID.
func holds(eps []*balancer.Endpoint, e *balancer.Endpoint) bool {
	for _, t := range eps {
		if t.ID == e.ID {
			return true
		}
	}
	return false
}

// retryAllowed asks the retry budget for a retry or a hedge and records
// a refusal (weft.retry.budget_exhausted, and an event on the call's
// span, which ctx carries).
func (cl *cluster) retryAllowed(ctx context.Context) bool {
	if cl.guard.budget.TryRetry(cl.guard.clock.Now()) {
		return true
	}
	cl.tel.Telemetry().RetryBudgetExhausted(ctx, cl.service)
	return false
}
