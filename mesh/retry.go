package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
)

// attemptResult is what one attempt came to.
type attemptResult struct {
	resp   *http.Response
	err    error
	ep     *balancer.Endpoint // the endpoint tried; nil when none was
	result breaker.Result
	sent   bool // the request may have left the process
}

// call is one logical HTTP call to cl's service: the client rate limit,
// then attempts — one, or more when retries or hedging are on — until one
// gives an answer worth returning, the policy or the budget says stop, or
// ctx ends. ctx is the call's context: r's own, or one derived from it
// (by telemetry). r is not modified.
func (cl *cluster) call(ctx context.Context, r *http.Request) (*http.Response, error) {
	g := cl.guard
	if g.limiter != nil || g.budget != nil {
		now := g.now()
		if err := g.admit(ctx, now); err != nil {
			closeBody(r)
			return nil, err
		}
		if g.budget != nil {
			g.budget.Request(now)
		}
	}
	if g.retry == nil && g.hedge == nil {
		a := cl.attempt(ctx, ctx, r, g.skipOpen, nil)
		return a.resp, a.err
	}

	pol := g.retry
	idempotent := idempotentHTTP(r.Method)
	maxBody, maxAttempts := int64(DefaultMaxRetryBody), 1
	if pol != nil {
		maxBody, maxAttempts = pol.MaxBodyBytes, pol.MaxAttempts
	}
	replayable := canReplay(r, maxBody)
	hedge := g.hedge != nil && idempotent && replayable &&
		(g.hedge.Route == nil || g.hedge.Route(cl.service, r.URL.Path))
	var tried []*balancer.Endpoint // allocated on the first retry only
	req := r
	for n := 1; ; n++ {
		var a attemptResult
		switch {
		case hedge:
			a = cl.hedged(ctx, req, r, tried)
		case pol != nil && pol.PerTryTimeout > 0:
			actx, cancel := context.WithTimeout(ctx, pol.PerTryTimeout)
			a = cl.attempt(ctx, actx, req, g.skipOpen, tried)
			if a.resp != nil {
				a.resp.Body = &cancelBody{ReadCloser: a.resp.Body, cancel: cancel}
			} else {
				cancel()
			}
		default:
			a = cl.attempt(ctx, ctx, req, g.skipOpen, tried)
		}
		if pol == nil || n >= maxAttempts || !shouldRetryHTTP(ctx, a, idempotent, replayable) {
			return a.resp, a.err
		}
		wait := pol.backoff(n)
		if ra, ok := retryAfter(a.resp); ok {
			wait = max(wait, ra)
		}
		if !roomFor(ctx, wait, pol.MinRemaining) || !retryAllowed(ctx, g, cl.tel) {
			return a.resp, a.err
		}
		discard(a.resp)
		if err := waitRetry(ctx, wait); err != nil {
			return nil, fmt.Errorf("mesh: %q: waiting to retry: %w", cl.service, err)
		}
		if a.ep != nil {
			tried = append(tried, a.ep)
		}
		var err error
		if req, err = replay(r); err != nil {
			return nil, err
		}
	}
}

// attempt sends r to one endpoint of the service: picked by the balancer
// among those skip does not rule out (open breakers) and, when there is
// one, not in tried. ctx is the call's context, which judges outcomes;
// actx is the attempt's own (ctx, or one derived from it). It makes no
// network I/O when no endpoint is available.
func (cl *cluster) attempt(ctx, actx context.Context, r *http.Request, skip func(*balancer.Endpoint) bool, tried []*balancer.Endpoint) attemptResult {
	g := cl.guard
	var refused []*balancer.Endpoint // endpoints whose half-open breaker refused
	for range 3 {
		s := skip
		if len(tried) > 0 || len(refused) > 0 {
			s = skipping(skip, tried, refused)
		}
		ep, err := cl.balancer.Pick(balancer.Info{Context: ctx, HTTP: r, Skip: s})
		if errors.Is(err, balancer.ErrAllSkipped) && len(tried) > 0 {
			// Every other endpoint was tried: a retry may go back to one.
			tried = nil
			continue
		}
		if err != nil {
			closeBody(r)
			if errors.Is(err, balancer.ErrAllSkipped) {
				err = ErrCircuitOpen
			}
			return attemptResult{err: fmt.Errorf("mesh: %q: %w", cl.service, err)}
		}
		a, admitted := cl.send(ctx, actx, r, ep)
		if admitted {
			return a
		}
		if svc := g.breakers.Service(); svc != nil && svc.Open() {
			break
		}
		refused = append(refused, ep)
	}
	closeBody(r)
	return attemptResult{err: fmt.Errorf("mesh: %q: %w", cl.service, ErrCircuitOpen)}
}

// send sends r to ep through ep's circuit breaker, as a copy of r that
// carries the attempt's context actx; ctx is the call's. It reports false,
// and does no I/O, when a breaker refused the call; ep is then done.
func (cl *cluster) send(ctx, actx context.Context, r *http.Request, ep *balancer.Endpoint) (a attemptResult, admitted bool) {
	g := cl.guard
	start := time.Now()
	out := r.WithContext(actx) // the one copy of r an attempt makes
	u := *r.URL
	u.Scheme = cl.scheme
	u.Host = ep.Addr
	out.URL = &u
	if out.Host == "" {
		out.Host = r.URL.Host
	}
	a.ep = ep
	run := func() breaker.Result {
		a.resp, a.err = cl.roundTrip(out, ep)
		a.result = g.classifyHTTP(ctx, a.resp, a.err)
		return a.result
	}
	if !g.through(ep, start, run) {
		return a, false
	}
	a.sent = a.err == nil || !isDialError(a.err)
	return a, true
}

// through makes the attempt run to ep through ep's circuit breaker, and
// the service's when there is one, then finishes the pick of ep with the
// attempt's outcome and feeds the latency of a success to the hedge delay.
// It reports false, without calling run, when a breaker refused; ep is
// then done as dropped.
func (g *guard) through(ep *balancer.Endpoint, start time.Time, run func() breaker.Result) bool {
	var result breaker.Result
	var refused error
	if br := g.breakers.Get(ep.ID); br == nil {
		result = run()
	} else if svc := g.breakers.Service(); svc == nil {
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
	latency := time.Since(start)
	ep.Done(balancer.Outcome{Latency: latency, Result: balancerResult(result)})
	if g.latency != nil && result == breaker.Success {
		g.latency.observe(latency)
	}
	return true
}

// skipping returns a skip function that also rules out the endpoints of
// tried and refused.
func skipping(skip func(*balancer.Endpoint) bool, tried, refused []*balancer.Endpoint) func(*balancer.Endpoint) bool {
	return func(e *balancer.Endpoint) bool {
		if skip != nil && skip(e) {
			return true
		}
		for _, t := range tried {
			if t.ID == e.ID {
				return true
			}
		}
		for _, t := range refused {
			if t.ID == e.ID {
				return true
			}
		}
		return false
	}
}

// shouldRetryHTTP reports whether attempt a of a call may be retried.
func shouldRetryHTTP(ctx context.Context, a attemptResult, idempotent, replayable bool) bool {
	if !replayable || ctx.Err() != nil || errors.Is(a.err, ErrCircuitOpen) {
		return false
	}
	if a.err != nil {
		return a.ep != nil && (idempotent || !a.sent)
	}
	return idempotent && retryableStatus(a.resp.StatusCode)
}

func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// isDialError reports whether err happened while connecting, before any
// byte of the request was written.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// canReplay reports whether r's body can be sent again.
func canReplay(r *http.Request, maxBody int64) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	return r.GetBody != nil && r.ContentLength >= 0 && r.ContentLength <= maxBody
}

// replay returns a shallow copy of r with a fresh body.
func replay(r *http.Request) (*http.Request, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return r, nil
	}
	body, err := r.GetBody()
	if err != nil {
		return nil, fmt.Errorf("mesh: replaying request body: %w", err)
	}
	out := *r
	out.Body = body
	return &out, nil
}

// retryAfter returns the wait a 429 or 503 answer asks for with
// Retry-After (seconds or an HTTP date).
func retryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil {
		return 0, false
	}
	v := resp.Header.Get("Retry-After")
	if v == "" {
		return 0, false
	}
	if s, err := strconv.ParseInt(v, 10, 64); err == nil && s >= 0 {
		// Clamp, so a huge value cannot overflow into a negative wait.
		return time.Duration(min(s, maxRetryAfterSeconds)) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0), true
	}
	return 0, false
}

// maxRetryAfterSeconds bounds a Retry-After wait (a year).
const maxRetryAfterSeconds = 365 * 24 * 3600

// discard drains a little of resp's body, so the connection can be
// reused, and closes it.
func discard(resp *http.Response) {
	if resp == nil {
		return
	}
	_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
	_ = resp.Body.Close()
}

// cancelBody cancels an attempt's context when the body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
