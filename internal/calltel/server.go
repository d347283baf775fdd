package calltel

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// PeerFunc returns the verified SPIFFE ID of the caller of a request,
// given its context, or an error when there is none. Package telemetry's
// PeerFunc converts to it.
type PeerFunc = func(context.Context) (spiffeid.ID, error)

var (
	serverStart  = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}
	authzAllowed = AuthzDecisionKey.String("allow")
)

type serverHTTPSeries struct {
	method uint8
	code   uint16
	errT   string
	route  string
	tls    bool
}

// Handler returns h wrapped in a server span and the
// http.server.request.duration metric. The span continues the trace
// context the request carries (a malformed one is ignored and a new
// trace starts), is named "{method} {route}" once the route is known, and
// carries the caller's SPIFFE ID as peer finds it (nil peer: none).
//
// Requests reaching h over mutual TLS passed authorization at the
// handshake, so their spans say weft.authorization.decision=allow.
// A nil t returns h itself.
func (t *Telemetry) Handler(h http.Handler, peer PeerFunc) http.Handler {
	if t == nil {
		return h
	}
	return &handler{t: t, next: h, peer: peer}
}

type handler struct {
	t    *Telemetry
	next http.Handler
	peer PeerFunc
	// series of http.server.request.duration, built on first use.
	series cowMap[serverHTTPSeries, []metric.RecordOption]
	// names are the span names of routes, by method and route.
	names cowMap[routeName, string]
}

// served is what a handler keeps of one request, in one allocation: the
// writer that learns the status, and the storage of the request's span
// when the sampler drops it.
type served struct {
	statusWriter
	span localSpan
	buf  *attrBuf // the span's attributes, when it records
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t := h.t
	start := t.now()
	sv := &served{statusWriter: statusWriter{ResponseWriter: w}}
	ctx := t.extract(r.Context(), headerCarrier(r.Header), &sv.span)
	mi := methodIndex(r.Method)
	name := httpMethods[mi]
	if mi == 0 {
		name = "HTTP"
	}
	ctx, span := t.startServer(ctx, name, &sv.span)
	recording := span.IsRecording()
	var attrs []attribute.KeyValue
	if recording {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		sv.buf = getAttrBuf()
		attrs = append(sv.buf[:0], keyHTTPMethod.String(httpMethods[mi]), keyURLScheme.String(scheme), keyURLPath.String(r.URL.EscapedPath()))
		if mi == 0 {
			attrs = append(attrs, keyHTTPMethodOrig.String(truncate(r.Method, 32)))
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			attrs = append(attrs, keyPeerAddr.String(host))
		}
		if h.peer != nil {
			if id, err := h.peer(ctx); err == nil {
				attrs = append(attrs, PeerIDKey.String(id.String()), authzAllowed)
			}
		}
		// Set now: an authorization denial later in the chain overrides
		// the decision.
		span.SetAttributes(attrs...)
		attrs = attrs[:0]
	}
	rw := &sv.statusWriter
	r = r.WithContext(ctx)
	defer func() {
		code := rw.status
		if code == 0 {
			code = http.StatusOK
		}
		if p := recover(); p != nil {
			code = http.StatusInternalServerError
			defer panic(p)
		}
		route := r.Pattern
		if i := strings.IndexByte(route, '/'); i > 0 {
			route = route[i:] // "GET host/path/{x}" → "/path/{x}"
		}
		if t.route != nil {
			route = t.route(r)
		}
		route = t.serverRoutes(route)
		_, errT := httpOutcome(&http.Response{StatusCode: code}, nil, 500)
		if recording {
			if route != "" {
				span.SetName(h.names.get(routeName{mi, route}, func() string { return name + " " + route }))
				attrs = append(attrs, keyHTTPRoute.String(route))
			}
			span.SetAttributes(appendHTTPOutcome(span, attrs, code, errT, nil)...)
			sv.buf = sv.buf.put()
		}
		span.End()
		opts := h.series.get(serverHTTPSeries{method: mi, code: uint16(code), errT: errT, route: route, tls: r.TLS != nil}, func() []metric.RecordOption {
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			kv := []attribute.KeyValue{keyHTTPMethod.String(httpMethods[mi]), keyURLScheme.String(scheme)}
			return recordOptions(kv, code, errT, keyHTTPRoute, route)
		})
		t.inst.httpServer.Record(ctx, t.now().Sub(start).Seconds(), opts...)
	}()
	h.next.ServeHTTP(rw, r)
}

// extract returns ctx with the trace context and baggage carrier
// carries. With the default propagators it parses the traceparent itself
// and puts the remote parent in ctx as span, which startServer then
// reuses for the server span when the sampler drops it: a context is the
// only allocation.
func (t *Telemetry) extract(ctx context.Context, carrier propagation.TextMapCarrier, span *localSpan) context.Context {
	if !t.w3c {
		return t.prop.Extract(ctx, carrier)
	}
	ctx = propagation.Baggage{}.Extract(ctx, carrier)
	if tp := carrier.Get("traceparent"); tp != "" {
		if sc := extractW3C(tp, carrier.Get("tracestate")); sc.IsValid() {
			span.sc, span.tp = sc, t.tp
			ctx = trace.ContextWithSpan(ctx, span)
		}
	}
	return ctx
}

// startServer starts the server span named name under the parent in ctx,
// which extract returned with span. When the sampler drops the span, span
// becomes the dropped server span, and ctx carries it: put there by
// extract (it was the parent, which nothing has read since but the
// sampler), or now.
func (t *Telemetry) startServer(ctx context.Context, name string, span *localSpan) (context.Context, trace.Span) {
	sc, start := t.decide(ctx, name, trace.SpanKindServer)
	if start {
		return t.tracer.Start(ctx, name, serverStart...)
	}
	inCtx := span.tp != nil
	span.sc, span.tp = sc, t.tp
	if !inCtx {
		ctx = trace.ContextWithSpan(ctx, span)
	}
	return ctx, span
}

// serverRoutes bounds the routes of all of t's servers.
func (t *Telemetry) serverRoutes(route string) string {
	if route == "" {
		return ""
	}
	return t.routes.get(route)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// statusWriter records the status code a handler writes.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush implements [http.Flusher] when the underlying writer does.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack implements [http.Hijacker] when the underlying writer does.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := w.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("telemetry: response writer cannot hijack")
}

// Unwrap lets [http.ResponseController] reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// incomingMD reads trace context from the incoming gRPC metadata of
// ctx, one key at a time: grpc-go copies only the values asked for, not
// the whole metadata.
type incomingMD struct{ ctx context.Context }

func (c *incomingMD) Get(key string) string {
	if v := metadata.ValueFromIncomingContext(c.ctx, key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// Set does nothing: the incoming metadata is read only.
func (c *incomingMD) Set(string, string) {}

func (c *incomingMD) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}

// UnaryServerInterceptor returns the gRPC server interceptor that records
// each unary call as a server span and in rpc.server.call.duration, with
// the caller's SPIFFE ID as peer finds it (nil peer: none). A nil t
// returns nil, which mesh leaves out of the server options.
func (t *Telemetry) UnaryServerInterceptor(peer PeerFunc) grpc.UnaryServerInterceptor {
	if t == nil {
		return nil
	}
	s := &grpcServer{t: t, peer: peer}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, c := s.start(ctx, info.FullMethod)
		resp, err := handler(ctx, req)
		c.end(err)
		return resp, err
	}
}

// StreamServerInterceptor is [Telemetry.UnaryServerInterceptor] for
// streaming calls: the span covers the whole stream.
func (t *Telemetry) StreamServerInterceptor(peer PeerFunc) grpc.StreamServerInterceptor {
	if t == nil {
		return nil
	}
	s := &grpcServer{t: t, peer: peer}
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, c := s.start(ss.Context(), info.FullMethod)
		err := handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
		c.end(err)
		return err
	}
}

type grpcServer struct {
	t      *Telemetry
	peer   PeerFunc
	series cowMap[rpcSeries, []metric.RecordOption]
}

// servedCall is one served gRPC call, in one allocation with the
// storage of its span when the sampler drops it.
type servedCall struct {
	s      *grpcServer
	ctx    context.Context
	begin  time.Time
	method string
	span   trace.Span
	attrs  []attribute.KeyValue // nil unless the span records
	local  localSpan
	in     incomingMD
	buf    *attrBuf // the span's attributes, when it records
}

func (s *grpcServer) start(ctx context.Context, fullMethod string) (context.Context, *servedCall) {
	t := s.t
	c := &servedCall{s: s, begin: t.now(), in: incomingMD{ctx}}
	ctx = t.extract(ctx, &c.in, &c.local)
	raw := strings.TrimPrefix(fullMethod, "/")
	c.method = t.methods.get(raw)
	name := c.method
	if c.method == other {
		name = "grpc"
	}
	ctx, c.span = t.startServer(ctx, name, &c.local)
	if c.span.IsRecording() {
		c.buf = getAttrBuf()
		attrs := append(c.buf[:0], rpcSystemGRPC, keyRPCMethod.String(c.method))
		if c.method == other {
			attrs = append(attrs, keyRPCMethodOrig.String(truncate(raw, 256)))
		}
		if s.peer != nil {
			if id, err := s.peer(ctx); err == nil {
				attrs = append(attrs, PeerIDKey.String(id.String()), authzAllowed)
			}
		}
		// Set now: an authorization denial later in the chain overrides
		// the decision.
		c.span.SetAttributes(attrs...)
		c.attrs = attrs[:0]
	}
	c.ctx = ctx
	return ctx, c
}

// end ends the call with the error its handler returned.
func (c *servedCall) end(err error) {
	s, t := c.s, c.s.t
	code := grpcCode(err)
	if c.attrs != nil {
		c.span.SetAttributes(appendGRPCOutcome(c.span, c.attrs, code, err)...)
		c.buf = c.buf.put()
	}
	c.span.End()
	opts := s.series.get(rpcSeries{method: c.method, code: code}, func() []metric.RecordOption {
		return rpcRecordOptions(c.method, code)
	})
	t.inst.rpcServer.Record(c.ctx, t.now().Sub(c.begin).Seconds(), opts...)
}

type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }
