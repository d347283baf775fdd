package calltel_test

import (
	"context"
	"net/http"
	"reflect"
	"testing"

	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/calltel"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// custom injects one header of its own, or nothing when empty.
type custom string

func (c custom) Inject(_ context.Context, carrier propagation.TextMapCarrier) {
	if c != "" {
		carrier.Set("X-Custom", string(c))
	}
}
func (custom) Extract(ctx context.Context, _ propagation.TextMapCarrier) context.Context { return ctx }
func (c custom) Fields() []string                                                        { return []string{"x-custom"} }

// TestInjectMatchesPropagator checks that an attempt injects exactly the
// fields its propagator would, for HTTP and gRPC, without touching the
// caller's header or metadata, and adds nothing (no copy, the same
// context) when the propagator has nothing to inject.
func TestInjectMatchesPropagator(t *testing.T) {
	w3c := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	ts, _ := trace.ParseTraceState("vendor=opaque,other=1")
	bag, _ := baggage.Parse("user=alice") // one member: baggage encodes members in map order
	cases := []struct {
		name    string
		prop    propagation.TextMapPropagator // nil: the default
		flags   trace.TraceFlags
		state   trace.TraceState
		baggage bool
		none    bool // nothing to inject
	}{
		{name: "unsampled", flags: 0},
		{name: "sampled", flags: trace.FlagsSampled},
		{name: "random flag", flags: trace.FlagsSampled | trace.FlagsRandom},
		{name: "tracestate", flags: trace.FlagsSampled, state: ts},
		{name: "baggage", flags: 0, baggage: true},
		{name: "custom propagator", prop: custom("v")},
		{name: "nothing to inject", prop: custom(""), none: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tp := sdktrace.NewTracerProvider()
			defer tp.Shutdown(context.Background())
			tel, err := calltel.New(calltel.Config{TracerProvider: tp, Propagator: tc.prop})
			if err != nil {
				t.Fatal(err)
			}
			want := tc.prop
			if want == nil {
				want = w3c
			}
			ctx := trace.ContextWithRemoteSpanContext(context.Background(),
				trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: tc.flags, TraceState: tc.state, Remote: true}))
			if tc.baggage {
				ctx = baggage.ContextWithBaggage(ctx, bag)
			}
			dst := tel.Destination("svc", "round_robin", false)

			// HTTP: the caller's header keeps its one field.
			orig := http.Header{"Accept": {"*/*"}}
			r, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
			cctx, call := dst.StartHTTP(ctx, r)
			actx, att := call.StartAttempt(cctx, r)
			got := att.InjectHTTP(orig)
			expect := orig.Clone()
			want.Inject(actx, propagation.HeaderCarrier(expect))
			if !reflect.DeepEqual(got, expect) {
				t.Errorf("HTTP header %v, want %v", got, expect)
			}
			if len(orig) != 1 {
				t.Errorf("caller's header changed: %v", orig)
			}
			if same := reflect.ValueOf(got).UnsafePointer() == reflect.ValueOf(orig).UnsafePointer(); same != tc.none {
				t.Errorf("header copied: %v, want %v", !same, !tc.none)
			}
			att.EndHTTP(&http.Response{StatusCode: 200}, nil)
			call.EndHTTP(&http.Response{StatusCode: 200}, nil)

			// gRPC: the caller's outgoing metadata stays, the fields are added.
			gctx := metadata.AppendToOutgoingContext(ctx, "x-caller", "1")
			cctx, gcall := dst.StartGRPC(gctx, "/a.B/C")
			actx, gatt := gcall.StartAttempt(cctx, nil)
			out := gatt.InjectGRPC(actx)
			md, _ := metadata.FromOutgoingContext(out)
			wantMD := metadata.Pairs("x-caller", "1")
			want.Inject(actx, propagation.HeaderCarrier(wantMD))
			for k, v := range wantMD { // HeaderCarrier canonicalizes; metadata keys are lower case
				delete(wantMD, k)
				wantMD[http.CanonicalHeaderKey(k)] = v
			}
			gotMD := metadata.MD{}
			for k, v := range md {
				gotMD[http.CanonicalHeaderKey(k)] = v
			}
			if !reflect.DeepEqual(gotMD, wantMD) {
				t.Errorf("gRPC metadata %v, want %v", gotMD, wantMD)
			}
			if (out == actx) != tc.none {
				t.Errorf("context replaced: %v, want %v", out != actx, !tc.none)
			}
			gatt.EndGRPC(nil)
			gcall.EndGRPC(nil)
		})
	}
}

// TestUnsampledAllocations bounds what a call that weft's sampler drops
// costs in allocations with the OpenTelemetry SDK, whatever the tracer
// provider would decide (it is never asked):
//
//   - a client call: the call (with its first attempt, one), and the
//     propagation of the sampled=0 trace context — for HTTP the header
//     copy a RoundTripper must make to add a field (a map and its
//     table, two); for gRPC what grpc-go's AppendToOutgoingContext
//     allocates (four). A call with retries is the same: its dropped
//     call span is never made.
//   - a served request: its state (one), the context that carries the
//     dropped server span to the handler (one), and for HTTP the request
//     copy that carries that context (one), for gRPC the copy grpc-go
//     makes of the incoming traceparent value (one).
//
// Metrics are recorded with prebuilt attribute sets and allocate nothing.
func TestUnsampledAllocations(t *testing.T) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	tel, err := calltel.New(calltel.Config{TracerProvider: tp, Sampler: sdktrace.ParentBased(sdktrace.NeverSample())})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
	full := r.Clone(context.Background()) // the header copy must stay Go's smallest map
	for _, k := range []string{"Accept", "Accept-Encoding", "Authorization", "Content-Type", "User-Agent", "X-Request-Id", "X-Tenant"} {
		full.Header.Set(k, "v")
	}
	resp := &http.Response{StatusCode: http.StatusOK}
	ctx := context.Background()
	const unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	served, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
	served.Header.Set("traceparent", unsampled)
	handler := tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if trace.SpanContextFromContext(r.Context()).TraceID().String() != "0af7651916cd43dd8448eb211c80319c" {
			t.Error("handler's context does not continue the trace")
		}
	}), nil)
	w := discardWriter{}
	intercept := tel.UnaryServerInterceptor(nil)
	info := &grpc.UnaryServerInfo{FullMethod: "/a.B/C"}
	in := metadata.NewIncomingContext(ctx, metadata.Pairs("traceparent", unsampled, "x-other", "1"))
	noop := func(context.Context, any) (any, error) { return nil, nil }
	single, retries := tel.Destination("svc", "round_robin", false), tel.Destination("svc", "round_robin", true)
	for _, tc := range []struct {
		name string
		max  float64
		call func()
	}{
		{"http client", 3, func() { httpCall(single, ctx, r, resp) }},
		{"http client with retries", 3, func() { httpCall(retries, ctx, r, resp) }},
		{"http client, seven header fields", 3, func() { httpCall(single, ctx, full, resp) }},
		{"grpc client", 5, func() { grpcCall(single, ctx) }},
		{"grpc client with retries", 5, func() { grpcCall(retries, ctx) }},
		{"http server", 3, func() { handler.ServeHTTP(w, served) }},
		{"grpc server", 3, func() { _, _ = intercept(in, nil, info, noop) }},
	} {
		if n := testing.AllocsPerRun(200, tc.call); n > tc.max {
			t.Errorf("%s: %v allocations per unsampled call, want at most %v", tc.name, n, tc.max)
		}
	}
}

// httpCall records an HTTP call of one attempt to dst, as mesh does.
func httpCall(dst *calltel.Destination, ctx context.Context, r *http.Request, resp *http.Response) {
	cctx, call := dst.StartHTTP(ctx, r)
	_, att := call.StartAttempt(cctx, r)
	att.SetEndpoint("svc-1", "10.0.0.1:8443")
	_ = att.InjectHTTP(r.Header)
	att.EndHTTP(resp, nil)
	call.EndHTTP(resp, nil)
}

// grpcCall records a gRPC call of one attempt to dst, as mesh does.
func grpcCall(dst *calltel.Destination, ctx context.Context) {
	cctx, call := dst.StartGRPC(ctx, "/a.B/C")
	actx, att := call.StartAttempt(cctx, nil)
	att.SetEndpoint("svc-1", "10.0.0.1:8443")
	_ = att.InjectGRPC(actx)
	att.EndGRPC(nil)
	call.EndGRPC(nil)
}

// discardWriter is a ResponseWriter that keeps nothing.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return nil }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
