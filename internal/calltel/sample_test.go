package calltel_test

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/calltel"
)

// samplerRig is calltel sampling with a sampler: weft's own, in front of
// a tracer provider that records every span it is asked for; or, to
// compare, the provider's, weft having none.
type samplerRig struct {
	tp    *sdktrace.TracerProvider
	spans *tracetest.SpanRecorder
	tel   *calltel.Telemetry
}

// samplerOwners are who samples in a samplerRig: weft, or the provider.
var samplerOwners = []string{"weft", "provider"}

func newSamplerRig(t *testing.T, sampler sdktrace.Sampler, owner string) *samplerRig {
	t.Helper()
	r := &samplerRig{spans: tracetest.NewSpanRecorder()}
	cfg := calltel.Config{Sampler: sampler}
	provider := sdktrace.AlwaysSample()
	if owner == "provider" {
		cfg.Sampler, provider = nil, sampler
	}
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(provider), sdktrace.WithSpanProcessor(r.spans))
	t.Cleanup(func() { _ = r.tp.Shutdown(context.Background()) })
	cfg.TracerProvider = r.tp
	tel, err := calltel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.tel = tel
	return r
}

// sentContext is the trace context an attempt sent, as the next hop's
// W3C propagator reads it.
func sentContext(h http.Header) trace.SpanContext {
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(h)))
}

// remoteParent is a caller's trace context with the given flags and a
// tracestate.
func remoteParent(t *testing.T, flags trace.TraceFlags) trace.SpanContext {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	ts, err := trace.ParseTraceState("vendor=opaque")
	if err != nil {
		t.Fatal(err)
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags, TraceState: ts, Remote: true})
}

// TestSamplerClient checks the client side of a sampler of weft's own:
// a dropped call starts no span, yet sends a valid trace context with
// the sampled flag cleared that continues the caller's trace (its trace
// ID, random flag and tracestate) under a span ID of its own per
// attempt; a sampled parent still gives sampled children, recorded under
// it; and a new trace is dropped or sampled as the sampler says: what
// the SDK does when the provider's sampler decides, which each case
// checks too.
func TestSamplerClient(t *testing.T) {
	sampled := trace.FlagsSampled | trace.FlagsRandom
	for _, tc := range []struct {
		name    string
		sampler sdktrace.Sampler
		parent  trace.TraceFlags // 0xff: no parent
		retries bool
		grpc    bool
		want    bool // the attempts are sampled
	}{
		{name: "new trace dropped", sampler: sdktrace.ParentBased(sdktrace.NeverSample()), parent: 0xff},
		{name: "new trace dropped, retries", sampler: sdktrace.ParentBased(sdktrace.NeverSample()), parent: 0xff, retries: true},
		{name: "new trace sampled", sampler: sdktrace.ParentBased(sdktrace.AlwaysSample()), parent: 0xff, want: true},
		{name: "unsampled parent", sampler: sdktrace.ParentBased(sdktrace.AlwaysSample()), parent: trace.FlagsRandom},
		{name: "unsampled parent, retries", sampler: sdktrace.ParentBased(sdktrace.AlwaysSample()), parent: trace.FlagsRandom, retries: true},
		{name: "unsampled parent, grpc", sampler: sdktrace.ParentBased(sdktrace.AlwaysSample()), parent: 0, grpc: true},
		{name: "sampled parent", sampler: sdktrace.ParentBased(sdktrace.NeverSample()), parent: sampled, want: true},
		{name: "sampled parent, retries", sampler: sdktrace.ParentBased(sdktrace.NeverSample()), parent: sampled, retries: true, want: true},
		{name: "sampled parent, grpc retries", sampler: sdktrace.ParentBased(sdktrace.NeverSample()), parent: sampled, retries: true, grpc: true, want: true},
		{name: "ratio drops every trace", sampler: sdktrace.TraceIDRatioBased(0), parent: sampled},
	} {
		for _, owner := range samplerOwners {
			t.Run(tc.name+"/"+owner, func(t *testing.T) {
				r := newSamplerRig(t, tc.sampler, owner)
				ctx := context.Background()
				var parent trace.SpanContext
				if tc.parent != 0xff {
					parent = remoteParent(t, tc.parent)
					ctx = trace.ContextWithRemoteSpanContext(ctx, parent)
				}
				dst := r.tel.Destination("svc", "round_robin", tc.retries)
				attempts := 1
				if tc.retries {
					attempts = 2
				}
				var sent []trace.SpanContext
				if tc.grpc {
					cctx, call := dst.StartGRPC(ctx, "/a.B/C")
					for range attempts {
						actx, att := call.StartAttempt(cctx, nil)
						md, _ := metadata.FromOutgoingContext(att.InjectGRPC(actx))
						h := http.Header{}
						for k, v := range md {
							h[http.CanonicalHeaderKey(k)] = v
						}
						sent = append(sent, sentContext(h))
						att.EndGRPC(nil)
					}
					call.EndGRPC(nil)
				} else {
					req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
					resp := &http.Response{StatusCode: http.StatusOK}
					cctx, call := dst.StartHTTP(ctx, req)
					for range attempts {
						_, att := call.StartAttempt(cctx, req)
						sent = append(sent, sentContext(att.InjectHTTP(req.Header)))
						att.EndHTTP(resp, nil)
					}
					call.EndHTTP(resp, nil)
					if len(req.Header) != 0 {
						t.Errorf("caller's header changed: %v", req.Header)
					}
				}

				spans := r.spans.Ended()
				wantSpans := 0
				if tc.want {
					wantSpans = attempts
					if tc.retries {
						wantSpans++ // the call span
					}
				}
				if len(spans) != wantSpans {
					t.Fatalf("%d spans recorded, want %d", len(spans), wantSpans)
				}
				seen := map[trace.SpanID]bool{}
				for i, sc := range sent {
					switch {
					case !sc.IsValid():
						t.Fatalf("attempt %d sent no valid trace context", i+1)
					case sc.IsSampled() != tc.want:
						t.Errorf("attempt %d sent sampled=%v, want %v", i+1, sc.IsSampled(), tc.want)
					case seen[sc.SpanID()] || sc.SpanID() == parent.SpanID():
						t.Errorf("attempt %d reuses span ID %s", i+1, sc.SpanID())
					case sc.TraceID() != sent[0].TraceID():
						t.Errorf("attempt %d left the call's trace", i+1)
					}
					seen[sc.SpanID()] = true
					if parent.IsValid() {
						if sc.TraceID() != parent.TraceID() {
							t.Errorf("attempt %d trace %s, want the caller's %s", i+1, sc.TraceID(), parent.TraceID())
						}
						if sc.TraceState().String() != parent.TraceState().String() {
							t.Errorf("attempt %d tracestate %q, want %q", i+1, sc.TraceState(), parent.TraceState())
						}
						if got, want := sc.TraceFlags()&trace.FlagsRandom, parent.TraceFlags()&trace.FlagsRandom; got != want {
							t.Errorf("attempt %d random flag %v, want %v", i+1, got, want)
						}
					}
					if tc.want {
						// The span sent is the attempt's recorded span, and it
						// hangs under the call span or the caller's.
						att := spans[i]
						if att.SpanContext().SpanID() != sc.SpanID() {
							t.Errorf("attempt %d sent span %s, recorded %s", i+1, sc.SpanID(), att.SpanContext().SpanID())
						}
						up := parent.SpanID()
						if tc.retries {
							up = spans[len(spans)-1].SpanContext().SpanID()
						}
						if att.Parent().SpanID() != up {
							t.Errorf("attempt %d parent %s, want %s", i+1, att.Parent().SpanID(), up)
						}
					}
				}
			})
		}
	}
}

// TestSamplerRecordingParent checks that a dropped attempt under a
// recording span (weft's sampler disagrees with the caller's) runs under
// a context whose span is the dropped one, so that the attempt's events
// do not land on the caller's span.
func TestSamplerRecordingParent(t *testing.T) {
	r := newSamplerRig(t, sdktrace.NeverSample(), "weft")
	ctx, outer := r.tp.Tracer("app").Start(context.Background(), "outer")
	for _, retries := range []bool{false, true} {
		dst := r.tel.Destination("svc", "round_robin", retries)
		cctx, call := dst.StartGRPC(ctx, "/a.B/C")
		actx, att := call.StartAttempt(cctx, nil)
		check := map[string]context.Context{"attempt": actx}
		if retries { // without, the call has no span: its context is the caller's
			check["call"] = cctx
		}
		for name, c := range check {
			span := trace.SpanFromContext(c)
			if span.IsRecording() || span.SpanContext().TraceID() != outer.SpanContext().TraceID() || span.SpanContext().SpanID() == outer.SpanContext().SpanID() {
				t.Errorf("retries %v: %s context holds %v (recording %v), want the dropped span", retries, name, span.SpanContext(), span.IsRecording())
			}
		}
		att.EndGRPC(nil)
		call.EndGRPC(nil)
	}
	outer.End()
	if n := len(r.spans.Ended()); n != 1 {
		t.Errorf("%d spans recorded, want the caller's only", n)
	}
}

// TestSamplerServer checks the server side of a sampler of weft's own,
// for HTTP and gRPC: a dropped server span is handed to the handler as a
// non-recording span that continues the caller's trace under a span ID of
// its own, as the SDK's would, so that the handler's own calls propagate
// the unsampled trace; a sampled caller gives a recorded server span
// under the caller's span, and the handler's calls are sampled under it:
// what the SDK does when the provider's sampler decides, which each case
// checks too.
func TestSamplerServer(t *testing.T) {
	const tid = "0af7651916cd43dd8448eb211c80319c"
	for _, tc := range []struct {
		name        string
		traceparent string
		tracestate  string
		want        bool // the server span is sampled
		newTrace    bool // the caller's trace context is ignored
	}{
		{name: "unsampled caller", traceparent: "00-" + tid + "-b7ad6b7169203331-00", tracestate: "vendor=opaque"},
		{name: "unsampled caller, random flag", traceparent: "00-" + tid + "-b7ad6b7169203331-02"},
		{name: "sampled caller", traceparent: "00-" + tid + "-b7ad6b7169203331-01", tracestate: "vendor=opaque", want: true},
		{name: "no trace context", newTrace: true},
		{name: "malformed trace context", traceparent: "00-" + tid + "-b7ad6b7169203331-0", newTrace: true},
		{name: "invalid trace ID", traceparent: "00-00000000000000000000000000000000-b7ad6b7169203331-01", newTrace: true},
	} {
		for _, run := range []struct{ proto, owner string }{{"http", "weft"}, {"grpc", "weft"}, {"http", "provider"}, {"grpc", "provider"}} {
			proto := run.proto
			t.Run(tc.name+"/"+proto+"/"+run.owner, func(t *testing.T) {
				r := newSamplerRig(t, sdktrace.ParentBased(sdktrace.NeverSample()), run.owner)
				parent := calltel.TraceContextExtract(tc.traceparent, tc.tracestate)
				var got trace.Span
				var recording bool
				var sent trace.SpanContext
				inHandler := func(ctx context.Context) {
					got = trace.SpanFromContext(ctx)
					recording = got.IsRecording()
					// The handler calls on, through weft.
					dst := r.tel.Destination("next", "round_robin", false)
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://next/", nil)
					cctx, call := dst.StartHTTP(ctx, req)
					_, att := call.StartAttempt(cctx, req)
					sent = sentContext(att.InjectHTTP(req.Header))
					att.EndHTTP(&http.Response{StatusCode: http.StatusOK}, nil)
					call.EndHTTP(&http.Response{StatusCode: http.StatusOK}, nil)
				}
				if proto == "http" {
					req, _ := http.NewRequest(http.MethodGet, "http://svc/x", nil)
					if tc.traceparent != "" {
						req.Header.Set("traceparent", tc.traceparent)
					}
					if tc.tracestate != "" {
						req.Header.Set("tracestate", tc.tracestate)
					}
					r.tel.Handler(http.HandlerFunc(func(_ http.ResponseWriter, req *http.Request) { inHandler(req.Context()) }), nil).
						ServeHTTP(discardWriter{}, req)
				} else {
					md := metadata.MD{}
					if tc.traceparent != "" {
						md.Set("traceparent", tc.traceparent)
					}
					if tc.tracestate != "" {
						md.Set("tracestate", tc.tracestate)
					}
					_, _ = r.tel.UnaryServerInterceptor(nil)(metadata.NewIncomingContext(context.Background(), md), nil,
						&grpc.UnaryServerInfo{FullMethod: "/a.B/C"}, func(ctx context.Context, _ any) (any, error) {
							inHandler(ctx)
							return nil, nil
						})
				}

				sc := got.SpanContext()
				switch {
				case !sc.IsValid():
					t.Fatal("handler's context has no valid span context")
				case sc.IsRemote():
					t.Error("handler's span context is the caller's, not the server span's")
				case recording != tc.want || sc.IsSampled() != tc.want:
					t.Errorf("server span recording %v sampled %v, want %v", recording, sc.IsSampled(), tc.want)
				case got.TracerProvider() != trace.TracerProvider(r.tp):
					t.Error("server span does not give the tracer provider")
				}
				if tc.newTrace {
					if sc.TraceID() == parent.TraceID() {
						t.Error("server span continues an invalid trace context")
					}
				} else {
					if sc.TraceID() != parent.TraceID() || sc.SpanID() == parent.SpanID() {
						t.Errorf("server span %s/%s, want trace %s and a span ID of its own", sc.TraceID(), sc.SpanID(), parent.TraceID())
					}
					if sc.TraceState().String() != tc.tracestate {
						t.Errorf("server span tracestate %q, want %q", sc.TraceState(), tc.tracestate)
					}
					if sc.TraceFlags()&trace.FlagsRandom != parent.TraceFlags()&trace.FlagsRandom {
						t.Errorf("server span flags %v, caller's %v", sc.TraceFlags(), parent.TraceFlags())
					}
				}
				// The handler's call continues the server span's trace,
				// sampled as the server span is.
				if sent.TraceID() != sc.TraceID() || sent.IsSampled() != tc.want {
					t.Errorf("handler's call sent %v, want trace %s sampled=%v", sent, sc.TraceID(), tc.want)
				}
				spans := r.spans.Ended()
				if !tc.want {
					if len(spans) != 0 {
						t.Errorf("%d spans recorded, want none", len(spans))
					}
					return
				}
				if len(spans) != 2 {
					t.Fatalf("%d spans recorded, want the server's and its call's", len(spans))
				}
				call, server := spans[0], spans[1]
				if server.Parent().SpanID() != parent.SpanID() || !server.Parent().IsRemote() {
					t.Errorf("server span parent %v, want the caller's %v", server.Parent(), parent)
				}
				if call.Parent().SpanID() != server.SpanContext().SpanID() || sent.SpanID() != call.SpanContext().SpanID() {
					t.Errorf("handler's call span %v under %v, want under the server span", call.SpanContext(), call.Parent())
				}
			})
		}
	}
}
