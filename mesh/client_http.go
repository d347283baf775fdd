package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/route"
)

// RoundTrip implements [http.RoundTripper]: it sends r to an endpoint of
// the service named by r.URL's host, through the call engine (admission,
// pick, breakers, retries and hedges as configured). r is not modified.
//
// A response with a 5xx status (other than 501) is returned as is but
// counts as a failure of the endpoint that gave it.
func (c *Client) RoundTrip(r *http.Request) (*http.Response, error) {
	service := r.URL.Hostname()
	cl, err := c.cluster(service)
	if err != nil {
		closeBody(r)
		return nil, err
	}
	if c.cfg.routes != nil {
		req := route.Request{Method: r.Method, Path: NormalizePath(r.URL.Path), RawQuery: r.URL.RawQuery, Header: r.Header}
		if dec := c.cfg.routes.Table().Match(service, &req, rand.Uint64()); dec.Rule != nil {
			return c.routeHTTP(r, dec)
		}
	}
	if err := cl.waitReady(r.Context()); err != nil {
		closeBody(r)
		return nil, err
	}
	return cl.roundTrip(r.Context(), r, nil, cl.spec(cl.balancer, cl.guard.retry, cl.guard.hedge))
}

// roundTrip runs one HTTP call of r to cl through the engine, under ctx
// (r's context, or one a route bounds); dec is the route that sent it
// there, nil for none.
func (cl *cluster) roundTrip(ctx context.Context, r *http.Request, dec *route.Decision, spec callSpec) (*http.Response, error) {
	ctx, call := cl.tel.StartHTTP(ctx, r)
	g := cl.guard
	x := &httpExchange{cl: cl, r: r, call: call, ctx: ctx, dec: dec}
	spec.route, spec.concurrent, spec.ownConn = r.URL.Path, true, true
	if spec.retry != nil || spec.hedge != nil {
		maxBody := int64(DefaultMaxRetryBody)
		if spec.retry != nil {
			maxBody = spec.retry.MaxBodyBytes
		}
		spec.idempotent = g.idempotentCall(r.Method, r.URL.Path, false)
		spec.replayable = canReplay(r, maxBody)
	}
	a := &x.outcome
	cl.do(ctx, x, spec, a)
	if !x.bodyUsed.Load() {
		closeBody(r) // no attempt took the caller's body
	}
	call.EndHTTP(a.resp, a.err)
	observeRejection(cl.tel, ctx, a.err)
	return a.resp, a.err
}

// httpExchange is the HTTP adapter of the call engine: one request.
type httpExchange struct {
	cl       *cluster
	r        *http.Request // the caller's; never modified
	call     *calltel.Call
	ctx      context.Context // the call's
	dec      *route.Decision // the route of the call; nil for none
	bodyUsed atomic.Bool     // an attempt took r.Body (later ones replay it)
	outcome  attempt         // the call's outcome, filled by the engine
}

func (x *httpExchange) balancerInfo(ctx context.Context) balancer.Info {
	return balancer.Info{Context: ctx, HTTP: x.r}
}

// send sends a copy of the request — the one copy an attempt makes,
// carrying the attempt's context and the endpoint's address — to a.ep.
func (x *httpExchange) send(actx context.Context, a *attempt) {
	cl, r := x.cl, x.r
	if a.via != nil {
		cl = a.via.cl // a failover target's endpoint
	}
	out := r.WithContext(actx)
	if r.Body != nil && r.Body != http.NoBody && x.bodyUsed.Swap(true) {
		body, err := r.GetBody()
		if err != nil {
			a.err = fmt.Errorf("mesh: replaying request body: %w", err)
			return
		}
		out.Body = body
	}
	u := *r.URL
	u.Scheme = cl.scheme
	u.Host = a.ep.Addr
	out.URL = &u
	if out.Host == "" {
		out.Host = r.URL.Host
	}
	if x.dec != nil {
		routeRequest(x.dec, out)
	}
	if _, att := cl.startAttempt(x.call, actx, out, a.ep, a.set); att != nil {
		// The attempt's trace context goes out in a copy of the headers,
		// made only when there is one to add; the caller's stay untouched.
		out.Header = att.InjectHTTP(out.Header)
		a.resp, a.err = roundTrip(cl.transport, out)
		att.EndHTTP(a.resp, a.err)
	} else {
		a.resp, a.err = roundTrip(cl.transport, out)
	}
	if x.dec != nil && a.resp != nil {
		x.dec.Rule.Response.ApplyHTTP(a.resp.Header)
		x.dec.Target.Response.ApplyHTTP(a.resp.Header)
	}
	a.result = cl.guard.classifyHTTP(x.ctx, a.resp, a.err)
	a.sent = a.err == nil || !isDialError(a.err)
	if a.err != nil {
		a.retry = true
		return
	}
	a.retry = retryableStatus(a.resp.StatusCode)
	a.good = !a.retry
	a.pushback, a.hasPushback = retryAfter(a.resp, cl.guard.clock.Now())
}

func (x *httpExchange) discard(a *attempt) { discard(a.resp) }

// keep hands the response to the caller; the attempt's context lives
// until its body is closed.
func (x *httpExchange) keep(a *attempt, cancel context.CancelFunc) {
	if cancel == nil {
		return
	}
	if a.resp == nil {
		cancel()
		return
	}
	a.resp.Body = &cancelBody{ReadCloser: a.resp.Body, cancel: cancel}
}

// roundTrip sends out with t. An answer that comes back once out's
// context has ended is dropped for the context's error: net/http can
// return the answer a server gave because the request was cancelled
// (its handler saw the cancellation and returned), and a call past its
// deadline or cancelled must not look like a success.
func roundTrip(t http.RoundTripper, out *http.Request) (*http.Response, error) {
	resp, err := t.RoundTrip(out)
	if err == nil && out.Context().Err() != nil {
		discard(resp)
		return nil, fmt.Errorf("mesh: %w", context.Cause(out.Context()))
	}
	return resp, err
}

// waitReady waits until the cluster has heard from discovery once, or ctx
// ends.
func (cl *cluster) waitReady(ctx context.Context) error {
	select {
	case <-cl.ready:
		return nil
	default:
	}
	select {
	case <-cl.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("mesh: waiting for endpoints of %q: %w", cl.service, context.Cause(ctx))
	}
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

// retryAfter returns the wait a 429 or 503 answer asks for with
// Retry-After (seconds, or an HTTP date read against now).
func retryAfter(resp *http.Response, now time.Time) (time.Duration, bool) {
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
		return max(t.Sub(now), 0), true
	}
	return 0, false
}

// maxRetryAfterSeconds bounds a Retry-After wait (a year) before it is
// turned into a duration; [WithMaxRetryWait] bounds what a call waits.
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

// cancelBody cancels an attempt's context when the body is first
// closed: cancel may also end the call's hold on its destination's
// connection pool, which must happen once.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
	closed atomic.Bool
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	if !b.closed.Swap(true) {
		b.cancel()
	}
	return err
}
