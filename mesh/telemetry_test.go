package mesh

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// telRig is one OpenTelemetry SDK — an in-memory span recorder, a manual
// metric reader — and a captured log, shared by the mesh processes of a
// test (client, A, B), each with its own Telemetry.
type telRig struct {
	t      testing.TB
	tp     *sdktrace.TracerProvider
	mp     *sdkmetric.MeterProvider
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	logs   *lockedBuffer
	ca     *tlsid.DevCA
	disc   *discovery.Static
}

var (
	telClientID = spiffeid.RequireFromString("spiffe://example.org/client")
	telAID      = spiffeid.RequireFromString("spiffe://example.org/a")
	telBID      = spiffeid.RequireFromString("spiffe://example.org/b")
)

func newTelRig(t testing.TB) *telRig {
	t.Helper()
	r := &telRig{t: t, spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader(), logs: &lockedBuffer{}, disc: &discovery.Static{}}
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	r.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	t.Cleanup(func() {
		_ = r.tp.Shutdown(context.Background())
		_ = r.mp.Shutdown(context.Background())
	})
	var err error
	if r.ca, err = tlsid.NewDevCA("example.org"); err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *telRig) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// telemetry returns a Telemetry of one process of the test.
func (r *telRig) telemetry() *telemetry.Telemetry {
	r.t.Helper()
	tel, err := telemetry.New(telemetry.WithTracerProvider(r.tp), telemetry.WithMeterProvider(r.mp), telemetry.WithLogger(r.logger()))
	if err != nil {
		r.t.Fatal(err)
	}
	return tel
}

// opts returns the options every process of the test shares: its
// identity, its own telemetry and the captured log.
func (r *telRig) opts(id spiffeid.ID) []Option {
	r.t.Helper()
	src, err := r.ca.Source(id)
	if err != nil {
		r.t.Fatal(err)
	}
	return []Option{WithIdentity(src), WithTelemetry(r.telemetry()), WithLogger(r.logger())}
}

func (r *telRig) client(id spiffeid.ID, more ...ClientOption) *Client {
	r.t.Helper()
	var all []ClientOption
	for _, o := range r.opts(id) {
		all = append(all, o)
	}
	all = append(all, WithDiscovery(r.disc))
	c, err := NewClient(append(all, more...)...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// serveHTTP serves h as service with identity id, published in the
// rig's discovery as endpoint service+"-1".
func (r *telRig) serveHTTP(service string, id spiffeid.ID, h http.Handler) {
	r.t.Helper()
	var all []ServerOption
	for _, o := range r.opts(id) {
		all = append(all, o)
	}
	srv, err := NewServer(h, all...)
	if err != nil {
		r.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	r.t.Cleanup(func() { srv.Close(); <-done })
	if err := r.disc.Set(service, discovery.Endpoint{ID: service + "-1", Addr: ln.Addr().String()}); err != nil {
		r.t.Fatal(err)
	}
}

// serveGRPC serves the services register adds as service with identity
// id, published as endpoint service+"-1".
func (r *telRig) serveGRPC(service string, id spiffeid.ID, register func(*grpc.Server)) {
	r.t.Helper()
	var all []ServerOption
	for _, o := range r.opts(id) {
		all = append(all, o)
	}
	gopts, err := GRPCServerOptions(all...)
	if err != nil {
		r.t.Fatal(err)
	}
	srv := grpc.NewServer(gopts...)
	register(srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	r.t.Cleanup(func() { srv.Stop(); <-done })
	if err := r.disc.Set(service, discovery.Endpoint{ID: service + "-1", Addr: ln.Addr().String()}); err != nil {
		r.t.Fatal(err)
	}
}

// hop is what a span of a chain must be.
type hop struct {
	kind  trace.SpanKind
	name  string
	attrs map[attribute.Key]attribute.Value
}

// checkChain asserts that the recorded spans form one trace whose spans,
// from the root down, are the hops, each the child of the one before.
func (r *telRig) checkChain(t *testing.T, hops []hop) []sdktrace.ReadOnlySpan {
	t.Helper()
	spans := r.spans.Ended()
	if len(spans) != len(hops) {
		var names []string
		for _, s := range spans {
			names = append(names, s.SpanKind().String()+" "+s.Name())
		}
		t.Fatalf("%d spans (%q), want %d", len(spans), names, len(hops))
	}
	children := map[trace.SpanID][]sdktrace.ReadOnlySpan{}
	var root sdktrace.ReadOnlySpan
	for _, s := range spans {
		if !s.Parent().IsValid() {
			if root != nil {
				t.Fatalf("two root spans: %q and %q", root.Name(), s.Name())
			}
			root = s
			continue
		}
		children[s.Parent().SpanID()] = append(children[s.Parent().SpanID()], s)
	}
	if root == nil {
		t.Fatal("no root span")
	}
	chain := []sdktrace.ReadOnlySpan{root}
	for i, h := range hops {
		s := chain[i]
		if s.SpanContext().TraceID() != root.SpanContext().TraceID() {
			t.Errorf("hop %d (%s) is in another trace", i, s.Name())
		}
		if s.SpanKind() != h.kind || s.Name() != h.name {
			t.Errorf("hop %d: %s %q, want %s %q", i, s.SpanKind(), s.Name(), h.kind, h.name)
		}
		for k, want := range h.attrs {
			got, ok := spanAttr(s, k)
			if !ok || got != want {
				t.Errorf("hop %d (%s %q): %s = %q, want %q", i, s.SpanKind(), s.Name(), k, got.String(), want.String())
			}
		}
		kids := children[s.SpanContext().SpanID()]
		if i == len(hops)-1 {
			if len(kids) != 0 {
				t.Errorf("last hop has %d children", len(kids))
			}
			break
		}
		if len(kids) != 1 {
			t.Fatalf("hop %d (%s) has %d children, want 1", i, s.Name(), len(kids))
		}
		chain = append(chain, kids[0])
	}
	return chain
}

func spanAttr(s sdktrace.ReadOnlySpan, k attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if kv.Key == k {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func str(s string) attribute.Value { return attribute.StringValue(s) }

// clientHops are the spans of one client call of service, without
// retries, to endpoint service+"-1": its one attempt, a client span that
// carries the call's attributes.
func clientHops(name, service string) []hop {
	return []hop{
		{trace.SpanKindClient, name, map[attribute.Key]attribute.Value{
			telemetry.ServiceKey: str(service), telemetry.PolicyKey: str("round_robin"),
			telemetry.EndpointKey: str(service + "-1"),
			telemetry.AttemptKey:  attribute.IntValue(1), telemetry.RetryKey: attribute.BoolValue(false),
			telemetry.HedgeKey: attribute.BoolValue(false), telemetry.BreakerStateKey: str("closed"),
			"server.address": str("127.0.0.1"),
		}},
	}
}

func serverHop(name string, peer spiffeid.ID, extra ...attribute.KeyValue) hop {
	h := hop{trace.SpanKindServer, name, map[attribute.Key]attribute.Value{
		telemetry.PeerIDKey: str(peer.String()), telemetry.AuthzDecisionKey: str("allow"),
	}}
	for _, kv := range extra {
		h.attrs[kv.Key] = kv.Value
	}
	return h
}

// forward returns A's HTTP handler: it calls service "b" at the same path
// through hc and answers with B's status and body.
func forward(hc *http.Client) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{what}", func(w http.ResponseWriter, r *http.Request) {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://b"+r.URL.Path, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
	return mux
}

func backend() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, demo.Answer(r.Context(), "b", PeerID))
	})
	mux.HandleFunc("GET /fail", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "failed", http.StatusInternalServerError)
	})
	return mux
}

func telGet(t *testing.T, hc *http.Client, url string, header http.Header) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestTelemetryHTTPChain calls client → A → B over real HTTP with mutual
// TLS, weft on every side, and checks the one trace it makes, the mesh
// attributes on its spans and the RED metrics.
func TestTelemetryHTTPChain(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	r.serveHTTP("b", telBID, backend())
	r.serveHTTP("a", telAID, forward(r.client(telAID, WithCircuitBreaker(breaker.Settings{})).HTTPClient()))
	hc := r.client(telClientID, WithCircuitBreaker(breaker.Settings{})).HTTPClient()

	code, body := telGet(t, hc, "http://a/hello", nil)
	if code != http.StatusOK || body != "b saw "+telAID.String() {
		t.Fatalf("answer %d %q", code, body)
	}
	hops := clientHops("GET", "a")
	hops = append(hops, serverHop("GET /{what}", telClientID, attribute.String("http.route", "/{what}")))
	hops = append(hops, clientHops("GET", "b")...)
	hops = append(hops, serverHop("GET /hello", telAID, attribute.Int("http.response.status_code", 200)))
	r.checkChain(t, hops)

	// RED metrics: 3 more calls, one failing at B.
	for _, path := range []string{"/hello", "/fail", "/hello"} {
		telGet(t, hc, "http://a"+path, nil)
	}
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	type red struct{ count, errors uint64 }
	got := map[string]red{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if !ok {
				continue
			}
			for _, dp := range h.DataPoints {
				key := m.Name
				if svc, ok := dp.Attributes.Value(telemetry.ServiceKey); ok {
					key += " " + svc.AsString()
				}
				x := got[key]
				x.count += dp.Count
				if _, ok := dp.Attributes.Value("error.type"); ok {
					x.errors += dp.Count
				}
				got[key] = x
			}
		}
	}
	want := map[string]red{
		"http.client.request.duration a": {4, 1},
		"http.client.request.duration b": {4, 1},
		"http.server.request.duration":   {8, 2},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %d requests, %d errors; want %d, %d", k, got[k].count, got[k].errors, w.count, w.errors)
		}
	}
}

// TestTelemetryHTTPRetry checks that a failed-then-retried call shows one
// call span with two attempt spans, each with its server span.
func TestTelemetryHTTPRetry(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	var n atomic.Int32
	r.serveHTTP("flaky", telBID, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if n.Add(1) == 1 {
			http.Error(w, "try again", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	hc := r.client(telClientID, WithRetry(RetryPolicy{Backoff: time.Millisecond, MaxBackoff: time.Millisecond})).HTTPClient()
	if code, _ := telGet(t, hc, "http://flaky/x", nil); code != http.StatusOK {
		t.Fatalf("status %d after a retry", code)
	}
	spans := r.spans.Ended()
	var call sdktrace.ReadOnlySpan
	var attempts, servers []sdktrace.ReadOnlySpan
	for _, s := range spans {
		switch s.SpanKind() {
		case trace.SpanKindInternal:
			call = s
		case trace.SpanKindClient:
			attempts = append(attempts, s)
		case trace.SpanKindServer:
			servers = append(servers, s)
		}
	}
	if call == nil || len(attempts) != 2 || len(servers) != 2 {
		t.Fatalf("call %v, %d attempts, %d server spans; want one call, 2 and 2", call != nil, len(attempts), len(servers))
	}
	for i, a := range attempts {
		if a.Parent().SpanID() != call.SpanContext().SpanID() {
			t.Errorf("attempt %d is not a child of the call span", i+1)
		}
		num, _ := spanAttr(a, telemetry.AttemptKey)
		retry, _ := spanAttr(a, telemetry.RetryKey)
		code, _ := spanAttr(a, "http.response.status_code")
		wantCode := int64(503)
		if i == 1 {
			wantCode = 200
		}
		if num.AsInt64() != int64(i+1) || retry.AsBool() != (i == 1) || code.AsInt64() != wantCode {
			t.Errorf("attempt %d: weft.attempt=%d weft.retry=%v status=%d", i+1, num.AsInt64(), retry.AsBool(), code.AsInt64())
		}
		var served bool
		for _, s := range servers {
			served = served || s.Parent().SpanID() == a.SpanContext().SpanID()
		}
		if !served {
			t.Errorf("attempt %d has no server span", i+1)
		}
	}
}

// TestTelemetryRetryBudget checks that a retry refused by the retry
// budget is counted and shows on the call's span.
func TestTelemetryRetryBudget(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	r.serveHTTP("sick", telBID, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "sick", http.StatusServiceUnavailable)
	}))
	hc := r.client(telClientID, WithRetry(RetryPolicy{Backoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Budget: breaker.BudgetSettings{Ratio: -1, PerSecond: -1}})).HTTPClient()
	if code, _ := telGet(t, hc, "http://sick/x", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", code)
	}
	var call sdktrace.ReadOnlySpan
	attempts := 0
	for _, s := range r.spans.Ended() {
		switch s.SpanKind() {
		case trace.SpanKindInternal:
			call = s
		case trace.SpanKindClient:
			attempts++
		}
	}
	if call == nil || attempts != 1 {
		t.Fatalf("call span %v, %d attempts; want a call span and 1 attempt (no budget for a retry)", call != nil, attempts)
	}
	var event bool
	for _, e := range call.Events() {
		event = event || e.Name == "weft.retry.budget_exhausted"
	}
	if !event {
		t.Error("no weft.retry.budget_exhausted event on the call span")
	}
	if exhausted := r.counterSum(t, "weft.retry.budget_exhausted"); exhausted != 1 {
		t.Errorf("weft.retry.budget_exhausted = %d, want 1", exhausted)
	}
}

// TestTelemetryHTTPHedge checks that a hedge is its own attempt span,
// marked weft.hedge=true, under the call span.
func TestTelemetryHTTPHedge(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stall := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-req.Context().Done():
		case <-release:
		}
	})
	r.serveHTTP("slow", telBID, stall)
	slow, _ := r.disc.Endpoints("slow")
	r.serveHTTP("fast", telBID, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") }))
	fast, _ := r.disc.Endpoints("fast")
	if err := r.disc.Set("hedged", slow[0], fast[0]); err != nil {
		t.Fatal(err)
	}
	hc := r.client(telClientID, WithHedging(HedgePolicy{Delay: 10 * time.Millisecond}),
		WithBalancer(func(string) balancer.Policy { return telFirstPolicy{} })).HTTPClient()
	if code, _ := telGet(t, hc, "http://hedged/x", nil); code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	// The losing attempt ends once its cancellation is through.
	clientSpans := func() (n int) {
		for _, s := range r.spans.Ended() {
			if s.SpanKind() == trace.SpanKindClient {
				n++
			}
		}
		return n
	}
	pollUntil(t, 5*time.Second, "two attempt spans ended", func() bool { return clientSpans() >= 2 })
	var hedges, firsts int
	for _, s := range r.spans.Ended() {
		if s.SpanKind() != trace.SpanKindClient {
			continue
		}
		h, _ := spanAttr(s, telemetry.HedgeKey)
		if h.AsBool() {
			hedges++
			if ep, _ := spanAttr(s, telemetry.EndpointKey); ep.AsString() != "fast-1" {
				t.Errorf("hedge sent to %q, want fast-1", ep.AsString())
			}
		} else {
			firsts++
		}
	}
	if hedges != 1 || firsts != 1 {
		t.Errorf("%d hedge and %d other attempt spans, want 1 and 1", hedges, firsts)
	}
}

// telFirstPolicy always picks the first endpoint it can.
type telFirstPolicy struct{}

func (telFirstPolicy) Build(eps []*balancer.Endpoint) balancer.Picker { return telFirstPicker(eps) }

type telFirstPicker []*balancer.Endpoint

func (p telFirstPicker) Pick(balancer.Info) (*balancer.Endpoint, error) { return p[0], nil }

// registerForward registers, on s, the demo method answered by calling
// the demo method of cc.
func registerForward(s *grpc.Server, cc grpc.ClientConnInterface) {
	demo.RegisterFunc(s, func(ctx context.Context) (string, error) { return demo.Whoami(ctx, cc) })
}

// registerFlaky registers the demo method failing its first call with
// Unavailable.
func registerFlaky(s *grpc.Server, n *atomic.Int32) {
	demo.RegisterFunc(s, func(context.Context) (string, error) {
		if n.Add(1) == 1 {
			return "", status.Error(codes.Unavailable, "try again")
		}
		return "ok", nil
	})
}

func dial(t *testing.T, c *Client, service string) *grpc.ClientConn {
	t.Helper()
	cc, err := c.DialGRPC(service)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestTelemetryGRPCChain calls client → A → B over real gRPC with mutual
// TLS and checks the trace and its mesh attributes.
func TestTelemetryGRPCChain(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	r.serveGRPC("b", telBID, func(s *grpc.Server) { demo.Register(s, "b", PeerID) })
	toB := dial(t, r.client(telAID, WithCircuitBreaker(breaker.Settings{})), "b")
	r.serveGRPC("a", telAID, func(s *grpc.Server) { registerForward(s, toB) })
	cc := dial(t, r.client(telClientID, WithCircuitBreaker(breaker.Settings{})), "a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The first call of an idle connection is balanced by gRPC's picker
	// before weft's balancer knows the ready endpoints; warm it up.
	if _, err := demo.Whoami(ctx, cc); err != nil {
		t.Fatal(err)
	}
	r.spans.Reset()
	answer, err := demo.Whoami(ctx, cc)
	if err != nil || answer != "b saw "+telAID.String() {
		t.Fatalf("answer %q, %v", answer, err)
	}
	const m = "weft.demo.v1.Demo/Whoami"
	ok := attribute.String("rpc.response.status_code", "OK")
	hops := clientHops(m, "a")
	hops[0].name = m
	hops = append(hops, serverHop(m, telClientID, ok))
	b := clientHops(m, "b")
	b[0].name = m
	hops = append(hops, b...)
	hops = append(hops, serverHop(m, telAID, ok))
	r.checkChain(t, hops)
}

// TestTelemetryGRPCRetry checks a failed-then-retried gRPC call: one call
// span, two attempt spans.
func TestTelemetryGRPCRetry(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	var n atomic.Int32
	n.Store(-1) // the warm-up call succeeds; the next one fails once
	r.serveGRPC("flaky", telBID, func(s *grpc.Server) { registerFlaky(s, &n) })
	cc := dial(t, r.client(telClientID, WithRetry(RetryPolicy{Backoff: time.Millisecond, MaxBackoff: time.Millisecond,
		IdempotentMethod: func(string) bool { return true }})), "flaky")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.Store(1) // warm-up: succeeds
	if _, err := demo.Whoami(ctx, cc); err != nil {
		t.Fatal(err)
	}
	n.Store(0)
	r.spans.Reset()
	if _, err := demo.Whoami(ctx, cc); err != nil {
		t.Fatalf("call failed after a retry: %v", err)
	}
	var call sdktrace.ReadOnlySpan
	var attempts []sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		switch s.SpanKind() {
		case trace.SpanKindInternal:
			call = s
		case trace.SpanKindClient:
			attempts = append(attempts, s)
		}
	}
	if call == nil || len(attempts) != 2 {
		t.Fatalf("call span %v, %d attempt spans; want one and 2", call != nil, len(attempts))
	}
	for i, a := range attempts {
		st, _ := spanAttr(a, "rpc.response.status_code")
		retry, _ := spanAttr(a, telemetry.RetryKey)
		want := "UNAVAILABLE"
		if i == 1 {
			want = "OK"
		}
		if a.Parent().SpanID() != call.SpanContext().SpanID() || st.AsString() != want || retry.AsBool() != (i == 1) {
			t.Errorf("attempt %d: parent ok %v, status %q, retry %v", i+1, a.Parent().SpanID() == call.SpanContext().SpanID(), st.AsString(), retry.AsBool())
		}
	}
}

// TestTelemetryKeepsSecrets makes calls with a bearer token in their
// headers, through a client whose discovery is a real Consul agent with
// ACLs on and an ACL token configured, plus a watch with a wrong token
// that fails, and finds neither token in any span, metric attribute or
// log record.
func TestTelemetryKeepsSecrets(t *testing.T) {
	leaktest.Check(t)
	const (
		aclToken    = "7e1e3e7a-0000-4000-8000-acl0token0000"
		wrongToken  = "0badc0de-0000-4000-8000-wrong0token00"
		bearerToken = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LWJlYXJlcg.bearer-secret-sig"
	)
	r := newTelRig(t)
	agent := consultest.Start(t, consultest.WithHCL(`acl {
  enabled = true
  default_policy = "deny"
  tokens { initial_management = "`+aclToken+`" }
}`))
	r.serveHTTP("b", telBID, backend())
	r.serveHTTP("a-static", telAID, forward(r.client(telAID).HTTPClient()))
	eps, _ := r.disc.Endpoints("a-static")
	host, port, _ := net.SplitHostPort(eps[0].Addr)
	var p int
	fmt.Sscan(port, &p)
	admin := agent.Config()
	admin.Token = aclToken
	ac, err := api.NewClient(admin)
	if err != nil {
		t.Fatal(err)
	}
	registered := func() bool {
		return ac.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "a-1", Name: "a", Address: host, Port: p}) == nil
	}
	pollUntil(t, 20*time.Second, "ACL bootstrap", registered)

	cfg := agent.Config()
	consul, err := discovery.NewConsul(cfg, discovery.WithToken(aclToken), discovery.WithConsulLogger(r.logger()))
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := discovery.NewConsul(agent.Config(), discovery.WithToken(wrongToken), discovery.WithConsulLogger(r.logger()),
		discovery.WithBackoff(20*time.Millisecond, 50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	tel := r.telemetry()
	src, _ := r.ca.Source(telClientID)
	newClient := func(w discovery.Watcher) *Client {
		c, err := NewClient(WithDiscovery(w), WithIdentity(src), WithTelemetry(tel), WithLogger(r.logger()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	hc := newClient(consul).HTTPClient()
	header := http.Header{
		"Authorization":  {"Bearer " + bearerToken},
		"X-Consul-Token": {aclToken},
	}
	for _, path := range []string{"/hello", "/fail", "/hello?access_token=" + bearerToken} {
		code, _ := telGet(t, hc, "http://a"+path, header)
		if path != "/fail" && code != http.StatusOK {
			t.Fatalf("%s: status %d", path, code)
		}
	}
	// A watch refused by Consul: its error goes to telemetry.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://a/hello", nil)
	req.Header.Set("Authorization", "Bearer "+bearerToken)
	if resp, err := newClient(wrong).RoundTrip(req); err == nil {
		resp.Body.Close()
		t.Fatal("call with a refused discovery succeeded")
	}
	if !strings.Contains(r.logs.String(), "weft.discovery.error") {
		t.Error("the discovery error was not recorded")
	}

	// Everything recorded, as text.
	var all strings.Builder
	for _, s := range r.spans.Ended() {
		fmt.Fprintln(&all, s.Name(), s.Status().Description)
		for _, kv := range s.Attributes() {
			fmt.Fprintln(&all, kv.Key, kv.Value.String())
		}
		for _, e := range s.Events() {
			fmt.Fprintln(&all, e.Name)
			for _, kv := range e.Attributes {
				fmt.Fprintln(&all, kv.Key, kv.Value.String())
			}
		}
	}
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			fmt.Fprintf(&all, "%s %+v\n", m.Name, m.Data)
		}
	}
	all.WriteString(r.logs.String())
	text := all.String()
	if !strings.Contains(text, "http.client.request.duration") || !strings.Contains(text, "weft.peer.spiffe_id") {
		t.Fatal("nothing recorded: the check below would be vacuous")
	}
	for name, secret := range map[string]string{"ACL token": aclToken, "wrong ACL token": wrongToken, "bearer token": bearerToken} {
		for _, part := range []string{secret, secret[:12], secret[len(secret)-12:]} {
			if strings.Contains(text, part) {
				i := strings.Index(text, part)
				t.Errorf("%s found in telemetry: …%s…", name, text[max(0, i-80):min(len(text), i+40)])
				break
			}
		}
	}
}

// TestTelemetryServerRefusals checks that a server's refusals are
// recorded: a peer refused at the TLS handshake, a request denied by an
// access policy, a request over a rate limit.
func TestTelemetryServerRefusals(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	policy, err := tlsid.NewPolicy(tlsid.Rule{Name: "no-admin", Deny: true, Paths: []string{"/admin"}}, tlsid.Rule{Name: "rest"})
	if err != nil {
		t.Fatal(err)
	}
	tel := r.telemetry()
	srv := func(opts ...ServerOption) string {
		src, _ := r.ca.Source(telBID)
		s, err := NewServer(backend(), append([]ServerOption{WithIdentity(src), WithTelemetry(tel), WithLogger(r.logger())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = s.Serve(ln) }()
		t.Cleanup(func() { s.Close(); <-done })
		return ln.Addr().String()
	}
	onlyA := srv(WithAuthorizer(tlsid.AuthorizeID(telAID)))
	guarded := srv(WithAccessPolicy(policy), WithRouteRateLimit("/hello", breaker.RateLimit{PerSecond: 0.001, Burst: 1}))
	if err := r.disc.Set("only-a", discovery.Endpoint{ID: "only-a-1", Addr: onlyA}); err != nil {
		t.Fatal(err)
	}
	if err := r.disc.Set("guarded", discovery.Endpoint{ID: "guarded-1", Addr: guarded}); err != nil {
		t.Fatal(err)
	}
	hc := r.client(telClientID).HTTPClient()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://only-a/hello", nil)
	if resp, err := hc.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("a refused peer got an answer")
	}
	for path, want := range map[string]int{"/admin": 403, "/hello": 200} {
		if code, _ := telGet(t, hc, "http://guarded"+path, nil); code != want {
			t.Fatalf("%s: status %d, want %d", path, code, want)
		}
	}
	if code, _ := telGet(t, hc, "http://guarded/hello", nil); code != http.StatusTooManyRequests {
		t.Fatalf("over the rate limit: status %d", code)
	}

	sums := map[string]int64{}
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range s.DataPoints {
					key := m.Name
					for _, k := range []attribute.Key{telemetry.SideKey, telemetry.RejectReasonKey} {
						if v, ok := dp.Attributes.Value(k); ok {
							key += " " + v.AsString()
						}
					}
					sums[key] += dp.Value
				}
			}
		}
	}
	// The handshake refusal is counted once per handshake attempt; the
	// client may have tried more than one connection.
	if sums["weft.authorization.denials server"] < 2 {
		t.Errorf("authorization denials %v, want the handshake refusal and the access policy denial", sums)
	}
	if sums["weft.request.rejections server rate_limit"] != 1 {
		t.Errorf("rate-limit rejections %v, want 1", sums)
	}
	var denied bool
	for _, s := range r.spans.Ended() {
		if v, _ := spanAttr(s, telemetry.AuthzDecisionKey); v.AsString() == "deny" && s.SpanKind() == trace.SpanKindServer {
			code, _ := spanAttr(s, "http.response.status_code")
			denied = code.AsInt64() == 403
		}
	}
	if !denied {
		t.Error("no server span with weft.authorization.decision=deny and status 403")
	}
	if logs := r.logs.String(); !strings.Contains(logs, "weft.authorization.denied") || !strings.Contains(logs, telClientID.String()) {
		t.Error("the denials were not logged with the peer's ID")
	}
	// The access policy's denial is logged once (by mesh), not again by
	// telemetry.
	if n := strings.Count(r.logs.String(), "no-admin"); n != 1 {
		t.Errorf("the access policy's denial is in %d log records, want 1:\n%s", n, r.logs.String())
	}
	// The client records the refused handshake as error.type=tls.
	var refused []string
	for _, m := range rm.ScopeMetrics {
		for _, m := range m.Metrics {
			if m.Name != "http.client.request.duration" {
				continue
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				if v, _ := dp.Attributes.Value(telemetry.ServiceKey); v.AsString() == "only-a" {
					e, _ := dp.Attributes.Value("error.type")
					refused = append(refused, e.AsString())
				}
			}
		}
	}
	if len(refused) == 0 || slices.ContainsFunc(refused, func(e string) bool { return e != "tls" }) {
		t.Errorf("refused handshake recorded with error.type %q, want tls", refused)
	}
}

// pollUntil polls cond every 50 ms until it holds or max passes.
func pollUntil(t *testing.T, max time.Duration, what string, cond func() bool) {
	t.Helper()
	pollEvery(t, 50*time.Millisecond, max, what, cond)
}

// pollEvery checks cond every interval until it holds, failing the test
// after max, and returns when it saw cond hold: the one polling loop of
// mesh's tests, with an interval fine enough for tests that time what
// they wait for.
func pollEvery(t *testing.T, interval, max time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	deadline := time.After(max)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s: not after %v", what, max)
		}
	}
	return time.Now()
}

// TestTelemetryMalformedTraceparent sends malformed traceparent headers
// to a weft server over mutual TLS: each request succeeds and starts a
// fresh trace.
func TestTelemetryMalformedTraceparent(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	r.serveHTTP("b", telBID, backend())
	eps, _ := r.disc.Endpoints("b")
	src, _ := r.ca.Source(telClientID)
	tlsConfig, err := tlsid.ClientConfig(src, tlsid.AuthorizeID(telBID))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer hc.CloseIdleConnections()
	for _, tp := range []string{
		"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", // wrong length
		"00-00000000000000000000000000000000-b7ad6b7169203331-01",
		"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
		"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
	} {
		r.spans.Reset()
		code, _ := telGet(t, hc, "https://"+eps[0].Addr+"/hello", http.Header{"Traceparent": {tp}})
		if code != http.StatusOK {
			t.Errorf("traceparent %q: status %d", tp, code)
		}
		spans := r.spans.Ended()
		if len(spans) != 1 || spans[0].Parent().IsValid() || !spans[0].SpanContext().IsValid() ||
			strings.Contains(tp, spans[0].SpanContext().TraceID().String()) {
			t.Errorf("traceparent %q: want one fresh root span, got %d spans", tp, len(spans))
		}
	}
}
