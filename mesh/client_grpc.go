package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/route"
)

// DialGRPC returns a gRPC client connection to service. Its calls go
// through the client's call engine, as HTTP requests do, and share the
// service's balancer, breakers, budget and rate limit with them:
// instances come from the client's discovery, each call (unary or
// stream) is admitted, balanced by the client's policy for service among
// the instances with a ready connection, and accounted; connections use
// mutual TLS when the client has an identity. As with [grpc.NewClient],
// no connection is made until the first call. Close the connection when
// done; closing the client does not.
//
// Each connect to an endpoint is bounded by its service's connect
// timeout (route.ConnectionPool.ConnectTimeout in the client's current
// route table, else [DefaultConnectTimeout]), as HTTP connects are.
//
// opts are applied after weft's own: a [grpc.WithContextDialer] among
// them replaces weft's dialer, and with it the connect timeouts.
// Interceptors among them run around weft's engine, once per call. The connection's service config is
// weft's: grpc-go ignores a default service config when the resolver
// gives one, so [grpc.WithDefaultServiceConfig] cannot turn weft's
// balancing off, and per-method timeouts are set through weft instead
// (the caller's context deadline, [RetryPolicy.PerTryTimeout]).
func (c *Client) DialGRPC(service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if service == "" {
		return nil, errors.New("mesh: dial gRPC: empty service name")
	}
	cl, err := c.cluster(service)
	if err != nil {
		return nil, err
	}
	gc := newGRPCConn(c, cl)
	var creds credentials.TransportCredentials = insecure.NewCredentials()
	if cl.tlsConfig != nil {
		creds = cl.naming.grpcCredentials(credentials.NewTLS(cl.tlsConfig))
	}
	all := make([]grpc.DialOption, 0, len(opts)+6)
	all = append(all,
		grpc.WithResolvers(gc),
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultServiceConfig(weftServiceConfig),
		grpc.WithContextDialer(gc.dial), // the services' connect timeouts (dial.go)
	)
	all = append(all, opts...)
	// Last, so that the caller's interceptors run around weft's engine.
	all = append(all, grpc.WithChainUnaryInterceptor(gc.unary), grpc.WithChainStreamInterceptor(gc.stream))
	cc, err := grpc.NewClient(grpcScheme+":///"+service, all...)
	if err != nil {
		return nil, fmt.Errorf("mesh: dial gRPC %q: %w", service, err)
	}
	return cc, nil
}

// grpcScheme is the resolver scheme of [Client.DialGRPC] targets. The
// resolver is passed to each connection, never registered globally.
const grpcScheme = "weft"

// weftServiceConfig selects weft's balancer.
const weftServiceConfig = `{"loadBalancingConfig":[{"` + GRPCBalancerName + `":{}}]}`

// unary is the gRPC adapter of the call engine for unary calls, the
// innermost of the connection's unary interceptors: it runs the call
// through [cluster.do] and never calls invoker without an endpoint chosen
// by weft.
func (gc *grpcConn) unary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if err := gc.cl.waitReady(ctx); err != nil {
		return grpcStatus(err)
	}
	dec, t, err := gc.routeGRPC(ctx, method)
	if err != nil {
		return err
	}
	cl := t.cl
	if err := cl.waitReady(ctx); err != nil {
		return grpcStatus(err)
	}
	if dec.Rule != nil && dec.Rule.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = cl.guard.clock.withTimeout(ctx, dec.Rule.Timeout)
		defer cancel()
	}
	ctx, call := cl.tel.StartGRPC(ctx, method)
	g := cl.guard
	msg, isProto := reply.(proto.Message)
	x := &grpcUnary{gc: gc, target: t, cc: cc, invoker: invoker, method: method, req: req, reply: reply, msg: msg, opts: opts, call: call, ctx: ctx}
	spec := cl.spec(cl.balancer, g.retry, g.hedge)
	if dec.Rule != nil {
		spec = cl.routedSpec(dec)
		x.dec = &dec
		x.method = dec.RewritePath(method)
		gc.failover(&spec, dec.Target.Destination)
	}
	spec.route, spec.replayable, spec.concurrent, spec.skip = method, true, isProto, t.skipFor(spec.brk)
	if isProto && spec.hedge != nil {
		x.replyType = msg.ProtoReflect().Type()
	}
	x.pushback = spec.retry != nil
	if spec.retry != nil || spec.hedge != nil {
		spec.idempotent = g.idempotentCall("", method, true)
	}
	var cands [4]awaitCand
	err = gc.awaitConnection(ctx, cc, opts, gc.awaited(&spec, t.prefix, cands[:0]))
	if err == nil && dec.Rule != nil {
		if f := dec.Rule.Fault; f != nil && f.Start() {
			err = gc.faultGRPC(ctx, cl, call, f)
			f.Done()
		}
	}
	if err == nil {
		cl.do(ctx, x, spec, &x.outcome)
		err = x.outcome.err
	}
	err = grpcStatus(err)
	call.EndGRPC(err)
	observeRejection(cl.tel, ctx, err)
	return err
}

// grpcUnary is the gRPC adapter of the call engine: one unary call.
type grpcUnary struct {
	gc      *grpcConn
	target  *grpcTarget // the service the call goes to
	cc      *grpc.ClientConn
	invoker grpc.UnaryInvoker
	method  string
	req     any
	reply   any
	msg     proto.Message // reply, when it is a proto message (hedges need one)
	// replyType makes the replies of hedged attempts. It is read from msg
	// before any attempt starts: the caller's reply itself is written
	// when the call ends, while a losing attempt may still be starting.
	replyType protoreflect.MessageType
	opts      []grpc.CallOption
	call      *calltel.Call
	ctx       context.Context // the call's
	dec       *route.Decision // the route of the call; nil for none
	pushback  bool            // read the server's retry pushback (retries are on)
	outcome   attempt         // the call's outcome, filled by the engine
}

// grpcAttempt is what an attempt of a unary call received into memory
// of its own: the reply, header, trailer and peer, copied to the
// caller's when the attempt's outcome is the call's.
type grpcAttempt struct {
	reply   proto.Message
	header  metadata.MD
	trailer metadata.MD
	peer    peer.Peer
}

func (x *grpcUnary) balancerInfo(ctx context.Context) balancer.Info {
	return balancer.Info{Context: ctx, Method: x.method}
}

// send invokes the call on a.ep's connection. An attempt with memory of
// its own (a hedge) decodes into a fresh reply and takes the header,
// trailer and peer into its own variables, so that it never writes to
// the caller's.
func (x *grpcUnary) send(actx context.Context, a *attempt) {
	target := x.target
	if a.via != nil {
		target = a.via.grpc // a failover target's endpoint
	}
	ctx := target.withEndpoint(actx, a.ep)
	opts, reply := x.opts, x.reply
	if x.dec != nil {
		ctx = routeMetadata(ctx, x.dec)
		if x.dec.Rule.Authority != "" {
			opts = append(opts[:len(opts):len(opts)], grpc.CallAuthority(x.dec.Rule.Authority))
		}
	}
	ctx, att := target.cl.startAttempt(x.call, ctx, nil, a.ep, a.set)
	ctx = att.InjectGRPC(ctx)
	var trailer *metadata.MD // read for pushback
	switch {
	case a.own:
		own := &grpcAttempt{reply: x.replyType.New().Interface()}
		reply = own.reply
		all := opts
		opts = make([]grpc.CallOption, 0, len(all)+3)
		for _, o := range all {
			switch o.(type) {
			case grpc.HeaderCallOption, grpc.TrailerCallOption, grpc.PeerCallOption:
			default:
				opts = append(opts, o)
			}
		}
		opts = append(opts, grpc.Header(&own.header), grpc.Trailer(&own.trailer), grpc.Peer(&own.peer))
		a.grpc, trailer = own, &own.trailer
	case x.pushback:
		trailer = new(metadata.MD)
		opts = append(opts[:len(opts):len(opts)], grpc.Trailer(trailer))
	}
	a.err = x.invoker(ctx, x.method, x.req, reply, x.cc, opts...)
	att.EndGRPC(a.err)
	x.gc.classify(x.ctx, a)
	if trailer != nil {
		a.pushback, a.hasPushback = pushback(*trailer)
	}
}

func (x *grpcUnary) discard(*attempt) {}

// keep copies what the attempt received into the caller's reply and
// call options, when it received into memory of its own.
func (x *grpcUnary) keep(a *attempt, cancel context.CancelFunc) {
	release(cancel)
	own := a.grpc
	if own == nil {
		return
	}
	if a.err == nil {
		proto.Reset(x.msg)
		proto.Merge(x.msg, own.reply)
	}
	for _, o := range x.opts {
		switch o := o.(type) {
		case grpc.HeaderCallOption:
			*o.HeaderAddr = own.header
		case grpc.TrailerCallOption:
			*o.TrailerAddr = own.trailer
		case grpc.PeerCallOption:
			*o.PeerAddr = own.peer
		}
	}
}

// classify judges the outcome of a gRPC attempt, for breakers, the
// balancer and retries: an attempt that found no ready connection to
// its endpoint sent nothing and says nothing of the endpoint.
func (gc *grpcConn) classify(ctx context.Context, a *attempt) {
	if isNotReady(a.err) {
		a.result = breaker.Excluded
		a.retry, a.unsent = true, true
		return
	}
	a.sent = true
	a.result = gc.cl.guard.classifyGRPC(ctx, a.err)
	a.code = status.Code(a.err)
	switch a.code {
	case codes.Unavailable, codes.ResourceExhausted, codes.Internal, codes.DeadlineExceeded, codes.Aborted:
		a.retry = true
	}
	a.good = a.err == nil
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

// grpcStatus returns err as a gRPC status error: errors of the engine
// get the code that says what happened (ResourceExhausted for the rate
// limit, Unavailable for no endpoint or open breakers, the context's
// codes), and errors with a status keep it.
func grpcStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, ErrRateLimited):
		return &grpcError{code: codes.ResourceExhausted, err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return &grpcError{code: codes.DeadlineExceeded, err: err}
	case errors.Is(err, context.Canceled):
		return &grpcError{code: codes.Canceled, err: err}
	}
	return &grpcError{code: codes.Unavailable, err: err}
}

// stream is the gRPC adapter of the call engine for streams, the
// innermost of the connection's stream interceptors. A stream is a call
// like any other: admitted by the rate limit and budget, given an
// endpoint by the one pick, skipping open breakers, and its outcome —
// known when the stream ends — counted by the endpoint's breaker and
// balancer and recorded by telemetry, exactly once however it ends. A
// stream that found no ready connection is tried on another endpoint;
// one that reached a server is not retried.
func (gc *grpcConn) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if err := gc.cl.waitReady(ctx); err != nil {
		return nil, grpcStatus(err)
	}
	dec, t, err := gc.routeGRPC(ctx, method)
	if err != nil {
		return nil, err
	}
	cl := t.cl
	g := cl.guard
	if err := cl.waitReady(ctx); err != nil {
		return nil, grpcStatus(err)
	}
	stopTimeout := func() {}
	if dec.Rule != nil && dec.Rule.Timeout > 0 {
		// The route's timeout bounds the whole stream.
		var cancel context.CancelFunc
		ctx, cancel = g.clock.withTimeout(ctx, dec.Rule.Timeout)
		stopTimeout = func() { cancel() }
	}
	ctx, call := cl.tel.StartGRPC(ctx, method)
	var done func() // ends the stream's hold on its destination's pool
	fail := func(err error) (grpc.ClientStream, error) {
		release(done)
		stopTimeout()
		err = grpcStatus(err)
		call.EndGRPC(err)
		observeRejection(cl.tel, ctx, err)
		return nil, err
	}
	spec := cl.spec(cl.balancer, nil, nil)
	if dec.Rule != nil {
		spec = cl.destSpec(dec.Target.Destination, nil, nil)
		gc.failover(&spec, dec.Target.Destination)
	}
	if done, err = cl.admit(ctx, &spec); err != nil {
		return fail(err)
	}
	var cands [4]awaitCand
	if err := gc.awaitConnection(ctx, cc, opts, gc.awaited(&spec, t.prefix, cands[:0])); err != nil {
		return fail(err)
	}
	sent := method
	if dec.Rule != nil {
		if f := dec.Rule.Fault; f != nil && f.Start() {
			err := gc.faultGRPC(ctx, cl, call, f)
			f.Done()
			if err != nil {
				return fail(err)
			}
		}
		sent = dec.RewritePath(method)
		ctx = routeMetadata(ctx, &dec)
		if dec.Rule.Authority != "" {
			opts = append(opts[:len(opts):len(opts)], grpc.CallAuthority(dec.Rule.Authority))
		}
	}
	spec.route, spec.skip = method, t.skipFor(spec.brk)
	var tried []*balancer.Endpoint
	for try := 1; ; try++ {
		ep, via, err := cl.pick(balancer.Info{Context: ctx, Method: method}, spec, tried, nil)
		if err != nil {
			return fail(err)
		}
		t, g, set := t, g, g.breakersOf(spec.brk)
		if via != nil { // a failover target's endpoint, and its breakers
			t, g, set = via.grpc, via.cl.guard, via.cl.guard.breakersOf(via.brk)
		}
		start := g.clock.Now()
		sctx, cancel := context.WithCancel(t.withEndpoint(ctx, ep))
		sctx, att := t.cl.startAttempt(call, sctx, nil, ep, set)
		sctx = att.InjectGRPC(sctx)
		cs, err := streamer(sctx, desc, cc, sent, opts...)
		if err != nil {
			cancel()
			att.EndGRPC(err)
			if isNotReady(err) && try < 3 {
				ep.Done(balancer.Outcome{Result: balancer.Dropped})
				tried = append(tried, ep)
				continue
			}
			g.record(set, ep, start, g.classifyGRPC(ctx, err))
			return fail(err)
		}
		s := &clientStream{ClientStream: cs, callCtx: ctx, serverStreams: desc.ServerStreams}
		s.end = func(err error) {
			att.EndGRPC(err)
			g.record(set, ep, start, g.classifyGRPC(ctx, err))
			call.EndGRPC(err)
			cancel()
			stopTimeout()
			release(done)
		}
		s.stopWatch = context.AfterFunc(sctx, func() {
			// Not s.finish: stopWatch may not be set yet when the context
			// is already done, and there is no watch left to stop.
			err := status.FromContextError(context.Cause(sctx)).Err()
			s.once.Do(func() { s.end(err) })
		})
		return s, nil
	}
}

// clientStream is a client stream of the engine: it ends the call —
// telemetry, breaker and balancer accounts — exactly once, on the first
// of: RecvMsg failing or reaching the end (io.EOF is a success), the
// single response of a call that does not stream responses arriving,
// Header failing, or the call's context ending (the caller gave up on
// the stream).
type clientStream struct {
	grpc.ClientStream
	callCtx       context.Context // the caller's
	serverStreams bool
	once          sync.Once
	end           func(error)
	stopWatch     func() bool
}

func (s *clientStream) finish(err error) {
	s.once.Do(func() {
		s.stopWatch()
		s.end(err)
	})
}

func (s *clientStream) Header() (metadata.MD, error) {
	md, err := s.ClientStream.Header()
	if err != nil {
		s.finish(err)
	}
	return md, err
}

func (s *clientStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil && !s.serverStreams {
		if cerr := s.callCtx.Err(); cerr != nil {
			// The caller gave up before the one response was read:
			// grpc-go may still hand over an answer the server sent in
			// the meantime, but a cancelled call is not a success.
			err = status.FromContextError(cerr).Err()
		}
	}
	switch {
	case errors.Is(err, io.EOF):
		s.finish(nil)
	case err != nil:
		s.finish(err)
	case !s.serverStreams:
		// The one response of a unary-response call: the call is over
		// (grpc-go has read its status with the message).
		s.finish(nil)
	}
	return err
}

// notReadyMessage is the status message of a call whose endpoint has no
// ready connection when gRPC asks weft's picker: nothing was sent.
const notReadyMessage = "mesh: the endpoint chosen for the call has no ready connection"

// isNotReady reports whether err says the call found no ready connection
// to its endpoint.
func isNotReady(err error) bool {
	if err == nil {
		return false
	}
	st, ok := status.FromError(err)
	return ok && st.Code() == codes.Unavailable && st.Message() == notReadyMessage
}

// readiness is which endpoints of a gRPC connection have a ready
// connection, published by weft's balancer on every change.
type readiness struct {
	ready      map[string]bool // endpoint IDs
	failed     map[string]bool // endpoint IDs whose connection failed (transient failure)
	connecting bool            // some connection may still become ready
	idle       bool            // the channel is idle: calls must wake it
	err        error           // the last connection error
	changed    chan struct{}   // closed when a newer readiness replaces this one
}

// grpcConn is weft's state of one connection of [Client.DialGRPC]: the
// service's cluster it calls and which of its endpoints have a ready
// connection. It is the connection's resolver builder too.
type grpcConn struct {
	cl     *cluster
	client *Client
	routes route.Source // nil: no routing
	self   *grpcTarget  // the dialled service
	ready  atomic.Pointer[readiness]

	pushMu   sync.Mutex // orders the endpoint sets handed to the resolver
	mu       sync.Mutex // guards what follows
	resolver *grpcResolver
	sets     map[string][]discovery.Endpoint // by cluster key
	peers    map[string]*grpcTarget          // other clusters routes send to, by cluster key
	warmed   warmedFailovers                 // route destinations whose failover targets calls resolved (failover.go)
}

// failover sets spec's failover to dest's targets, resolved for gc's
// calls, and has gc hold connections to their endpoints.
func (gc *grpcConn) failover(spec *callSpec, dest *route.Destination) {
	if len(dest.Failover) > 0 {
		warmFailover(&gc.warmed, dest, gc.grpcFailover)
		failoverSpec(spec, dest, gc.grpcFailover)
	}
}

// grpcTarget is a service a gRPC connection sends calls to: the dialled
// one, or another that a route sends them to, whose endpoints the
// connection then holds connections to as well.
type grpcTarget struct {
	cl          *cluster
	gc          *grpcConn
	prefix      string                        // of the connection's keys of its endpoints ([grpcConn.keyPrefix])
	skip        func(*balancer.Endpoint) bool // open breakers and endpoints without a ready connection; built once
	unsubscribe func()

	skipMu sync.Mutex
	skips  map[string]destSkip // by subset: skips of destinations with breakers of their own
}

// destSkip is the skip function of a target's calls to a destination
// with breakers of its own (brk).
type destSkip struct {
	brk  *destBreakers
	skip func(*balancer.Endpoint) bool
}

// skipFor returns what rules out endpoints of t for a call that goes
// through brk, a destination's breakers: endpoints without a ready
// connection and with an open breaker in brk; t.skip for a nil brk. It
// builds the function once per destination's breaker set.
func (t *grpcTarget) skipFor(brk *destBreakers) func(*balancer.Endpoint) bool {
	if brk == nil {
		return t.skip
	}
	t.skipMu.Lock()
	defer t.skipMu.Unlock()
	if ds, ok := t.skips[brk.subset]; ok && ds.brk == brk {
		return ds.skip
	}
	if t.skips == nil {
		t.skips = make(map[string]destSkip)
	}
	ds := destSkip{brk: brk, skip: t.gc.skipping(t.prefix, brk.skipOpen)}
	t.skips[brk.subset] = ds
	return ds.skip
}

// withEndpoint returns ctx carrying the endpoint chosen for an attempt,
// as weft's picker reads it: the endpoint itself for the dialled
// service, its key for another.
func (t *grpcTarget) withEndpoint(ctx context.Context, ep *balancer.Endpoint) context.Context {
	if t.prefix == "" {
		return context.WithValue(ctx, endpointKey{}, ep)
	}
	return context.WithValue(ctx, endpointKey{}, peerEndpointKey(t.prefix+ep.ID))
}

// peerEndpointKey is the key of an endpoint of another service than the dialled
// one, as the picker finds it.
type peerEndpointKey string

func newGRPCConn(c *Client, cl *cluster) *grpcConn {
	gc := &grpcConn{cl: cl, client: c, routes: c.cfg.routes}
	gc.self = gc.target(cl)
	gc.ready.Store(&readiness{idle: true, changed: make(chan struct{})})
	return gc
}

// target returns the grpcTarget of cl on gc.
func (gc *grpcConn) target(cl *cluster) *grpcTarget {
	t := &grpcTarget{cl: cl, gc: gc, prefix: gc.keyPrefix(cl.key)}
	t.skip = gc.skipping(t.prefix, cl.guard.skipOpen)
	return t
}

// skipping returns what rules out the endpoints of gc's keys with prefix:
// those without a ready connection, and those open rules out (open
// breakers) when open is not nil.
func (gc *grpcConn) skipping(prefix string, open func(*balancer.Endpoint) bool) func(*balancer.Endpoint) bool {
	return func(e *balancer.Endpoint) bool {
		return !gc.ready.Load().ready[prefix+e.ID] || (open != nil && open(e))
	}
}

// include makes gc hold connections to the endpoints of cl, a service a
// route sends gc's calls to, and returns its target.
func (gc *grpcConn) include(cl *cluster) *grpcTarget {
	gc.mu.Lock()
	if t := gc.peers[cl.key]; t != nil {
		gc.mu.Unlock()
		return t
	}
	t := gc.target(cl)
	if gc.peers == nil {
		gc.peers = make(map[string]*grpcTarget)
	}
	gc.peers[cl.key] = t
	gc.mu.Unlock()
	// Outside the lock: subscribing hands gc the service's set at once.
	t.unsubscribe = cl.subscribe(gc)
	return t
}

// setReadiness publishes r and wakes the calls waiting for a change.
func (gc *grpcConn) setReadiness(r *readiness) {
	r.changed = make(chan struct{})
	old := gc.ready.Swap(r)
	close(old.changed)
}

// awaitConnection waits until some endpoint of one of cands (the
// service's balancer, or a subset's, then the call's failover targets')
// has a ready connection, waking an idle channel; a failover target's
// counts only once every connection to the call's own endpoints failed. It fails when every
// connection failed, unless the call waits for ready (as grpc-go's own
// picker does), and when ctx ends. When none of cands has an endpoint at
// all it returns at once: the pick reports it, as it does for HTTP.
func (gc *grpcConn) awaitConnection(ctx context.Context, cc *grpc.ClientConn, opts []grpc.CallOption, cands []awaitCand) error {
	for {
		r := gc.ready.Load()
		empty := true
		for i, c := range cands {
			eps := c.bal.Endpoints()
			empty = empty && len(eps) == 0
			if slices.ContainsFunc(eps, func(e *balancer.Endpoint) bool { return r.ready[c.prefix+e.ID] }) {
				return nil
			}
			if i == 0 && slices.ContainsFunc(eps, func(e *balancer.Endpoint) bool { return !r.failed[c.prefix+e.ID] }) {
				// The call's own endpoints may still connect: failing
				// over is for when none can serve.
				break
			}
		}
		if empty {
			return nil
		}
		if r.idle {
			cc.Connect()
		} else if !r.connecting && r.err != nil && !waitForReady(opts) {
			return &grpcError{code: codes.Unavailable, err: fmt.Errorf("mesh: no connection to any endpoint of %q: %w", gc.cl.service, r.err)}
		}
		select {
		case <-r.changed:
		case <-ctx.Done():
			return fmt.Errorf("mesh: waiting for a connection to %q: %w", gc.cl.service, context.Cause(ctx))
		}
	}
}

// awaitCand is a balancer whose endpoints a gRPC call may go to, with the
// connection's key prefix of its endpoints.
type awaitCand struct {
	bal    *balancer.Balancer
	prefix string
}

// waitForReady reports whether opts make the call wait for a ready
// connection.
func waitForReady(opts []grpc.CallOption) bool {
	wait := false
	for _, o := range opts {
		if ff, ok := o.(grpc.FailFastCallOption); ok {
			wait = !ff.FailFast
		}
	}
	return wait
}

// endpointKey is the context key of the endpoint the engine chose for a
// gRPC attempt, which weft's picker routes the attempt to. It is the
// routing decision of one attempt, read once by the picker; nothing
// flows back through it.
type endpointKey struct{}
