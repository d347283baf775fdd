package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/telemetry"
)

// WithRoutes routes the client's calls by the tables src publishes
// (package route): the route step of the call engine, before admission.
// For each call, HTTP or gRPC, the current table's first matching route
// of the called service decides where it goes — a weighted backend
// (service and subset), a redirect or a direct response — and under
// which policy: timeout, retries and hedging, faults, mirroring, header
// changes, path and authority rewrites. A service the table does not
// name is called as without routes. Tables change at run time; each call
// reads the one current when it starts; an update the source refuses
// leaves the table as it was (build the source with
// [ReportRouteRejections] to log and count such refusals). A nil src is
// ignored.
//
// A call a route's fault aborts never reaches an endpoint, so breakers
// and outlier detection never count it, and it is never retried; with
// [WithTelemetry] it is recorded as one client span without an
// endpoint, carrying the event "weft.fault.abort" (attribute
// weft.fault.abort: the HTTP status or gRPC code). A delayed call adds
// the event "weft.fault.delay" (weft.fault.delay: seconds) to the span
// of its context: the call's own span when it has one, else the
// caller's.
//
// A destination's connection pool (route.ConnectionPool, such as a
// Consul caller's upstream Limits) bounds the calls in flight to it, at
// admission, for HTTP and gRPC calls and streams alike: a call over
// maxRequests, or an HTTP call beyond maxConnections when
// maxPendingRequests calls already wait, fails at once with
// [ErrOverflow]. An HTTP call holds its place until its response body
// is closed. A service's connectTimeout bounds each connect to its
// endpoints, read from the current table when the connection is dialled
// (see [DefaultConnectTimeout]). Its outlier detection ejects failing
// endpoints from its balancer. Its breaker block (route.Breaker) gives
// the destination a circuit breaker set of its own, one breaker per
// endpoint of the destination with the block's settings, in place of the
// client's ([WithCircuitBreaker]) for its calls, HTTP and gRPC, unary and
// streams: they skip its open breakers and are counted by it. It applies
// whether the client has [WithCircuitBreaker] or not; the set takes the
// client's [breaker.SetOption]s (a destination-wide breaker with
// [breaker.WithServiceBreaker]), its OnStateChange and its Now (else the
// client's [WithClock]). Zero fields of the block mean the breaker
// package's defaults, not the client's settings. A new table keeps a
// destination's breakers, and their state, while its block is unchanged,
// and replaces them when it changes. Destinations without a block use
// the client's breakers.
//
// A backend may be an external service (route.ExternalService, as
// Istio's ServiceEntry): HTTP calls reach it over TLS with its own server
// name and CA, not mesh mutual TLS, one attempt each, with the route's
// timeout, faults, header changes and rewrites.
//
// A destination with failover targets (route.Failover, Consul's
// service-resolver Failover) sends a call, HTTP or gRPC, to the first of
// them that has an endpoint to give when it has none itself: no healthy
// instance, every one behind an open breaker, or every one ejected (its
// outlier detection then does not balance over ejected endpoints, as it
// otherwise would below its panic threshold). The choice is made at each
// pick, retries included, so calls return as soon as the destination has
// an endpoint again. The failover targets' discovery watches start with
// the destination's first call. A destination in another datacenter, or
// of a subset by a Consul filter, gets a discovery watch of its own
// (discovery.TargetWatcher, such as discovery.Consul); with a watcher
// that cannot give one, its calls fail with [ErrTargetUnsupported]. With
// discovery.HoldLastSet, a set that empties is held, and calls fail over
// only once the hold ends.
//
// Routes of gRPC calls may send to any mesh service and subset: a
// connection of [Client.DialGRPC] then holds connections to the
// endpoints of every service its routes have sent calls to. gRPC calls
// answer neither redirects nor direct responses, are not mirrored, and
// do not go to external services.
func WithRoutes(src route.Source) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if src != nil {
			c.routes = src
			c.resilience.routed = true
		}
	})
}

// ReportRouteRejections returns the option of a route source
// ([route.WithOnReject]) that reports each update the source refuses:
// logged at warn level with logger ("mesh: route update refused", with
// the source and every problem with the path of its field, redacted) and
// recorded with t (weft.route.rejections by source, event
// "weft.route.rejected"). The source's table stays as it was, and the
// rejection stays readable from its Status.
//
// The caller builds the source before the client, and the client only
// reads its tables, so the report is wired where the source is made:
// pass the logger and telemetry the client is given ([WithLogger],
// [WithTelemetry]). A nil logger or t is ignored.
func ReportRouteRejections(logger *slog.Logger, t *telemetry.Telemetry) route.Option {
	return route.WithOnReject(func(r route.Rejection) {
		ctx := context.Background()
		if logger != nil {
			logger.LogAttrs(ctx, slog.LevelWarn, "mesh: route update refused; the previous table stays",
				slog.String("source", r.Source), slog.String("error", telemetry.Redact(r.Err)))
		}
		t.RouteRejected(ctx, r.Source, r.Err)
	})
}

// ReportRouteWarnings returns the option of a route source
// ([route.WithOnWarning]) that logs, at warn level with logger ("mesh:
// route field not applied", with the source, the field's path and why),
// each warning of the source's tables once while it stays: a field the
// source does not apply, such as a Consul entry's, or a route that never
// matches. The warnings stay readable from the table
// ([route.Table.Warnings]). A nil logger is ignored: the option does
// nothing.
func ReportRouteWarnings(logger *slog.Logger) route.Option {
	if logger == nil {
		return nil
	}
	return route.WithOnWarning(func(source string, w *route.FieldError) {
		logger.LogAttrs(context.Background(), slog.LevelWarn, "mesh: route field not applied",
			slog.String("source", source), slog.String("path", w.Path), slog.String("reason", telemetry.Redact(errors.New(w.Message))))
	})
}

// ErrRouteUnsupported is returned (wrapped) by a call that its route
// sends somewhere the call's protocol cannot go: a gRPC call to another
// service (an external one included), a redirect or a direct response.
var ErrRouteUnsupported = errors.New("mesh: route not supported for this call")

// ErrFaultInjected is returned (wrapped) by a gRPC call that a route's
// fault aborted; HTTP calls get the fault's status as a response.
var ErrFaultInjected = errors.New("mesh: fault injected by route")

// spec returns the call spec of a call to cl picked by bal under the
// retry and hedge policies given.
func (cl *cluster) spec(bal *balancer.Balancer, retry *RetryPolicy, hedge *HedgePolicy) callSpec {
	return callSpec{balancer: bal, retry: retry, hedge: hedge, skip: cl.guard.skipOpen}
}

// destSpec returns the call spec of a call to dest, a destination of cl,
// under the retry and hedge policies given: dest's balancer, and its
// breakers when its policy has a breaker block.
func (cl *cluster) destSpec(dest *route.Destination, retry *RetryPolicy, hedge *HedgePolicy) callSpec {
	bal, brk := cl.destination(dest)
	spec := cl.spec(bal, retry, hedge)
	spec.pool = cl.pool(dest)
	if brk != nil {
		spec.brk, spec.skip = brk, brk.skipOpen
	}
	return spec
}

// routedSpec returns the call spec of a call that dec sends to cl: the
// balancer of the target's subset and the route's retry and hedge
// policies over the client's.
func (cl *cluster) routedSpec(dec route.Decision) callSpec {
	spec := cl.destSpec(dec.Target.Destination, cl.guard.retry, cl.guard.hedge)
	if rp := dec.Rule.RetryFor(dec.Target); rp != nil {
		p := RetryPolicy{MaxAttempts: rp.MaxAttempts, PerTryTimeout: rp.PerTryTimeout}
		if cl.guard.retry != nil {
			p.Backoff, p.MaxBackoff, p.MinRemaining, p.MaxBodyBytes = cl.guard.retry.Backoff, cl.guard.retry.MaxBackoff, cl.guard.retry.MinRemaining, cl.guard.retry.MaxBodyBytes
		}
		p = p.withDefaults()
		spec.retry, spec.retryOn = &p, &rp.On
	}
	if h := dec.Rule.Hedge; h != nil {
		spec.hedge = &HedgePolicy{Delay: h.Delay}
	}
	return spec
}

// subsets are the balancers (and breakers) of a cluster's route
// destinations, built on first use and fed by the cluster's discovery
// updates.
type subsets struct {
	mu sync.Mutex
	m  map[string]*subsetBalancer // by subset name
}

type subsetBalancer struct {
	dest *route.Destination // the destination it was built for
	bal  *balancer.Balancer
	// shared: bal is the cluster's own (a destination of every endpoint
	// with only a breaker block), which the cluster updates.
	shared bool
	brk    *destBreakers // nil: the destination has no breaker block
}

// destination returns the balancer of dest — a subset of cl's
// endpoints, or all of them — with dest's traffic policy: its load
// balancer and outlier detection, as DestinationRule's trafficPolicy,
// which applies when a route sends calls there; and dest's breakers when
// its policy has a breaker block, else nil (the client's apply). A
// destination of every endpoint with no balancing policy of its own is
// served by the service's balancer.
func (cl *cluster) destination(dest *route.Destination) (*balancer.Balancer, *destBreakers) {
	pol := &dest.Policy
	own := dest.Subset != "" || pol.LoadBalancer != nil || pol.Outlier != nil
	if !own && pol.Breaker == nil {
		return cl.balancer, nil
	}
	cl.subsets.mu.Lock()
	defer cl.subsets.mu.Unlock()
	old := cl.subsets.m[dest.Subset]
	if old != nil && old.dest == dest {
		return old.bal, old.brk
	}
	// New, or its definition came with a newer table.
	sb := &subsetBalancer{dest: dest, bal: cl.balancer, shared: !own}
	switch {
	case own && old != nil && !old.shared && old.dest.SameBalancing(dest):
		sb.bal = old.bal // unchanged: it keeps its load figures and ejections
	case own:
		sb.bal = balancer.New(cl.destinationPolicy(dest))
	}
	if b := pol.Breaker; b != nil {
		if old != nil && old.brk != nil && old.brk.conf == *b {
			sb.brk = old.brk // unchanged: its breakers keep their state
		} else {
			sb.brk = cl.newDestBreakers(dest.Subset, *b)
		}
	}
	if u := cl.status.Load(); u != nil {
		sb.update(u.Endpoints)
	}
	if cl.subsets.m == nil {
		cl.subsets.m = make(map[string]*subsetBalancer)
	}
	cl.subsets.m[dest.Subset] = sb
	return sb.bal, sb.brk
}

// destinationPolicy is the balancing policy of dest: the one its traffic
// policy names, else the client's for the service; with outlier
// detection when the traffic policy asks for it.
func (cl *cluster) destinationPolicy(dest *route.Destination) balancer.Policy {
	var p balancer.Policy
	if lb := dest.Policy.LoadBalancer; lb != nil {
		key := balancer.HeaderKey(lb.HashHeader)
		switch {
		case lb.HashCookie != "":
			key = balancer.CookieKey(lb.HashCookie)
		case lb.HashQuery != "": // gRPC calls have none: a random endpoint
			key = balancer.QueryKey(lb.HashQuery)
		}
		switch lb.Policy {
		case "round_robin":
			p = balancer.RoundRobin()
		case "weighted_round_robin":
			p = balancer.WeightedRoundRobin()
		case "random":
			p = balancer.Random()
		case "weighted_random":
			p = balancer.WeightedRandom()
		case "least_request":
			p = balancer.LeastRequest()
		case "peak_ewma":
			p = balancer.PeakEWMA()
		case "ring_hash":
			p = balancer.RingHash(key)
		case "maglev":
			p = balancer.Maglev(key)
		}
	}
	if p == nil {
		p = cl.newPolicy()
	}
	if o := dest.Policy.Outlier; o != nil {
		if p == nil {
			p = balancer.RoundRobin()
		}
		var opts []balancer.Option
		if o.ConsecutiveFailures > 0 {
			opts = append(opts, balancer.WithConsecutiveFailures(o.ConsecutiveFailures))
		}
		if o.Interval > 0 {
			opts = append(opts, balancer.WithInterval(time.Duration(o.Interval)))
		}
		if o.BaseEjectionTime > 0 || o.MaxEjectionTime > 0 {
			opts = append(opts, balancer.WithEjectionTime(time.Duration(o.BaseEjectionTime), time.Duration(o.MaxEjectionTime)))
		}
		if o.MaxEjectedPercent > 0 {
			opts = append(opts, balancer.WithMaxEjected(o.MaxEjectedPercent/100))
		}
		p = balancer.Outlier(p, opts...)
	}
	return p
}

func (sb *subsetBalancer) filter(eps []discovery.Endpoint) []discovery.Endpoint {
	out := make([]discovery.Endpoint, 0, len(eps))
	for i := range eps {
		if sb.dest.Matches(&eps[i]) {
			out = append(out, eps[i])
		}
	}
	return out
}

// update hands sb's balancer, unless it is the cluster's, and breakers
// their share of eps.
func (sb *subsetBalancer) update(eps []discovery.Endpoint) {
	own := sb.filter(eps)
	if !sb.shared {
		sb.bal.Update(own)
	}
	if sb.brk != nil {
		sb.brk.set.Update(own)
	}
}

// updateSubsets hands the subsets' balancers and breakers their share of
// eps.
func (cl *cluster) updateSubsets(eps []discovery.Endpoint) {
	cl.subsets.mu.Lock()
	defer cl.subsets.mu.Unlock()
	for _, sb := range cl.subsets.m {
		sb.update(eps)
	}
}

// routeHTTP makes an HTTP call as its route, dec, says.
func (c *Client) routeHTTP(r *http.Request, dec route.Decision) (*http.Response, error) {
	rule := dec.Rule
	switch {
	case rule.Redirect != nil:
		closeBody(r)
		code := rule.Redirect.Code
		if code == 0 {
			code = http.StatusMovedPermanently
		}
		resp := answer(r, code, "")
		resp.Header.Set("Location", rule.Location(r.URL))
		return resp, nil
	case rule.DirectResponse != nil:
		closeBody(r)
		return answer(r, rule.DirectResponse.Status, rule.DirectResponse.Body), nil
	}
	var cl *cluster
	var err error
	if dec.Target.Destination.External != nil {
		// The called service's cluster gives the clock of the route's
		// timeout and faults.
		cl, err = c.cluster(r.URL.Hostname())
	} else {
		cl, err = c.destCluster(dec.Target.Destination)
	}
	if err != nil {
		closeBody(r)
		return nil, err
	}
	ctx, cancel := r.Context(), context.CancelFunc(nil)
	if rule.Timeout > 0 {
		ctx, cancel = cl.guard.clock.withTimeout(ctx, rule.Timeout)
	}
	resp, err := c.routeHTTPTo(ctx, cl, r, dec)
	switch {
	case cancel == nil:
	case resp != nil:
		resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	default:
		cancel()
	}
	return resp, err
}

func (c *Client) routeHTTPTo(ctx context.Context, cl *cluster, r *http.Request, dec route.Decision) (*http.Response, error) {
	ext := dec.Target.Destination.External != nil
	if !ext {
		if err := cl.waitReady(ctx); err != nil {
			closeBody(r)
			return nil, err
		}
	}
	if f := dec.Rule.Fault; f != nil && f.Start() {
		defer f.Done()
		status, err := cl.fault(ctx, f)
		if err != nil {
			closeBody(r)
			return nil, err
		}
		if status != 0 {
			closeBody(r)
			resp := answer(r, status, "fault filter abort")
			cl.faultAborted(ctx, nil, r, dec.Rule, resp, nil)
			return resp, nil
		}
	}
	var cmp *mirrorCompare
	if m := dec.Rule.Mirror; m != nil && m.Share.Hit(rand.Uint64()) {
		cmp = c.mirrorHTTP(r, &dec)
	}
	var resp *http.Response
	var err error
	if ext {
		resp, err = c.callExternal(ctx, r, &dec)
	} else {
		spec := cl.routedSpec(dec)
		if dest := dec.Target.Destination; len(dest.Failover) > 0 {
			warmFailover(&c.failovers, dest, c.httpFailover)
			failoverSpec(&spec, dest, c.httpFailover)
		}
		resp, err = cl.roundTrip(ctx, r, &dec, spec)
	}
	return cmp.primary(resp, err), err
}

// fault applies a route's fault to a call: the delay, on the cluster's
// clock, then the abort's HTTP status (0 for none), or ctx's error when
// it ends during the delay.
func (cl *cluster) fault(ctx context.Context, f *route.FaultPolicy) (int, error) {
	if f.Delay > 0 && f.DelayShare.Hit(rand.Uint64()) {
		faultEvent(ctx, "weft.fault.delay", faultDelayKey.Float64(f.Delay.Seconds()))
		if err := cl.guard.clock.sleep(ctx, f.Delay); err != nil {
			return 0, fmt.Errorf("mesh: %q: fault delay: %w", cl.service, err)
		}
	}
	if f.AbortShare.Hit(rand.Uint64()) {
		// A compiled abort has both: its HTTP status and its gRPC code.
		return f.AbortHTTP, nil
	}
	return 0, nil
}

// maxMirrors bounds the mirrored calls in flight per client; a mirror
// beyond it is dropped.
const maxMirrors = 64

// mirrorHTTP sends a copy of r to dest, fire and forget, as Istio
// mirrors: with "-shadow" added to its host, the response discarded,
// the caller's cancellation not followed, bounded by the caller's
// deadline. Requests whose body cannot be replayed are not mirrored.
// With [WithMirrorCompare] it returns the comparison the primary
// response completes; nil otherwise.
func (c *Client) mirrorHTTP(r *http.Request, dec *route.Decision) *mirrorCompare {
	dest := dec.Rule.Mirror.Destination
	if dest.External != nil || !canReplay(r, DefaultMaxRetryBody) {
		return nil
	}
	cl, err := c.destCluster(dest)
	if err != nil {
		return nil
	}
	select {
	case c.mirrors <- struct{}{}:
	default:
		return nil // too many in flight
	}
	ctx := context.WithoutCancel(r.Context())
	var cancel context.CancelFunc
	if dl, ok := r.Context().Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, dl)
	} else {
		ctx, cancel = context.WithTimeout(ctx, MaxRetryWait)
	}
	m := r.Clone(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		body, err := r.GetBody()
		if err != nil {
			cancel()
			<-c.mirrors
			return nil
		}
		m.Body = body
	}
	cmp := c.newMirrorCompare(r, dec)
	host := r.Host
	if host == "" {
		host = r.URL.Host
	}
	m.Host = shadowHost(host)
	c.mirroring.Add(1)
	go func() {
		defer c.mirroring.Done()
		defer func() { <-c.mirrors }()
		defer cancel()
		if err := cl.waitReady(ctx); err != nil {
			closeBody(m)
			cmp.shadow(nil, err)
			return
		}
		spec := cl.destSpec(dest, nil, nil)
		resp, err := cl.roundTrip(ctx, m, nil, spec)
		cmp.shadow(resp, err)
		if err == nil {
			discard(resp)
		}
	}()
	return cmp
}

// shadowHost is host with "-shadow" added to its name, as Istio marks
// mirrored requests.
func shadowHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i > 0 && !strings.Contains(host[i:], "]") {
		return host[:i] + "-shadow" + host[i:]
	}
	return host + "-shadow"
}

// routeRequest applies the route's request side to out, an attempt's own
// copy of the request: header changes (on a copy of the headers), the
// path rewrite and the authority.
func routeRequest(dec *route.Decision, out *http.Request) {
	rule := dec.Rule
	if rule.Request != nil || dec.Target.Request != nil {
		out.Header = out.Header.Clone()
		if out.Header == nil {
			out.Header = make(http.Header)
		}
		rule.Request.ApplyHTTP(out.Header)
		dec.Target.Request.ApplyHTTP(out.Header)
	}
	if p := dec.RewritePath(out.URL.Path); p != out.URL.Path {
		out.URL.Path, out.URL.RawPath = p, ""
	}
	if rule.Authority != "" {
		out.Host = rule.Authority
	}
}

// answer is a response the client gives itself: a route's redirect,
// direct response or aborting fault.
func answer(r *http.Request, status int, body string) *http.Response {
	return &http.Response{
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        http.Header{"Content-Type": {"text/plain; charset=utf-8"}},
		Body:          io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)),
		Request:       r,
	}
}

// routeGRPC matches a gRPC call of method against the client's routes.
// It returns the decision, with a nil Rule when no route applies, the
// service the call goes to, and an error for a route the call cannot
// follow.
func (gc *grpcConn) routeGRPC(ctx context.Context, method string) (route.Decision, *grpcTarget, error) {
	src := gc.routes
	if src == nil {
		return route.Decision{}, gc.self, nil
	}
	md, _ := metadata.FromOutgoingContext(ctx)
	dec := src.Table().Match(gc.cl.service, &route.Request{Path: method, Metadata: md}, rand.Uint64())
	rule := dec.Rule
	switch {
	case rule == nil:
		return dec, gc.self, nil
	case rule.Redirect != nil || rule.DirectResponse != nil:
		return dec, nil, &grpcError{code: codes.Unimplemented, err: fmt.Errorf("%w: route %s of %q answers HTTP only", ErrRouteUnsupported, rule.Name, rule.Service)}
	case dec.Target.Destination.External != nil:
		return dec, nil, &grpcError{code: codes.FailedPrecondition, err: fmt.Errorf("%w: route %s sends gRPC calls to an external service, %q", ErrRouteUnsupported, rule.Name, dec.Target.Destination.Service)}
	}
	cl, err := gc.client.destCluster(dec.Target.Destination)
	if err != nil {
		return dec, nil, grpcStatus(err)
	}
	if cl == gc.cl {
		return dec, gc.self, nil
	}
	return dec, gc.include(cl), nil
}

// faultGRPC applies a route's fault to a gRPC call: the delay, then the
// abort as a status error.
func (gc *grpcConn) faultGRPC(ctx context.Context, cl *cluster, call *calltel.Call, f *route.FaultPolicy) error {
	status, err := cl.fault(ctx, f)
	if err != nil || status == 0 {
		return err
	}
	err = &grpcError{code: f.AbortGRPC, err: fmt.Errorf("%w: %q", ErrFaultInjected, cl.service)}
	cl.faultAborted(ctx, call, nil, nil, nil, err)
	return err
}

// The attributes of the span events of faults.
const (
	faultDelayKey = attribute.Key("weft.fault.delay") // seconds
	faultAbortKey = attribute.Key("weft.fault.abort") // HTTP status or gRPC code
	faultRouteKey = attribute.Key("weft.route")
)

// faultEvent adds a fault's event to the recording span of ctx, if any:
// the call's span when the call has one of its own (see
// [WithTelemetry]), else the caller's.
func faultEvent(ctx context.Context, name string, attrs ...attribute.KeyValue) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(name, trace.WithAttributes(attrs...))
	}
}

// faultAborted records a call a route's fault aborted: as the call never
// reaches an endpoint, its one attempt is the client's own answer — a
// client span (no endpoint) with the event "weft.fault.abort" and the
// outcome, resp (HTTP, with r and rule) or err (gRPC, under call, which
// the caller started). Nothing is recorded without telemetry; breakers and
// outlier detection never see the call.
func (cl *cluster) faultAborted(ctx context.Context, call *calltel.Call, r *http.Request, rule *route.Rule, resp *http.Response, err error) {
	if cl.tel == nil {
		return
	}
	if r == nil { // gRPC: the call was started by the caller
		actx, att := call.StartAttempt(ctx, nil)
		faultEvent(actx, "weft.fault.abort", faultAbortKey.String(status.Code(err).String()))
		att.EndGRPC(err)
		return
	}
	ctx, call = cl.tel.StartHTTP(ctx, r)
	actx, att := call.StartAttempt(ctx, r)
	faultEvent(actx, "weft.fault.abort", faultAbortKey.Int(resp.StatusCode), faultRouteKey.String(rule.Name))
	att.EndHTTP(resp, nil)
	call.EndHTTP(resp, nil)
}

// routeMetadata returns ctx with the route's metadata changes applied to
// a copy of its outgoing metadata.
func routeMetadata(ctx context.Context, dec *route.Decision) context.Context {
	if dec.Rule.Request == nil && dec.Target.Request == nil {
		return ctx
	}
	md, _ := metadata.FromOutgoingContext(ctx) // a copy
	if md == nil {
		md = metadata.MD{}
	}
	dec.Rule.Request.ApplyMetadata(md)
	dec.Target.Request.ApplyMetadata(md)
	return metadata.NewOutgoingContext(ctx, md)
}
