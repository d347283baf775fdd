package calltel

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
)

// Destination records the client calls to one destination service. Its
// attribute sets are computed once, when it is created, and per metric
// series on first use, so recording a call builds no attribute list.
//
// A nil *Destination (what a nil [*Telemetry] returns) records nothing
// and its methods do not allocate. It is safe for concurrent use.
type Destination struct {
	t       *Telemetry
	service string
	policy  string

	callAttrs  []attribute.KeyValue     // weft.service, weft.balancer.policy
	callStart  []trace.SpanStartOption  // call spans: kind internal
	single     bool                     // calls have one attempt: no call span
	attStart   []trace.SpanStartOption  // kind client
	callNames  [len(httpMethods)]string // "GET payments"
	httpSeries cowMap[httpSeries, []metric.RecordOption]
	rpcSeries  cowMap[rpcSeries, []metric.RecordOption]
	routes     *boundedSet
	// names are the span names of attempts with a route, by method and
	// route ("GET /users/{id}").
	names cowMap[routeName, string]
	// endpoints are the span attributes of each endpoint, by ID and
	// address, built on first use.
	endpoints cowMap[endpointKey, []attribute.KeyValue]
}

type httpSeries struct {
	method uint8
	code   uint16
	errT   string
	route  string
}

type rpcSeries struct {
	method string
	code   codes.Code
}

// Destination returns the recorder of calls to service, whose endpoints
// are balanced by policy (a name such as "round_robin", recorded as
// weft.balancer.policy).
//
// retries says whether a call may make more than one attempt (retries or
// hedging are configured). When it may, each call is an internal span
// with a client span per attempt under it; when it may not, the call's
// only attempt is its only span, a client span that carries the call's
// attributes too — the structure of the semantic conventions for a
// request that is not resent, one span cheaper.
//
// Calls with the same arguments return the same Destination. A nil t
// returns nil.
func (t *Telemetry) Destination(service, policy string, retries bool) *Destination {
	if t == nil {
		return nil
	}
	key := fmt.Sprintf("%s\x00%s\x00%v", service, policy, retries)
	t.mu.Lock()
	defer t.mu.Unlock()
	if d := t.dests[key]; d != nil {
		return d
	}
	d := &Destination{t: t, service: service, policy: policy, single: !retries, routes: newBoundedSet(maxRoutes)}
	d.endpoints.limit = maxEndpoints
	d.callAttrs = []attribute.KeyValue{ServiceKey.String(service), PolicyKey.String(policy)}
	d.callStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
	d.attStart = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
	for i, m := range httpMethods {
		if i == 0 {
			m = "HTTP"
		}
		d.callNames[i] = m + " " + service
	}
	t.dests[key] = d
	return d
}

// Telemetry returns the Telemetry d records to; nil for a nil d.
func (d *Destination) Telemetry() *Telemetry {
	if d == nil {
		return nil
	}
	return d.t
}

// Service returns the destination service name; "" for a nil d.
func (d *Destination) Service() string {
	if d == nil {
		return ""
	}
	return d.service
}

// Call is one logical client call: a span of kind internal under which
// each attempt (the first, retries, hedges) is a client span of its own,
// or, for a destination without retries, no span of its own (see
// [Telemetry.Destination]). Get one from [Destination.StartHTTP] or
// [Destination.StartGRPC]; the zero value is not usable, and a nil *Call
// records nothing. Its methods are safe for concurrent use by the call's
// attempts (hedges run side by side); End it once, after its attempts.
type Call struct {
	d    *Destination
	span trace.Span
	// sc is the span context of a call whose span the sampler dropped
	// (dropped is set): its attempts are dropped too, as its children.
	sc       trace.SpanContext
	dropped  bool
	method   uint8  // HTTP method index
	rawHTTP  string // the request's HTTP method
	rpc      string // gRPC method, without the leading '/'
	attempts atomic.Int32
	inflight atomic.Int32
	// attrs collects the call span's attributes until End sets them at
	// once, in buf.
	attrs []attribute.KeyValue
	buf   *attrBuf
	// first is the call's first attempt, kept here so that a call of one
	// attempt is one allocation.
	first Attempt
}

// StartHTTP starts the logical call for the HTTP request r and returns
// the context under which its attempts are made.
func (d *Destination) StartHTTP(ctx context.Context, r *http.Request) (context.Context, *Call) {
	if d == nil {
		return ctx, nil
	}
	mi := methodIndex(r.Method)
	c := &Call{d: d, method: mi, rawHTTP: r.Method}
	if !d.single {
		if c.sc, c.dropped = d.t.decideCall(ctx, d.callNames[mi]); c.dropped {
			return unsampledContext(ctx, c.sc), c
		}
		ctx, c.span = d.t.tracer.Start(ctx, d.callNames[mi], d.callStart...)
		if c.span.IsRecording() {
			c.buf = getAttrBuf()
			c.attrs = append(append(c.buf[:0], d.callAttrs...), keyHTTPMethod.String(httpMethods[mi]))
			if mi == 0 {
				c.attrs = append(c.attrs, keyHTTPMethodOrig.String(r.Method))
			}
		}
	}
	return ctx, c
}

// StartGRPC starts the logical call of the gRPC method fullMethod
// ("/pkg.Service/Method") and returns the context under which its
// attempts are made.
func (d *Destination) StartGRPC(ctx context.Context, fullMethod string) (context.Context, *Call) {
	if d == nil {
		return ctx, nil
	}
	c := &Call{d: d, rpc: strings.TrimPrefix(fullMethod, "/")}
	if !d.single {
		if c.sc, c.dropped = d.t.decideCall(ctx, c.rpc); c.dropped {
			return unsampledContext(ctx, c.sc), c
		}
		ctx, c.span = d.t.tracer.Start(ctx, c.rpc, d.callStart...)
		if c.span.IsRecording() {
			c.buf = getAttrBuf()
			c.attrs = append(append(c.buf[:0], d.callAttrs...), rpcSystemGRPC, keyRPCMethod.String(c.rpc))
		}
	}
	return ctx, c
}

// decideCall is decide for a call span (kind internal), saying whether
// it is dropped.
func (t *Telemetry) decideCall(ctx context.Context, name string) (trace.SpanContext, bool) {
	sc, start := t.decide(ctx, name, trace.SpanKindInternal)
	return sc, !start
}

// droppedSpan is the span of an attempt the sampler dropped: it records
// nothing, and, made once, costs nothing per attempt.
var droppedSpan trace.Span = noop.Span{}

// Attempt is one attempt of a [Call]: a client span and one
// measurement of the request duration metric. Get one from
// [Call.StartAttempt]; the zero value is not usable, and a nil *Attempt
// records nothing. An Attempt belongs to the goroutine that makes the
// attempt: its methods are not for concurrent use. End it once.
type Attempt struct {
	c    *Call
	ctx  context.Context
	span trace.Span
	// sc is the span context of the attempt's span, which a dropped
	// attempt has without a span.
	sc    trace.SpanContext
	start time.Time
	n     int32
	route string
	// attrs collects the span's attributes until End sets them at once,
	// in buf.
	attrs []attribute.KeyValue
	buf   *attrBuf
	// inject holds what the propagator injects for the attempt: the
	// header fields or metadata pairs, in storage of the attempt's own.
	inject injection
}

// StartAttempt starts an attempt of c, numbered from 1 in the order
// attempts start. An attempt started while another of the call is in
// flight is a hedge (weft.hedge=true); any other attempt after the first
// is a retry (weft.retry=true). ctx is the attempt's context (the call's
// context or one derived from it); the returned context carries the
// attempt's span and is the one to send the attempt with. r is the
// attempt's HTTP request, nil for gRPC.
//
// An attempt that Telemetry's sampler drops (or whose call it dropped)
// has no span: the returned context is ctx itself, unless a recording
// span is in ctx, which the attempt's events must not reach; then it
// carries the attempt's span context. The attempt's trace context is
// propagated all the same (see [Attempt.InjectHTTP]).
func (c *Call) StartAttempt(ctx context.Context, r *http.Request) (context.Context, *Attempt) {
	if c == nil {
		return ctx, nil
	}
	d := c.d
	n := c.attempts.Add(1)
	a := &c.first
	if n > 1 {
		a = new(Attempt)
	}
	a.c, a.start, a.n = c, d.t.now(), n
	hedge := c.inflight.Add(1) > 1
	retry := a.n > 1 && !hedge
	name := c.rpc
	if c.rpc == "" {
		name = httpMethods[c.method]
		if c.method == 0 {
			name = "HTTP"
		}
		if d.t.route != nil && r != nil {
			if a.route = d.routes.get(d.t.route(r)); a.route != "" {
				name = d.names.get(routeName{c.method, a.route}, func() string { return name + " " + a.route })
			}
		}
	}
	start := true
	switch {
	case c.dropped:
		a.sc, start = child(c.sc), false
	case d.single:
		a.sc, start = d.t.decide(ctx, name, trace.SpanKindClient)
	}
	if !start {
		a.ctx, a.span, a.attrs = unsampledContext(ctx, a.sc), droppedSpan, nil
		return a.ctx, a
	}
	a.ctx, a.span = d.t.tracer.Start(ctx, name, d.attStart...)
	a.sc = a.span.SpanContext()
	if a.span.IsRecording() {
		a.buf = getAttrBuf()
		attrs := a.buf[:0]
		if d.single {
			// The attempt is the call's only span: it carries the call's
			// attributes. Otherwise the call span above it has them.
			attrs = append(attrs, d.callAttrs...)
		}
		attrs = append(attrs, AttemptKey.Int(int(a.n)), RetryKey.Bool(retry), HedgeKey.Bool(hedge))
		if c.rpc != "" {
			attrs = append(attrs, rpcSystemGRPC, keyRPCMethod.String(c.rpc))
		} else {
			attrs = append(attrs, keyHTTPMethod.String(httpMethods[c.method]))
			if c.method == 0 {
				attrs = append(attrs, keyHTTPMethodOrig.String(c.rawHTTP))
			}
			if a.n > 1 {
				attrs = append(attrs, keyHTTPResend.Int(int(a.n-1)))
			}
			if a.route != "" {
				attrs = append(attrs, keyURLTemplate.String(a.route))
			}
			if r != nil && r.URL != nil {
				// url.full without query or fragment: they may carry secrets.
				attrs = append(attrs, keyURLFull.String(r.URL.Scheme+"://"+r.URL.Host+r.URL.EscapedPath()))
			}
		}
		a.attrs = attrs
	}
	return a.ctx, a
}

// InjectHTTP returns the header to send the attempt with: h with the
// attempt's trace context added, in a copy (h itself is not modified),
// or h itself when the propagator has nothing to add. The copy shares
// h's value slices, which a request's sender only reads.
func (a *Attempt) InjectHTTP(h http.Header) http.Header {
	if a == nil {
		return h
	}
	in := &a.inject
	in.src, in.dst = h, nil
	a.c.d.t.inject(a.ctx, a.sc, (*headerInjector)(in), in)
	if in.dst == nil {
		return h
	}
	return in.dst
}

// SetEndpoint records the endpoint the balancer chose for the attempt:
// its ID and its address (host:port).
func (a *Attempt) SetEndpoint(id, addr string) {
	if a == nil || a.attrs == nil {
		return
	}
	a.attrs = append(a.attrs, a.c.d.endpoints.get(endpointKey{id, addr}, func() []attribute.KeyValue {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return []attribute.KeyValue{EndpointKey.String(id), keyServerAddr.String(addr)}
		}
		p, _ := strconv.Atoi(port)
		return []attribute.KeyValue{EndpointKey.String(id), keyServerAddr.String(host), keyServerPort.Int(p)}
	})...)
}

// maxEndpoints bounds the endpoints whose span attributes a destination
// keeps; those of further endpoints are built per attempt.
const maxEndpoints = 1024

// endpointKey identifies an endpoint's span attributes.
type endpointKey struct{ id, addr string }

// SetBreakerState records the state of the chosen endpoint's circuit
// breaker when it admitted the attempt: "closed", "half-open" or "open".
func (a *Attempt) SetBreakerState(state string) {
	if a == nil || a.attrs == nil {
		return
	}
	a.attrs = append(a.attrs, BreakerStateKey.String(breakerState(state)))
}

// EndHTTP ends the attempt with its response or error. Only the status
// code of resp is read.
func (a *Attempt) EndHTTP(resp *http.Response, err error) {
	if a == nil {
		return
	}
	a.c.inflight.Add(-1)
	code, errT := httpOutcome(resp, err, 400)
	if a.attrs != nil {
		a.span.SetAttributes(appendHTTPOutcome(a.span, a.attrs, code, errT, err)...)
		a.attrs, a.buf = nil, a.buf.put()
	}
	a.span.End()
	d := a.c.d
	opts := d.httpSeries.get(httpSeries{method: a.c.method, code: uint16(code), errT: errT, route: a.route}, func() []metric.RecordOption {
		kv := []attribute.KeyValue{keyHTTPMethod.String(httpMethods[a.c.method]), keyServerAddr.String(d.service), ServiceKey.String(d.service)}
		return recordOptions(kv, code, errT, keyURLTemplate, a.route)
	})
	d.t.inst.httpClient.Record(a.ctx, d.t.now().Sub(a.start).Seconds(), opts...)
}

// EndGRPC ends the attempt with the error the call returned (nil for OK).
func (a *Attempt) EndGRPC(err error) {
	if a == nil {
		return
	}
	a.c.inflight.Add(-1)
	code := grpcCode(err)
	if a.attrs != nil {
		a.span.SetAttributes(appendGRPCOutcome(a.span, a.attrs, code, err)...)
		a.attrs, a.buf = nil, a.buf.put()
	}
	a.span.End()
	d := a.c.d
	method := d.t.methods.get(a.c.rpc)
	opts := d.rpcSeries.get(rpcSeries{method: method, code: code}, func() []metric.RecordOption {
		return rpcRecordOptions(method, code, keyServerAddr.String(d.service), ServiceKey.String(d.service))
	})
	d.t.inst.rpcClient.Record(a.ctx, d.t.now().Sub(a.start).Seconds(), opts...)
}

// EndHTTP ends the logical call with the response or error it returns.
func (c *Call) EndHTTP(resp *http.Response, err error) {
	if c == nil || c.span == nil {
		return
	}
	if c.attrs != nil {
		code, errT := httpOutcome(resp, err, 400)
		c.span.SetAttributes(appendHTTPOutcome(c.span, c.attrs, code, errT, err)...)
		c.attrs, c.buf = nil, c.buf.put()
	}
	c.span.End()
}

// EndGRPC ends the logical call with the error it returns (nil for OK).
func (c *Call) EndGRPC(err error) {
	if c == nil || c.span == nil {
		return
	}
	if c.attrs != nil {
		c.span.SetAttributes(appendGRPCOutcome(c.span, c.attrs, grpcCode(err), err)...)
		c.attrs, c.buf = nil, c.buf.put()
	}
	c.span.End()
}

// httpOutcome returns the status code and the error.type of an HTTP
// outcome; statuses from errorFrom up are errors.
func httpOutcome(resp *http.Response, err error, errorFrom int) (int, string) {
	code := 0
	if resp != nil {
		code = resp.StatusCode
	}
	switch {
	case err != nil:
		return code, errorType(err)
	case code >= errorFrom:
		return code, statusString(code)
	}
	return code, ""
}

// appendHTTPOutcome appends the outcome attributes of an HTTP span to
// attrs and sets the span's status on error.
func appendHTTPOutcome(span trace.Span, attrs []attribute.KeyValue, code int, errT string, err error) []attribute.KeyValue {
	if code > 0 {
		attrs = append(attrs, keyHTTPStatus.Int(code))
	}
	if errT != "" {
		attrs = append(attrs, keyErrorType.String(errT))
		span.SetStatus(otelcodes.Error, Redact(err))
	}
	return attrs
}

// appendGRPCOutcome is appendHTTPOutcome for gRPC.
func appendGRPCOutcome(span trace.Span, attrs []attribute.KeyValue, code codes.Code, err error) []attribute.KeyValue {
	attrs = append(attrs, keyRPCStatus.String(grpcCodeName(code)))
	if code != codes.OK {
		attrs = append(attrs, keyErrorType.String(grpcCodeName(code)))
		span.SetStatus(otelcodes.Error, Redact(err))
	}
	return attrs
}

// recordOptions builds the record options of one HTTP series.
func recordOptions(kv []attribute.KeyValue, code int, errT string, routeKey attribute.Key, route string) []metric.RecordOption {
	if code > 0 {
		kv = append(kv, keyHTTPStatus.Int(code))
	}
	if errT != "" {
		kv = append(kv, keyErrorType.String(errT))
	}
	if route != "" {
		kv = append(kv, routeKey.String(route))
	}
	return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
}

// rpcRecordOptions builds the record options of one RPC series.
func rpcRecordOptions(method string, code codes.Code, extra ...attribute.KeyValue) []metric.RecordOption {
	kv := append([]attribute.KeyValue{rpcSystemGRPC, keyRPCMethod.String(method), keyRPCStatus.String(grpcCodeName(code))}, extra...)
	if code != codes.OK {
		kv = append(kv, keyErrorType.String(grpcCodeName(code)))
	}
	return []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(kv...))}
}

// breakerState bounds a breaker state to the known set.
func breakerState(s string) string {
	switch s {
	case "closed", "half-open", "open":
		return s
	}
	return other
}

// InjectGRPC returns ctx with the attempt's trace context added to the
// outgoing gRPC metadata; ctx itself for a nil a, or when the
// propagator has nothing to add.
func (a *Attempt) InjectGRPC(ctx context.Context) context.Context {
	if a == nil {
		return ctx
	}
	in := &a.inject
	in.kv = in.kvBuf[:0]
	a.c.d.t.inject(a.ctx, a.sc, (*mdInjector)(in), in)
	if len(in.kv) == 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, in.kv...)
}

// injection receives what a propagator injects for one attempt, into
// storage of the attempt's own: the default propagators set at most
// three fields (traceparent, tracestate, baggage), so an attempt adds
// its trace context without allocating for the fields themselves.
type injection struct {
	// HTTP: the caller's header, and the copy made on the first Set,
	// with room for the fields the propagator is expected to set: exact
	// room keeps a small header in Go's smallest map, in two allocations.
	src, dst http.Header
	fields   int
	vals     [injectSlots]string
	nv       int
	// gRPC: key/value pairs for the outgoing metadata, in kvBuf until
	// it is full.
	kv    []string
	kvBuf [2 * injectSlots]string
	// tp holds the attempt's traceparent value once formatted; it is
	// never written again, so strings made from it stay valid.
	tp     [traceparentLen]byte
	tpUsed bool
}

// traceparentLen is the length of a version 00 traceparent value.
const traceparentLen = len("00-") + 32 + len("-") + 16 + len("-") + 2

// inject injects the trace context of ctx, whose span context is sc,
// into carrier, whose storage is in. With the default propagators it
// writes the traceparent value into in (once per attempt) instead of
// allocating it, and injects baggage only when ctx has some; the header
// values are those of propagation.TraceContext and propagation.Baggage.
func (t *Telemetry) inject(ctx context.Context, sc trace.SpanContext, carrier propagation.TextMapCarrier, in *injection) {
	if !t.w3c || in.tpUsed {
		if !sc.Equal(trace.SpanContextFromContext(ctx)) {
			ctx = trace.ContextWithSpanContext(ctx, sc) // a dropped attempt's
		}
		in.fields = t.fields
		t.prop.Inject(ctx, carrier)
		return
	}
	ts, bag := sc.TraceState(), baggage.FromContext(ctx)
	in.fields = min(bag.Len(), 1)
	if sc.IsValid() {
		in.fields += 1 + min(ts.Len(), 1)
		if ts.Len() > 0 {
			carrier.Set("tracestate", ts.String())
		}
		carrier.Set("traceparent", in.traceparent(sc))
	}
	if bag.Len() > 0 {
		carrier.Set("baggage", bag.String())
	}
}

// traceparent formats the traceparent value of sc into in.tp, as
// propagation.TraceContext does, and returns it as a string that shares
// in.tp's memory.
func (in *injection) traceparent(sc trace.SpanContext) string {
	in.tpUsed = true
	tid, sid := sc.TraceID(), sc.SpanID()
	b := append(in.tp[:0], "00-"...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, sid[:])
	b = append(b, '-')
	b = hex.AppendEncode(b, []byte{byte(sc.TraceFlags() & (trace.FlagsSampled | trace.FlagsRandom))})
	return unsafe.String(&b[0], len(b))
}

const injectSlots = 3

// headerInjector is the HTTP carrier of an injection.
type headerInjector injection

func (c *headerInjector) Get(key string) string {
	h := c.dst
	if h == nil {
		h = c.src
	}
	return headerCarrier(h).Get(key)
}

func (c *headerInjector) Set(key, value string) {
	if c.dst == nil {
		c.dst = make(http.Header, len(c.src)+c.fields)
		for k, v := range c.src {
			c.dst[k] = v
		}
	}
	if c.nv == len(c.vals) {
		headerCarrier(c.dst).Set(key, value)
		return
	}
	c.vals[c.nv] = value
	c.dst[canonicalKey(key)] = c.vals[c.nv : c.nv+1 : c.nv+1]
	c.nv++
}

func (c *headerInjector) Keys() []string {
	h := c.dst
	if h == nil {
		h = c.src
	}
	return headerCarrier(h).Keys()
}

// mdInjector is the gRPC carrier of an injection: it collects the pairs
// that InjectGRPC appends to the outgoing metadata.
type mdInjector injection

func (c *mdInjector) Get(key string) string {
	for i := 0; i+1 < len(c.kv); i += 2 {
		if c.kv[i] == key {
			return c.kv[i+1]
		}
	}
	return ""
}

func (c *mdInjector) Set(key, value string) {
	key = strings.ToLower(key)
	for i := 0; i+1 < len(c.kv); i += 2 {
		if c.kv[i] == key {
			c.kv[i+1] = value
			return
		}
	}
	c.kv = append(c.kv, key, value)
}

func (c *mdInjector) Keys() []string {
	keys := make([]string, 0, len(c.kv)/2)
	for i := 0; i+1 < len(c.kv); i += 2 {
		keys = append(keys, c.kv[i])
	}
	return keys
}
