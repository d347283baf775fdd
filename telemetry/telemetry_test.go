package telemetry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/internal/clocktest"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// rig is a Telemetry wired to an in-memory span recorder, a manual metric
// reader and a captured log.
type rig struct {
	tel    *telemetry.Telemetry
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	logs   *syncBuffer
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newRig(t testing.TB, opts ...telemetry.Option) *rig {
	t.Helper()
	r := &rig{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), logs: &syncBuffer{}}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	t.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	all := append([]telemetry.Option{
		telemetry.WithTracerProvider(tp),
		telemetry.WithMeterProvider(mp),
		telemetry.WithLogger(slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
	}, opts...)
	tel, err := telemetry.New(all...)
	if err != nil {
		t.Fatal(err)
	}
	r.tel = tel
	return r
}

// metric returns the metric named name, failing the test if absent.
func (r *rig) metric(t testing.TB, name string) metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m
			}
		}
	}
	t.Fatalf("no metric %q", name)
	return metricdata.Metrics{}
}

func histogram(t testing.TB, m metricdata.Metrics) []metricdata.HistogramDataPoint[float64] {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s is a %T, not a histogram", m.Name, m.Data)
	}
	return h.DataPoints
}

func attr(kvs []attribute.KeyValue, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func spanNamed(t testing.TB, spans []sdktrace.ReadOnlySpan, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	for _, s := range spans {
		if s.Name() == name {
			return s
		}
	}
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	t.Fatalf("no span %q among %q", name, names)
	return nil
}

// httpCall makes one client call through dst the way mesh does: a call,
// one attempt per entry of statuses' length... here exactly one attempt.
func httpCall(t testing.TB, dst *calltel.Destination, client *http.Client, req *http.Request) (*http.Response, error) {
	t.Helper()
	ctx, call := dst.StartHTTP(req.Context(), req)
	actx, att := call.StartAttempt(ctx, req)
	out := req.Clone(actx)
	out.Header = att.InjectHTTP(out.Header)
	att.SetEndpoint("ep-1", req.URL.Host)
	resp, err := client.Transport.RoundTrip(out)
	att.EndHTTP(resp, err)
	call.EndHTTP(resp, err)
	return resp, err
}

func TestHTTPSpansAndMetrics(t *testing.T) {
	leaktest.Check(t)
	r := newRig(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /users/{id}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) })
	srv := httptest.NewServer(r.tel.Handler(mux, nil))
	defer srv.Close()
	dst := calltel.Of(r.tel).Destination("users", "round_robin", true)
	cases := []struct {
		method, path string
		want         int
	}{
		{"GET", "/users/1", 200}, {"GET", "/users/2", 200}, {"GET", "/users/3", 200}, {"POST", "/fail", 503},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := httpCall(t, dst, srv.Client(), req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Fatalf("%s %s: status %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
	spans := r.spans.Ended()
	if len(spans) != 3*len(cases) {
		t.Fatalf("%d spans, want %d", len(spans), 3*len(cases))
	}
	server := spanNamed(t, spans, "GET /users/{id}")
	var attempt, call sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanContext().SpanID() == server.Parent().SpanID() {
			attempt = s
		}
	}
	if attempt == nil || attempt.SpanKind() != trace.SpanKindClient || attempt.Name() != "GET" {
		t.Fatalf("server span's parent is %v, want the client attempt span", attempt)
	}
	for _, s := range spans {
		if s.SpanContext().SpanID() == attempt.Parent().SpanID() {
			call = s
		}
	}
	if call == nil || call.Name() != "GET users" || call.SpanKind() != trace.SpanKindInternal {
		t.Fatalf("attempt span's parent is %v, want the call span", call)
	}
	if call.Parent().IsValid() {
		t.Errorf("call span has a parent")
	}
	for _, s := range []sdktrace.ReadOnlySpan{server, attempt, call} {
		if s.SpanContext().TraceID() != call.SpanContext().TraceID() {
			t.Errorf("span %q in another trace", s.Name())
		}
	}
	// The call span carries the destination; its attempts do not repeat it.
	for k, v := range map[attribute.Key]string{telemetry.ServiceKey: "users", telemetry.PolicyKey: "round_robin"} {
		if got, _ := attr(call.Attributes(), k); got.AsString() != v {
			t.Errorf("call %s = %q, want %q", k, got.AsString(), v)
		}
		if got, ok := attr(attempt.Attributes(), k); ok {
			t.Errorf("attempt repeats %s = %q", k, got.AsString())
		}
	}
	want := map[attribute.Key]attribute.Value{
		telemetry.AttemptKey:        attribute.IntValue(1),
		telemetry.RetryKey:          attribute.BoolValue(false),
		telemetry.EndpointKey:       attribute.StringValue("ep-1"),
		"http.request.method":       attribute.StringValue("GET"),
		"http.response.status_code": attribute.IntValue(200),
	}
	for k, v := range want {
		if got, ok := attr(attempt.Attributes(), k); !ok || got != v {
			t.Errorf("attempt %s = %v, want %v", k, got.String(), v.String())
		}
	}
	if got, _ := attr(server.Attributes(), "http.route"); got.AsString() != "/users/{id}" {
		t.Errorf("server http.route = %q", got.AsString())
	}

	// Metrics: one client and one server measurement per request, the
	// failure counted with error.type.
	for _, name := range []string{"http.client.request.duration", "http.server.request.duration"} {
		var total, errs uint64
		for _, dp := range histogram(t, r.metric(t, name)) {
			total += dp.Count
			if _, ok := dp.Attributes.Value("error.type"); ok {
				errs += dp.Count
			}
		}
		if total != uint64(len(cases)) || errs != 1 {
			t.Errorf("%s: %d requests, %d errors; want %d, 1", name, total, errs, len(cases))
		}
	}
}

func TestRetryAttemptsAreChildSpans(t *testing.T) {
	leaktest.Check(t)
	r := newRig(t)
	var n int
	var mu sync.Mutex
	srv := httptest.NewServer(r.tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}), nil))
	defer srv.Close()
	dst := calltel.Of(r.tel).Destination("flaky", "round_robin", true)
	req, _ := http.NewRequest("GET", srv.URL+"/", nil)
	ctx, call := dst.StartHTTP(req.Context(), req)
	var resp *http.Response
	var err error
	for i := 0; i < 2; i++ {
		actx, att := call.StartAttempt(ctx, req)
		out := req.Clone(actx)
		out.Header = att.InjectHTTP(out.Header)
		resp, err = srv.Client().Transport.RoundTrip(out)
		att.EndHTTP(resp, err)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	call.EndHTTP(resp, err)
	var attempts []sdktrace.ReadOnlySpan
	var callSpan sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		switch s.SpanKind() {
		case trace.SpanKindClient:
			attempts = append(attempts, s)
		case trace.SpanKindInternal:
			callSpan = s
		}
	}
	if len(attempts) != 2 || callSpan == nil {
		t.Fatalf("%d attempt spans, call span %v; want 2 and one", len(attempts), callSpan)
	}
	for i, a := range attempts {
		if a.Parent().SpanID() != callSpan.SpanContext().SpanID() {
			t.Errorf("attempt %d not a child of the call", i+1)
		}
		n, _ := attr(a.Attributes(), telemetry.AttemptKey)
		retry, _ := attr(a.Attributes(), telemetry.RetryKey)
		if n.AsInt64() != int64(i+1) || retry.AsBool() != (i == 1) {
			t.Errorf("attempt %d: weft.attempt=%d weft.retry=%v", i+1, n.AsInt64(), retry.AsBool())
		}
	}
	if got, _ := attr(attempts[1].Attributes(), "http.request.resend_count"); got.AsInt64() != 1 {
		t.Errorf("second attempt resend_count = %d, want 1", got.AsInt64())
	}
}

func TestMalformedTraceparentStartsFreshTrace(t *testing.T) {
	leaktest.Check(t)
	r := newRig(t)
	srv := httptest.NewServer(r.tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }), nil))
	defer srv.Close()
	for _, tc := range []struct{ name, header string }{
		{"wrong length", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01"},
		{"all-zero trace id", "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
		{"all-zero span id", "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
		{"version ff", "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"garbage", "not a traceparent at all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.spans.Reset()
			req, _ := http.NewRequest("GET", srv.URL+"/", nil)
			req.Header.Set("traceparent", tc.header)
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			spans := r.spans.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans", len(spans))
			}
			s := spans[0]
			if s.Parent().IsValid() || !s.SpanContext().TraceID().IsValid() {
				t.Errorf("span parent %v, trace %v: want a fresh root", s.Parent(), s.SpanContext().TraceID())
			}
			if strings.Contains(tc.header, s.SpanContext().TraceID().String()) {
				t.Errorf("trace id taken from the malformed header")
			}
		})
	}
}

func TestBoundedSeries(t *testing.T) {
	leaktest.Check(t)
	r := newRig(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /items/{id}", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("/echo/", func(http.ResponseWriter, *http.Request) {})
	srv := httptest.NewServer(r.tel.Handler(mux, nil))
	defer srv.Close()
	dst := calltel.Of(r.tel).Destination("items", "round_robin", false)
	rng := rand.New(rand.NewPCG(1, 2))
	methods := []string{"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
	client := srv.Client()
	const n = 10000
	for i := 0; i < n; i++ {
		method := methods[rng.IntN(len(methods))]
		if rng.IntN(2) == 0 {
			method = fmt.Sprintf("X%08X", rng.Uint32())
		}
		path := fmt.Sprintf("/%x/%x", rng.Uint64(), rng.Uint32())
		switch rng.IntN(3) {
		case 0:
			path = fmt.Sprintf("/items/%d", rng.Uint32())
		case 1:
			path = fmt.Sprintf("/echo/%x", rng.Uint64())
		}
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := httpCall(t, dst, client, req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		r.spans.Reset()
	}
	series := 0
	for _, name := range []string{"http.client.request.duration", "http.server.request.duration"} {
		dps := histogram(t, r.metric(t, name))
		var count uint64
		for _, dp := range dps {
			count += dp.Count
			for _, kv := range dp.Attributes.ToSlice() {
				if v := kv.Value.String(); strings.Contains(v, "/items/") && !strings.Contains(v, "{id}") {
					t.Errorf("%s: raw path in %s=%s", name, kv.Key, v)
				}
			}
		}
		if count != n {
			t.Errorf("%s: %d measurements, want %d", name, count, n)
		}
		t.Logf("%s: %d series after %d requests with random paths and methods", name, len(dps), n)
		series += len(dps)
	}
	// 8 method values × (3 routes × statuses seen) bound the series.
	if series > 60 {
		t.Errorf("%d series, want a small bounded number", series)
	}
}

// recordCalls returns a client interceptor that records each call and
// its one attempt through dst, as mesh's call engine does.
func recordCalls(dst *calltel.Destination) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, call := dst.StartGRPC(ctx, method)
		actx, att := call.StartAttempt(ctx, nil)
		err := invoker(att.InjectGRPC(actx), method, req, reply, cc, opts...)
		att.EndGRPC(err)
		call.EndGRPC(err)
		return err
	}
}

// TestGRPC runs a real gRPC server and client on loopback, the server
// with weft's interceptor, and checks the spans, their structure and the metrics.
func TestGRPC(t *testing.T) {
	leaktest.Check(t)
	r := newRig(t)
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(r.tel.UnaryServerInterceptor(nil)))
	demo.Register(srv, "b", nil)
	addr := serveGRPC(t, srv)
	dst := calltel.Of(r.tel).Destination("demo", "round_robin", true)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(recordCalls(dst)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		if _, err := demo.Whoami(ctx, cc); err != nil {
			t.Fatal(err)
		}
	}
	if err := cc.Invoke(ctx, "/weft.demo.v1.Demo/Nope", nil, nil); err == nil {
		t.Fatal("unknown method succeeded")
	}
	spans := r.spans.Ended()
	server := spanNamed(t, spans, "weft.demo.v1.Demo/Whoami")
	var attempt sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.SpanContext().SpanID() == server.Parent().SpanID() {
			attempt = s
		}
	}
	if attempt == nil || attempt.SpanKind() != trace.SpanKindClient {
		t.Fatalf("server span's parent is not a client attempt span")
	}
	if v, _ := attr(server.Attributes(), "rpc.response.status_code"); v.AsString() != "OK" {
		t.Errorf("server rpc.response.status_code = %q", v.AsString())
	}
	var total, errs uint64
	for _, dp := range histogram(t, r.metric(t, "rpc.client.call.duration")) {
		total += dp.Count
		if v, ok := dp.Attributes.Value("error.type"); ok {
			errs += dp.Count
			if v.AsString() != "UNIMPLEMENTED" {
				t.Errorf("error.type %q", v.AsString())
			}
		}
	}
	if total != 4 || errs != 1 {
		t.Errorf("rpc.client.call.duration: %d calls, %d errors; want 4, 1", total, errs)
	}
	var served uint64
	for _, dp := range histogram(t, r.metric(t, "rpc.server.call.duration")) {
		served += dp.Count
	}
	if served != 3 {
		t.Errorf("rpc.server.call.duration: %d calls, want 3 (unknown methods never reach interceptors)", served)
	}

	// A malformed traceparent in the metadata starts a fresh trace.
	r.spans.Reset()
	bad := metadata.AppendToOutgoingContext(ctx, "traceparent", "ff-00000000000000000000000000000000-0000000000000000-01")
	plain, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := demo.Whoami(bad, plain); err != nil {
		t.Fatalf("call with a malformed traceparent failed: %v", err)
	}
	s := spanNamed(t, r.spans.Ended(), "weft.demo.v1.Demo/Whoami")
	if s.Parent().IsValid() || !s.SpanContext().TraceID().IsValid() {
		t.Errorf("malformed traceparent: span parent %v, want a fresh root", s.Parent())
	}
}

func TestEventsAndSecrets(t *testing.T) {
	leaktest.Check(t)
	r := newRig(t)
	const token = "s3cr3t-bearer-token-value"
	ctx, span := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans)).Tracer("t").Start(context.Background(), "op")
	r.tel.DiscoveryError(ctx, "payments", fmt.Errorf("get http://127.0.0.1:8500/v1/health/service/payments?index=3&token=%s: refused", token))
	r.tel.AuthorizationDenied(ctx, telemetry.Server, "spiffe://example.org/intruder", fmt.Errorf("authorization: Bearer %s", token))
	r.tel.BreakerChanged(ctx, "payments", "ep-1", "closed", "open")
	r.tel.Ejected(ctx, "payments", "ep-1", 30*time.Second)
	r.tel.Rejected(ctx, telemetry.Client, "payments", telemetry.RateLimited)
	r.tel.Rejected(ctx, telemetry.Client, "payments", "bogus")
	r.tel.RetryBudgetExhausted(ctx, "payments")
	r.tel.EndpointCounts("payments", 3, 1)
	r.tel.CertificateRotated(ctx, "spiffe://example.org/a", time.Unix(2e9, 0))
	r.tel.RouteRejected(ctx, "file:/etc/weft/routes.yaml", fmt.Errorf("reading http://cfg/routes?token=%s: bad", token))
	span.End()
	logs := r.logs.String()
	for _, want := range []string{"weft.discovery.error", "weft.authorization.denied", "weft.breaker.state_change", "weft.endpoint.ejected", "weft.certificate.rotated", "weft.route.rejected"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %s log record", want)
		}
	}
	if strings.Contains(logs, token) {
		t.Errorf("token in logs: %s", logs)
	}
	events := spanNamed(t, r.spans.Ended(), "op").Events()
	if len(events) < 8 {
		t.Errorf("%d span events, want at least 8", len(events))
	}
	for _, e := range events {
		for _, kv := range e.Attributes {
			if strings.Contains(kv.Value.String(), token) {
				t.Errorf("token in span event %s", e.Name)
			}
		}
	}
	rejects := r.metric(t, "weft.request.rejections").Data.(metricdata.Sum[int64]).DataPoints
	if len(rejects) != 2 {
		t.Errorf("%d rejection series, want 2 (rate_limit, _OTHER)", len(rejects))
	}
	if rr := r.metric(t, "weft.route.rejections").Data.(metricdata.Sum[int64]).DataPoints; len(rr) != 1 || rr[0].Value != 1 {
		t.Errorf("route rejections %v, want one of one source", rr)
	}
	gauge := r.metric(t, "weft.endpoints").Data.(metricdata.Gauge[int64]).DataPoints
	if len(gauge) != 2 {
		t.Errorf("%d endpoint count series, want 2", len(gauge))
	}
	if exp := r.metric(t, "weft.certificate.expiry_timestamp").Data.(metricdata.Gauge[int64]).DataPoints; len(exp) != 1 || exp[0].Value != 2e9 {
		t.Errorf("certificate expiry %v", exp)
	}
}

func TestRedact(t *testing.T) {
	leaktest.Check(t)
	const secret = "SECRETVALUE123"
	for _, in := range []string{
		"Authorization: Bearer " + secret,
		`Get "https://payments/charge?token=` + secret + `": dial tcp: refused`,
		"X-Consul-Token: " + secret,
		"x-consul-token=" + secret,
		"basic " + secret,
		"api_key=" + secret,
		"password: " + secret,
		"-----BEGIN EC PRIVATE KEY-----\n" + secret + "\n-----END EC PRIVATE KEY-----",
	} {
		if got := telemetry.Redact(errors.New(in)); strings.Contains(got, secret) {
			t.Errorf("Redact(%q) = %q", in, got)
		}
	}
	if got := telemetry.Redact(errors.New("dial tcp 127.0.0.1:1: connection refused")); got != "dial tcp 127.0.0.1:1: connection refused" {
		t.Errorf("Redact changed a harmless error: %q", got)
	}
	if telemetry.Redact(nil) != "" {
		t.Error("Redact(nil) not empty")
	}
}

func FuzzRedact(f *testing.F) {
	f.Add("Authorization: Bearer ", " tail")
	f.Add("GET https://x/y?", "&a=b")
	f.Add("X-Consul-Token:", "")
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		const secret = "Zq9SECRETzq9"
		for _, lead := range []string{"Bearer ", "token=", "Authorization: Bearer ", "X-Consul-Token: ", "?q="} {
			in := prefix + " " + lead + secret + " " + suffix
			if got := telemetry.Redact(errors.New(in)); strings.Contains(got, secret) {
				t.Fatalf("Redact(%q) = %q", in, got)
			}
		}
	})
}

// TestNilIsFree checks that telemetry that is not configured (a nil
// *Telemetry) costs no allocation on the call path.
func TestNilIsFree(t *testing.T) {
	leaktest.Check(t)
	var tel *telemetry.Telemetry
	dst := calltel.Of(tel).Destination("svc", "round_robin", true)
	req := httptest.NewRequest("GET", "http://svc/x", nil)
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		c, call := dst.StartHTTP(ctx, req)
		a, att := call.StartAttempt(c, req)
		_ = att.InjectHTTP(req.Header)
		att.SetEndpoint("id", "127.0.0.1:1")
		att.SetBreakerState("closed")
		_ = a
		att.EndHTTP(nil, nil)
		call.EndHTTP(nil, nil)
		c, call = dst.StartGRPC(ctx, "/a.B/C")
		_, att = call.StartAttempt(c, nil)
		att.EndGRPC(nil)
		call.EndGRPC(nil)
		tel.Rejected(ctx, telemetry.Client, "svc", telemetry.Shed)
		tel.BreakerChanged(ctx, "svc", "e", "closed", "open")
	})
	if allocs != 0 {
		t.Errorf("nil telemetry allocates %v times per call", allocs)
	}
	if tel.Handler(http.NotFoundHandler(), nil) == nil || tel.UnaryServerInterceptor(nil) != nil {
		t.Error("nil telemetry: want the bare handler and nil interceptors")
	}
}

func TestDefaults(t *testing.T) {
	leaktest.Check(t)
	tel, err := telemetry.New(nil, telemetry.WithTracerProvider(nil), telemetry.WithMeterProvider(nil), telemetry.WithLogger(nil), telemetry.WithPropagator(nil), telemetry.WithMaxRPCMethods(0))
	if err != nil {
		t.Fatal(err)
	}
	fields := tel.Propagator().Fields()
	slices.Sort(fields)
	if !slices.Equal(fields, []string{"baggage", "traceparent", "tracestate"}) {
		t.Errorf("default propagator fields %v, want traceparent, tracestate, baggage", fields)
	}
	rec := calltel.Of(tel)
	first, again := rec.Destination("a", "p", true), rec.Destination("a", "p", true)
	if first != again || first == rec.Destination("a", "p", false) {
		t.Error("Destination not reused")
	}
	var _ propagation.TextMapPropagator = tel.Propagator()
}

// TestObserveSVIDs checks that the expiry of a renewing SVID source is
// reported at each collection and that a renewal is logged, with an
// injected clock.
func TestObserveSVIDs(t *testing.T) {
	leaktest.Check(t)
	r := newRig(t)
	var mu sync.Mutex
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ca, err := tlsid.NewDevCA("example.org", tlsid.WithClock(clock), tlsid.WithSVIDTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/svc"))
	if err != nil {
		t.Fatal(err)
	}
	stop := r.tel.ObserveSVIDs(src)
	defer stop()
	expiry := func() int64 {
		g := r.metric(t, "weft.certificate.expiry_timestamp").Data.(metricdata.Gauge[int64])
		if len(g.DataPoints) != 1 {
			t.Fatalf("%d expiry series, want 1", len(g.DataPoints))
		}
		return g.DataPoints[0].Value
	}
	first := expiry()
	if want := now.Add(time.Hour).Unix(); first < want-120 || first > want {
		t.Errorf("expiry %d, want about %d", first, want)
	}
	if strings.Contains(r.logs.String(), "weft.certificate.rotated") {
		t.Error("rotation logged before any renewal")
	}
	mu.Lock()
	now = now.Add(55 * time.Minute) // past the 50–90% renewal point
	mu.Unlock()
	if second := expiry(); second <= first {
		t.Errorf("expiry %d after renewal, want later than %d", second, first)
	}
	if !strings.Contains(r.logs.String(), "weft.certificate.rotated") {
		t.Error("renewal not logged")
	}
	if strings.Contains(r.logs.String(), "PRIVATE KEY") {
		t.Error("key material logged")
	}
}

// TestDurationsFromClock times a call, its attempt and a served request
// on an injected clock: the histograms hold exactly the time the clock
// moved, whatever the machine's speed.
func TestDurationsFromClock(t *testing.T) {
	leaktest.Check(t)
	clock := clocktest.New(time.Unix(1_700_000_000, 0))
	r := newRig(t, telemetry.WithClock(clock.Now), telemetry.WithClock(nil)) // a nil clock is ignored
	for _, tc := range []struct {
		name string
		took time.Duration
	}{
		{"http.client.request.duration", 250 * time.Millisecond},
		{"http.server.request.duration", 1500 * time.Millisecond},
	} {
		req := httptest.NewRequest(http.MethodGet, "http://svc/x", nil)
		switch tc.name {
		case "http.client.request.duration":
			ctx, call := calltel.Of(r.tel).Destination("svc", "round_robin", false).StartHTTP(context.Background(), req)
			_, a := call.StartAttempt(ctx, req)
			clock.Advance(tc.took)
			resp := &http.Response{StatusCode: http.StatusOK}
			a.EndHTTP(resp, nil)
			call.EndHTTP(resp, nil)
		case "http.server.request.duration":
			h := r.tel.Handler(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { clock.Advance(tc.took) }), nil)
			h.ServeHTTP(httptest.NewRecorder(), req)
		}
		dps := histogram(t, r.metric(t, tc.name))
		if len(dps) != 1 || dps[0].Count != 1 || dps[0].Sum != tc.took.Seconds() {
			t.Errorf("%s: %+v, want one duration of %v", tc.name, dps, tc.took)
		}
	}
}
