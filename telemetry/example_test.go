package telemetry_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/weftmesh/weft/telemetry"
)

// ExampleNew records an HTTP call and the request it serves: a client
// span for the call's one attempt, a server span that continues its
// trace, and the duration metrics of both sides. mesh does the same
// around its client and server when given mesh.WithTelemetry.
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

	// The client side: a call to service "users" and its attempt.
	users := tel.Destination("users", "round_robin", false)
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/users/42", nil)
	ctx, call := users.StartHTTP(req.Context(), req)
	actx, attempt := call.StartAttempt(ctx, req)
	attempt.SetEndpoint("users-1", req.URL.Host)
	out := req.Clone(actx)
	attempt.InjectHTTP(out.Header)
	resp, err := srv.Client().Do(out)
	attempt.EndHTTP(resp, err)
	call.EndHTTP(resp, err)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()

	var names []string
	for _, s := range spans.Ended() {
		names = append(names, s.SpanKind().String()+" "+s.Name())
	}
	sort.Strings(names)
	fmt.Println(names)

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
			fmt.Println(m.Name, h.DataPoints[0].Count)
		}
	}
	// Output:
	// [client GET server GET /users/{id}]
	// http.client.request.duration 1
	// http.server.request.duration 1
}
