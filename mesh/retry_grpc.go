package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
)

// pinKey is the context key under which the unary interceptor passes an
// attempt's chosen endpoint to the connection's picker. It carries the
// routing of one attempt between two parts of weft, not configuration.
type pinKey struct{}

// grpcPin is the endpoint chosen for one gRPC attempt. With ep nil, the
// connection's picker chooses, avoiding tried when it can, and records
// its choice in picked.
type grpcPin struct {
	ep       *balancer.Endpoint
	tried    []*balancer.Endpoint
	picked   atomic.Pointer[balancer.Endpoint]
	notReady atomic.Bool // the picker had no ready connection to ep: nothing was sent
}

// grpcAttemptResult is what one gRPC attempt came to.
type grpcAttemptResult struct {
	err         error
	ep          *balancer.Endpoint // nil when none was picked by weft
	result      breaker.Result
	made        bool          // the call was handed to gRPC (false: no endpoint to pick)
	sent        bool          // the call may have left the process
	pushback    time.Duration // the server's retry pushback
	hasPushback bool
}

// unary is the unary client interceptor that [Client.DialGRPC] installs:
// one logical call — the client rate limit, then attempts (retries of
// idempotent methods, hedges) each pinned to an endpoint chosen here,
// through its circuit breaker — until one succeeds, the policy or the
// budget says stop, or the caller's context ends. The caller's deadline
// bounds every attempt and gRPC propagates it on the wire.
func (gc *grpcCluster) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	g := gc.guard
	if g.limiter != nil || g.budget != nil {
		now := g.now()
		if err := g.admit(ctx, now); err != nil {
			return &grpcError{code: codes.ResourceExhausted, err: err}
		}
		if g.budget != nil {
			g.budget.Request(now)
		}
	}
	pol := g.retry
	idempotent := pol != nil && pol.IdempotentMethod != nil && pol.IdempotentMethod(method)
	maxAttempts := 1
	if pol != nil {
		maxAttempts = pol.MaxAttempts
	}
	msg, isProto := reply.(proto.Message)
	hedge := g.hedge != nil && isProto && idempotent &&
		(g.hedge.Route == nil || g.hedge.Route(gc.service, method))
	var tried []*balancer.Endpoint
	for n := 1; ; n++ {
		var a grpcAttemptResult
		if hedge {
			a = gc.hedgedGRPC(ctx, method, req, msg, cc, invoker, tried, opts)
		} else {
			a = gc.attemptGRPC(ctx, method, req, reply, cc, invoker, tried, opts)
		}
		if a.err == nil || pol == nil || n >= maxAttempts || !shouldRetryGRPC(ctx, a, idempotent) {
			return a.err
		}
		wait := pol.backoff(n)
		if a.hasPushback {
			if a.pushback < 0 {
				return a.err
			}
			wait = max(wait, a.pushback)
		}
		if !roomFor(ctx, wait, pol.MinRemaining) || !retryAllowed(ctx, g, gc.tel) {
			return a.err
		}
		if err := waitRetry(ctx, wait); err != nil {
			return status.FromContextError(err).Err()
		}
		if a.ep != nil {
			tried = append(tried, a.ep)
		}
	}
}

// attemptGRPC makes one attempt of a unary call, pinned to an endpoint
// that is not tried (when there is one) and whose breaker is not open.
// ctx is the caller's context.
func (gc *grpcCluster) attemptGRPC(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, tried []*balancer.Endpoint, opts []grpc.CallOption) grpcAttemptResult {
	actx := ctx
	if pol := gc.guard.retry; pol != nil && pol.PerTryTimeout > 0 {
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeout(ctx, pol.PerTryTimeout)
		defer cancel()
	}
	var refused []*balancer.Endpoint
	for range 3 {
		ep, err := gc.pickGRPC(ctx, method, tried, refused)
		if errors.Is(err, balancer.ErrNoEndpoints) {
			// No connection is ready yet (the channel was idle).
			return gc.unpinnedGRPC(ctx, actx, method, req, reply, cc, invoker, tried, opts)
		}
		if err != nil {
			return grpcAttemptResult{err: &grpcError{code: codes.Unavailable, err: err}}
		}
		a, admitted := gc.sendGRPC(ctx, actx, method, req, reply, cc, invoker, ep, opts)
		if admitted && !a.sent {
			// ep has no ready connection: it is leaving the set, or not
			// connected yet. Nothing was sent, so the call is not a retry.
			return gc.unpinnedGRPC(ctx, actx, method, req, reply, cc, invoker, tried, opts)
		}
		if admitted {
			return a
		}
		if svc := gc.guard.breakers.Service(); svc != nil && svc.Open() {
			break
		}
		refused = append(refused, ep)
	}
	return grpcAttemptResult{err: &grpcError{code: codes.Unavailable, err: fmt.Errorf("mesh: %q: %w", gc.service, ErrCircuitOpen)}}
}

// unpinnedGRPC makes one attempt of a unary call without choosing its
// endpoint here: the connection's picker chooses among the ready
// connections, once one is ready, and keeps the breakers' and the
// balancer's accounts of the attempt. ctx is the caller's context, actx
// the attempt's.
func (gc *grpcCluster) unpinnedGRPC(ctx, actx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, tried []*balancer.Endpoint, opts []grpc.CallOption) grpcAttemptResult {
	pin := &grpcPin{tried: tried}
	var trailer metadata.MD
	err := invoker(context.WithValue(actx, pinKey{}, pin), method, req, reply, cc, append(slices.Clip(opts), grpc.Trailer(&trailer))...)
	a := grpcAttemptResult{err: err, ep: pin.picked.Load(), made: true, sent: true, result: gc.guard.classifyGRPC(ctx, err)}
	a.pushback, a.hasPushback = pushback(trailer)
	return a
}

// pickGRPC picks the endpoint of an attempt.
func (gc *grpcCluster) pickGRPC(ctx context.Context, method string, tried, refused []*balancer.Endpoint) (*balancer.Endpoint, error) {
	g := gc.guard
	skip := g.skipOpen
	if len(tried) > 0 || len(refused) > 0 {
		skip = skipping(g.skipOpen, tried, refused)
	}
	ep, err := gc.balancer.Pick(balancer.Info{Context: ctx, Method: method, Skip: skip})
	if errors.Is(err, balancer.ErrAllSkipped) && len(tried) > 0 {
		ep, err = gc.balancer.Pick(balancer.Info{Context: ctx, Method: method, Skip: skipping(g.skipOpen, nil, refused)})
	}
	if errors.Is(err, balancer.ErrAllSkipped) {
		return nil, fmt.Errorf("mesh: %q: %w", gc.service, ErrCircuitOpen)
	}
	if err != nil {
		return nil, err
	}
	return ep, nil
}

// sendGRPC sends one attempt to ep through its circuit breaker; actx is
// the attempt's context, ctx the caller's. It reports false, with no I/O,
// when a breaker refused; ep is then done.
func (gc *grpcCluster) sendGRPC(ctx, actx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, ep *balancer.Endpoint, opts []grpc.CallOption) (a grpcAttemptResult, admitted bool) {
	g := gc.guard
	start := time.Now()
	pin := &grpcPin{ep: ep}
	pctx := context.WithValue(actx, pinKey{}, pin)
	var trailer metadata.MD
	if g.retry != nil {
		opts = append(slices.Clip(opts), grpc.Trailer(&trailer))
	}
	a.ep = ep
	run := func() breaker.Result {
		a.err = invoker(pctx, method, req, reply, cc, opts...)
		a.result = g.classifyGRPC(ctx, a.err)
		if pin.notReady.Load() {
			// Nothing reached ep: its breaker and load learn nothing.
			a.result = breaker.Excluded
		}
		return a.result
	}
	if !g.through(ep, start, run) {
		return a, false
	}
	a.made = true
	a.sent = !pin.notReady.Load()
	a.pushback, a.hasPushback = pushback(trailer)
	return a, true
}

// pushback reads the server's retry pushback from a trailer: the wait, or
// a negative duration for "do not retry".
func pushback(trailer metadata.MD) (time.Duration, bool) {
	v := trailer.Get(RetryPushbackKey)
	if len(v) == 0 {
		return 0, false
	}
	if ms, err := strconv.ParseInt(v[0], 10, 64); err == nil && ms >= 0 {
		// Clamp, so a huge value cannot overflow into a negative wait.
		return time.Duration(min(ms, maxRetryAfterSeconds*1000)) * time.Millisecond, true
	}
	return -1, true
}

// shouldRetryGRPC reports whether attempt a may be retried.
func shouldRetryGRPC(ctx context.Context, a grpcAttemptResult, idempotent bool) bool {
	if ctx.Err() != nil || errors.Is(a.err, ErrCircuitOpen) || !a.made {
		return false
	}
	if !a.sent {
		return true
	}
	if !idempotent {
		return false
	}
	switch status.Code(a.err) {
	case codes.Unavailable, codes.ResourceExhausted, codes.Internal, codes.DeadlineExceeded, codes.Aborted:
		return true
	}
	return false
}

// hedgedGRPC is one hedged attempt of a unary call: after the hedge delay
// without a good answer, a second attempt goes to another endpoint; each
// attempt decodes into its own copy of reply, and the winner's is merged
// into reply. The loser is cancelled.
func (gc *grpcCluster) hedgedGRPC(ctx context.Context, method string, req any, reply proto.Message, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, tried []*balancer.Endpoint, opts []grpc.CallOption) grpcAttemptResult {
	g := gc.guard
	type result struct {
		a   grpcAttemptResult
		out proto.Message
	}
	results := make(chan result, 2)
	hctx, cancel := context.WithCancel(ctx)
	defer cancel() // cancels the loser
	launch := func(tried []*balancer.Endpoint) *balancer.Endpoint {
		ep, err := gc.pickGRPC(ctx, method, tried, nil)
		if err != nil {
			return nil
		}
		out := reply.ProtoReflect().New().Interface()
		actx, acancel := context.WithCancel(hctx)
		go func() {
			defer acancel()
			a, admitted := gc.sendGRPC(ctx, actx, method, req, out, cc, invoker, ep, opts)
			if !admitted {
				a.err = &grpcError{code: codes.Unavailable, err: fmt.Errorf("mesh: %q: %w", gc.service, ErrCircuitOpen)}
			}
			results <- result{a: a, out: out}
		}()
		return ep
	}
	first := launch(tried)
	if first == nil {
		return gc.attemptGRPC(ctx, method, req, reply, cc, invoker, tried, opts)
	}
	pending, hedgeSent := 1, false
	timer := time.NewTimer(g.hedgeDelay())
	defer timer.Stop()
	for {
		select {
		case res := <-results:
			pending--
			if res.a.err == nil || pending == 0 {
				if res.a.err == nil {
					proto.Reset(reply)
					proto.Merge(reply, res.out)
				}
				return res.a
			}
		case <-timer.C:
			if hedgeSent {
				continue
			}
			hedgeSent = true
			if retryAllowed(ctx, g, gc.tel) && launch(append(slices.Clip(tried), first)) != nil {
				pending++
			}
		}
	}
}

// pinned serves a pick for an attempt the interceptor pinned to an
// endpoint; ok is false for calls without a pin.
func (p *grpcPicker) pinned(info grpcbalancer.PickInfo) (res grpcbalancer.PickResult, err error, ok bool) {
	pin, ok := info.Ctx.Value(pinKey{}).(*grpcPin)
	if !ok || pin.ep == nil {
		return res, nil, false
	}
	sc, ready := p.subConns[pin.ep.ID]
	if !ready {
		pin.notReady.Store(true)
		return res, status.Errorf(codes.Unavailable, "mesh: endpoint %q has no ready connection", pin.ep.ID), true
	}
	return grpcbalancer.PickResult{SubConn: sc}, nil, true
}

// pickUnpinned picks for a call weft did not pin: avoiding open breakers
// and, for a retry, the endpoints already tried when there is another;
// the choice is recorded for the interceptor.
func (p *grpcPicker) pickUnpinned(info grpcbalancer.PickInfo) (*balancer.Endpoint, error) {
	pin, _ := info.Ctx.Value(pinKey{}).(*grpcPin)
	skip := p.guard.skipOpen
	if pin != nil && len(pin.tried) > 0 {
		skip = skipping(skip, pin.tried, nil)
	}
	ep, err := p.balancer.Pick(balancer.Info{Context: info.Ctx, Method: info.FullMethodName, Skip: skip})
	if errors.Is(err, balancer.ErrAllSkipped) && pin != nil && len(pin.tried) > 0 {
		ep, err = p.balancer.Pick(balancer.Info{Context: info.Ctx, Method: info.FullMethodName, Skip: p.guard.skipOpen})
	}
	if err != nil {
		return nil, err
	}
	if pin != nil {
		pin.picked.Store(ep)
	}
	return ep, nil
}
