package telemetry_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/telemetry"
)

// discardExporter counts spans and keeps none, so the benchmarks measure
// recording, not a growing heap.
type discardExporter struct {
	mu sync.Mutex
	n  int
}

func (e *discardExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	e.n += len(spans)
	e.mu.Unlock()
	return nil
}

func (e *discardExporter) Shutdown(context.Context) error { return nil }

// benchTelemetry returns nil (telemetry off), or a Telemetry whose spans
// are exported through a batcher and metrics go to a manual reader:
//
//   - "sdk-unsampled": the tracer provider drops every span, weft has no
//     sampler of its own (it asks the provider for every span);
//   - "unsampled": weft's sampler, ParentBased(NeverSample), drops new
//     traces and follows a caller's decision;
//   - "sampled": weft's sampler, ParentBased(AlwaysSample), samples new
//     traces and follows a caller's decision.
func benchTelemetry(b *testing.B, mode string) *telemetry.Telemetry {
	opts := []telemetry.Option{}
	provider := sdktrace.AlwaysSample()
	switch mode {
	case "off":
		return nil
	case "sdk-unsampled":
		provider = sdktrace.NeverSample()
	case "unsampled":
		opts = append(opts, telemetry.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())))
	case "sampled":
		opts = append(opts, telemetry.WithSampler(sdktrace.ParentBased(sdktrace.AlwaysSample())))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(&discardExporter{}), sdktrace.WithSampler(provider))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	tel, err := telemetry.New(append(opts, telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(mp))...)
	if err != nil {
		b.Fatal(err)
	}
	return tel
}

var modes = []string{"off", "sdk-unsampled", "unsampled", "sampled"}

type benchMode struct {
	name, sampling string
	retries        bool
}

// benchModes are the client set-ups: telemetry off, unsampled, sampled;
// with retries (a call span and an attempt span) and without (one span).
func benchModes() []benchMode {
	var out []benchMode
	for _, m := range modes {
		out = append(out, benchMode{m, m, false})
		if m != "off" {
			out = append(out, benchMode{m + "-retries", m, true})
		}
	}
	return out
}

// BenchmarkHTTPClient records one client call with one attempt, as mesh
// does around an HTTP round trip (without the round trip).
func BenchmarkHTTPClient(b *testing.B) {
	for _, mode := range benchModes() {
		b.Run(mode.name, func(b *testing.B) {
			dst := calltel.Of(benchTelemetry(b, mode.sampling)).Destination("payments", "round_robin", mode.retries)
			req := httptest.NewRequest(http.MethodGet, "http://payments/charge", nil)
			resp := &http.Response{StatusCode: http.StatusOK}
			h := http.Header{}
			ctx := context.Background()
			b.ReportAllocs()
			for range b.N {
				cctx, call := dst.StartHTTP(ctx, req)
				_, att := call.StartAttempt(cctx, req)
				att.SetEndpoint("payments-1", "10.0.0.1:8443")
				att.SetBreakerState("closed")
				_ = att.InjectHTTP(h)
				att.EndHTTP(resp, nil)
				call.EndHTTP(resp, nil)
			}
		})
	}
}

// benchTraceparent is the trace context a served request or call
// carries in mode: sampled only in mode "sampled".
func benchTraceparent(mode string) string {
	if mode == "sampled" {
		return "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	}
	return "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
}

// BenchmarkHTTPServer records one served request that carries a trace
// context (the handler does nothing).
func BenchmarkHTTPServer(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode, func(b *testing.B) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /charge/{id}", func(http.ResponseWriter, *http.Request) {})
			h := benchTelemetry(b, mode).Handler(mux, nil)
			req := httptest.NewRequest(http.MethodGet, "http://payments/charge/42", nil)
			req.Header.Set("traceparent", benchTraceparent(mode))
			w := httptest.NewRecorder()
			b.ReportAllocs()
			for range b.N {
				h.ServeHTTP(w, req)
			}
		})
	}
}

// BenchmarkGRPCClient records one unary gRPC call with one attempt, as
// mesh does around an invocation (without the invocation).
func BenchmarkGRPCClient(b *testing.B) {
	for _, mode := range benchModes() {
		b.Run(mode.name, func(b *testing.B) {
			dst := calltel.Of(benchTelemetry(b, mode.sampling)).Destination("payments", "round_robin", mode.retries)
			ctx := context.Background()
			b.ReportAllocs()
			for range b.N {
				cctx, call := dst.StartGRPC(ctx, "/pay.Pay/Charge")
				actx, att := call.StartAttempt(cctx, nil)
				att.SetEndpoint("payments-1", "10.0.0.1:8443")
				att.SetBreakerState("closed")
				_ = att.InjectGRPC(actx)
				att.EndGRPC(nil)
				call.EndGRPC(nil)
			}
		})
	}
}

// BenchmarkGRPCServer records one served unary call that carries a trace
// context.
func BenchmarkGRPCServer(b *testing.B) {
	for _, mode := range modes {
		b.Run(mode, func(b *testing.B) {
			intercept := benchTelemetry(b, mode).UnaryServerInterceptor(nil)
			handler := func(context.Context, any) (any, error) { return nil, nil }
			if intercept == nil {
				intercept = func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
					return h(ctx, req)
				}
			}
			info := &grpc.UnaryServerInfo{FullMethod: "/pay.Pay/Charge"}
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", benchTraceparent(mode)))
			b.ReportAllocs()
			for range b.N {
				_, _ = intercept(ctx, nil, info, handler)
			}
		})
	}
}
