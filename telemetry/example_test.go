package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/telemetry"
)

// ExampleNew records a served HTTP request: a server span that continues
// the caller's trace, and the duration metric. mesh records its clients'
// calls and its servers' requests the same way when given
// mesh.WithTelemetry.
func ExampleNew() {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer tp.Shutdown(context.Background())
	defer mp.Shutdown(context.Background())

	tel, err := telemetry.New(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(mp))
	if err != nil {
		fmt.Println(err)
		return
	}

	// The server side: the handler wrapped in a server span.
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	srv := httptest.NewServer(tel.Handler(mux, nil))
	defer srv.Close()

	// A caller in trace 0af7651916cd43dd8448eb211c80319c.
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/users/42", nil)
	req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	resp, err := srv.Client().Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()

	for _, s := range spans.Ended() {
		fmt.Println(s.SpanKind(), s.Name(), s.SpanContext().TraceID(), s.Parent().SpanID())
	}
	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
			fmt.Println(m.Name, h.DataPoints[0].Count)
		}
	}
	// Output:
	// server GET /users/{id} 0af7651916cd43dd8448eb211c80319c b7ad6b7169203331
	// http.server.request.duration 1
}

// ExampleWithSampler samples one trace in a hundred and follows the
// caller's decision: weft asks the sampler before the tracer, and a
// request from an unsampled caller gets no span from the SDK, yet its
// handler's context continues the caller's trace, unsampled, for the
// calls the handler makes.
func ExampleWithSampler() {
	spans := tracetest.NewSpanRecorder()
	// The provider records what weft asks it for.
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())

	tel, err := telemetry.New(telemetry.WithTracerProvider(tp),
		telemetry.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))))
	if err != nil {
		fmt.Println(err)
		return
	}
	h := tel.Handler(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		sc := trace.SpanContextFromContext(r.Context())
		fmt.Println("handler: trace", sc.TraceID(), "sampled", sc.IsSampled())
	}), nil)

	for _, flags := range []string{"00", "01"} {
		req := httptest.NewRequest(http.MethodGet, "/users/42", nil)
		req.Header.Set("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-"+flags)
		h.ServeHTTP(httptest.NewRecorder(), req)
		fmt.Println("caller's flags", flags, "spans recorded", len(spans.Ended()))
	}
	// Output:
	// handler: trace 0af7651916cd43dd8448eb211c80319c sampled false
	// caller's flags 00 spans recorded 0
	// handler: trace 0af7651916cd43dd8448eb211c80319c sampled true
	// caller's flags 01 spans recorded 1
}
