package mesh

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// seen is what a routed test server saw of the requests it served.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
}

func (s *seen) add(r *http.Request) {
	s.mu.Lock()
	s.reqs = append(s.reqs, r.Clone(context.Background()))
	s.mu.Unlock()
}

func (s *seen) all() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*http.Request(nil), s.reqs...)
}

// routedEnv is two versions of service "pay" (v1 and v2, told apart by
// meta), a service "shadow" for mirrors, and a client routed by a
// static source.
type routedEnv struct {
	env    *testEnv
	v1, v2 *seen
	mirror *seen
	src    *route.Static
	client *Client
	hc     *http.Client
}

func newRoutedEnv(t *testing.T, yaml string) *routedEnv {
	t.Helper()
	re := &routedEnv{env: newTestEnv(t, 0), v1: &seen{}, v2: &seen{}, mirror: &seen{}}
	serve := func(name string, s *seen) string {
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.add(r)
			if r.URL.Path == "/slow" {
				select {
				case <-r.Context().Done():
				case <-time.After(10 * time.Second): // the slow route's service time
				}
			}
			w.Header().Set("X-Served-By", name)
			io.WriteString(w, name)
		})
		srv, err := NewServer(h, WithIdentity(re.env.source(testServerID)))
		if err != nil {
			t.Fatal(err)
		}
		return startServer(t, srv)
	}
	a1, a2, am := serve("v1", re.v1), serve("v2", re.v2), serve("shadow", re.mirror)
	if err := re.env.discovery.Set("pay",
		discovery.Endpoint{ID: "pay-v1", Addr: a1, Meta: map[string]string{"version": "v1"}},
		discovery.Endpoint{ID: "pay-v2", Addr: a2, Meta: map[string]string{"version": "v2"}}); err != nil {
		t.Fatal(err)
	}
	if err := re.env.discovery.Set("shadow", discovery.Endpoint{ID: "shadow-1", Addr: am}); err != nil {
		t.Fatal(err)
	}
	cfg, err := route.Parse([]byte(yaml), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	if re.src, err = route.NewStatic(cfg); err != nil {
		t.Fatal(err)
	}
	re.client = re.env.client(WithRoutes(re.src))
	re.hc = re.client.HTTPClient()
	return re
}

func (re *routedEnv) get(t *testing.T, path string, header http.Header) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequestWithContext(testContext(t, 20*time.Second), "GET", "http://pay"+path, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := re.hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

const routesYAML = `
services:
  pay:
    defaultSubset: v1
    subsets:
      v1: {meta: {version: v1}}
      v2: {meta: {version: v2}}
    routes:
      - name: canary-header
        match: [{headers: {x-canary: {exact: "yes"}}}]
        backends: [{subset: v2}]
        headers:
          request: {set: {x-routed: canary}}
          response: {set: {x-route: canary-header}}
      - name: half
        match: [{path: {prefix: /half}}]
        backends: [{subset: v1, weight: 5000}, {subset: v2, weight: 5000}]
      - name: rewrite
        match: [{path: {prefix: /old/}}]
        rewrite: {path: /new/}
        backends: [{subset: v2}]
      - name: slow
        match: [{path: {exact: /slow}}]
        timeout: 200ms
        backends: [{subset: v1}]
      - name: faulty
        match: [{path: {exact: /fault}}]
        fault: {abort: {httpStatus: 418, percent: 100}}
        backends: [{subset: v1}]
      - name: moved
        match: [{path: {exact: /moved}}]
        redirect: {path: /here, code: 307}
      - name: direct
        match: [{path: {exact: /direct}}]
        directResponse: {status: 204}
      - name: mirrored
        match: [{path: {exact: /mirrored}}]
        mirror: {service: shadow, percent: 100}
        backends: [{subset: v1}]
`

// TestRoutesHTTP: the route step of the engine for HTTP — header
// matches, weighted splits across subsets, header changes, rewrites,
// per-route timeouts, faults, redirects, direct responses and mirrors.
func TestRoutesHTTP(t *testing.T) {
	leaktest.Check(t)
	re := newRoutedEnv(t, routesYAML)

	// Everything else goes to the default subset.
	for range 5 {
		if code, body, _ := re.get(t, "/other", nil); code != 200 || body != "v1" {
			t.Fatalf("default route: %d %q", code, body)
		}
	}
	// A header sends to v2, with the route's header changes.
	code, body, h := re.get(t, "/other", http.Header{"X-Canary": {"yes"}})
	if code != 200 || body != "v2" || h.Get("X-Route") != "canary-header" {
		t.Fatalf("canary header: %d %q %v", code, body, h)
	}
	if reqs := re.v2.all(); len(reqs) != 1 || reqs[0].Header.Get("X-Routed") != "canary" {
		t.Fatalf("v2 saw %d requests, headers %v", len(reqs), reqs)
	}
	// A 50/50 split: both subsets serve, in a share a fair coin gives.
	n1 := len(re.v1.all())
	const calls = 400
	for range calls {
		if code, _, _ := re.get(t, "/half", nil); code != 200 {
			t.Fatalf("split: %d", code)
		}
	}
	if got := len(re.v1.all()) - n1; got < calls*35/100 || got > calls*65/100 {
		t.Fatalf("v1 served %d of %d split calls, want about half", got, calls)
	}
	// A rewrite changes the path the server sees.
	if code, body, _ := re.get(t, "/old/thing", nil); code != 200 || body != "v2" {
		t.Fatalf("rewrite: %d %q", code, body)
	}
	if reqs := re.v2.all(); reqs[len(reqs)-1].URL.Path != "/new/thing" {
		t.Fatalf("rewritten path: %q", reqs[len(reqs)-1].URL.Path)
	}
	// The route's timeout ends a slow call.
	start := time.Now()
	req, _ := http.NewRequestWithContext(testContext(t, 20*time.Second), "GET", "http://pay/slow", nil)
	if _, err := re.hc.Do(req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow route: %v, want a deadline error", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("slow route took %v", took)
	}
	// A fault answers without a call.
	served := len(re.v1.all())
	if code, _, _ := re.get(t, "/fault", nil); code != 418 || len(re.v1.all()) != served {
		t.Fatalf("fault: %d", code)
	}
	// Redirects and direct responses answer from the route.
	if code, _, h := re.getNoRedirect(t, "/moved"); code != 307 || h.Get("Location") != "http://pay/here" {
		t.Fatalf("redirect: %d %q", code, h.Get("Location"))
	}
	if code, _, _ := re.get(t, "/direct", nil); code != 204 {
		t.Fatalf("direct response: %d", code)
	}
	// A mirror sends a copy to the shadow service, host marked.
	if code, body, _ := re.get(t, "/mirrored", nil); code != 200 || body != "v1" {
		t.Fatalf("mirrored: %d %q", code, body)
	}
	pollUntil(t, 20*time.Second, "the mirrored copy", func() bool { return len(re.mirror.all()) == 1 })
	if m := re.mirror.all()[0]; m.Host != "pay-shadow" || m.URL.Path != "/mirrored" {
		t.Fatalf("mirror saw host %q path %q", m.Host, m.URL.Path)
	}
}

func (re *routedEnv) getNoRedirect(t *testing.T, path string) (int, string, http.Header) {
	t.Helper()
	hc := *re.hc
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Get("http://pay" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestRoutesChangeLive: a new table takes effect on the next call, and an
// invalid one never does.
func TestRoutesChangeLive(t *testing.T) {
	leaktest.Check(t)
	re := newRoutedEnv(t, routesYAML)
	if _, body, _ := re.get(t, "/x", nil); body != "v1" {
		t.Fatalf("before: %q", body)
	}
	cfg, err := route.Parse([]byte(strings.Replace(routesYAML, "defaultSubset: v1", "defaultSubset: v2", 1)), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	if err := re.src.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if _, body, _ := re.get(t, "/x", nil); body != "v2" {
		t.Fatalf("after the update: %q", body)
	}
	bad, err := route.Parse([]byte(strings.Replace(routesYAML, "weight: 5000}]", "weight: 4000}]", 1)), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	if err := re.src.Update(bad); err == nil {
		t.Fatal("weights summing to 90% accepted")
	}
	if _, body, _ := re.get(t, "/x", nil); body != "v2" {
		t.Fatalf("after a refused update: %q", body)
	}
}

// TestRoutesGRPC: gRPC calls follow routes by metadata to a subset of
// the dialled service or to another service, and faults abort them with
// the route's code.
func TestRoutesGRPC(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	a1 := startDemoGRPC(t, env, "g1", func(context.Context) (string, error) { return "g1", nil })
	a2 := startDemoGRPC(t, env, "g2", func(context.Context) (string, error) { return "g2", nil })
	o1 := startDemoGRPC(t, env, "o1", func(context.Context) (string, error) { return "o1", nil })
	if err := env.discovery.Set("other", discovery.Endpoint{ID: "o1", Addr: o1}); err != nil {
		t.Fatal(err)
	}
	if err := env.discovery.Set("greet",
		discovery.Endpoint{ID: "g1", Addr: a1, Tags: []string{"stable"}},
		discovery.Endpoint{ID: "g2", Addr: a2, Tags: []string{"canary"}}); err != nil {
		t.Fatal(err)
	}
	cfg, err := route.Parse([]byte(`
services:
  greet:
    defaultSubset: stable
    subsets:
      stable: {tags: [stable]}
      canary: {tags: [canary]}
    routes:
      - match: [{headers: {x-canary: {present: true}}}]
        backends: [{subset: canary}]
      - match: [{headers: {x-fault: {present: true}}}]
        fault: {abort: {grpcStatus: RESOURCE_EXHAUSTED, percent: 100}}
        backends: [{subset: stable}]
      - match: [{headers: {x-elsewhere: {present: true}}}]
        backends: [{service: other}]
`), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	src, err := route.NewStatic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := env.client(WithRoutes(src)).DialGRPC("greet")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	for range 5 {
		if got, err := demo.Whoami(ctx, cc); err != nil || got != "g1" {
			t.Fatalf("default: %q %v", got, err)
		}
	}
	canary := metadata.AppendToOutgoingContext(ctx, "x-canary", "1")
	for range 5 {
		if got, err := demo.Whoami(canary, cc); err != nil || got != "g2" {
			t.Fatalf("canary: %q %v", got, err)
		}
	}
	if _, err := demo.Whoami(metadata.AppendToOutgoingContext(ctx, "x-fault", "1"), cc); status.Code(err) != codes.ResourceExhausted || !errors.Is(err, ErrFaultInjected) {
		t.Fatalf("fault: %v", err)
	}
	// A route to another service: the connection reaches its endpoints
	// too, and calls without the header stay on the dialled service.
	for range 3 {
		if got, err := demo.Whoami(metadata.AppendToOutgoingContext(ctx, "x-elsewhere", "1"), cc); err != nil || got != "o1" {
			t.Fatalf("route to another service: %q %v", got, err)
		}
		if got, err := demo.Whoami(ctx, cc); err != nil || got != "g1" {
			t.Fatalf("default after a route elsewhere: %q %v", got, err)
		}
	}
}

// TestFaultTelemetry: a call a route's fault aborts says so in its span
// (event "weft.fault.abort" on a client span without endpoint), HTTP and
// gRPC, never reaches a server, and is not counted by the breakers: a
// breaker that trips on one failure stays closed through the aborts.
func TestFaultTelemetry(t *testing.T) {
	leaktest.Check(t)
	rig := newTelRig(t)
	var arrived atomic.Int64
	rig.serveHTTP("pay", telAID, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		io.WriteString(w, "ok")
	}))
	rig.serveGRPC("greet", telAID, func(s *grpc.Server) {
		demo.RegisterFunc(s, func(context.Context) (string, error) { arrived.Add(1); return "ok", nil })
	})
	src := staticRoutes(t, `
services:
  pay:
    routes:
      - name: aborted
        match: [{path: {exact: /fault}}]
        fault: {abort: {httpStatus: 503, percent: 100}}
  greet:
    routes:
      - name: aborted
        match: [{headers: {x-fault: {present: true}}}]
        fault: {abort: {grpcStatus: UNAVAILABLE, percent: 100}}
`)
	c := rig.client(telClientID, WithRoutes(src), WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 1, FailureRatio: 2}))
	hc := c.HTTPClient()
	cc, err := c.DialGRPC("greet")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	const n = 5
	for range n {
		if code, body, _, err := payGet(ctx, hc, "/fault", nil); err != nil || code != 503 || body != "fault filter abort" {
			t.Fatalf("faulted HTTP call: %d %q %v", code, body, err)
		}
		if _, err := demo.Whoami(metadata.AppendToOutgoingContext(ctx, "x-fault", "1"), cc); status.Code(err) != codes.Unavailable {
			t.Fatalf("faulted gRPC call: %v", err)
		}
	}
	if got := arrived.Load(); got != 0 {
		t.Fatalf("servers saw %d faulted calls", got)
	}
	// Breakers tripping on one failure let the next calls through.
	if code, body, _, err := payGet(ctx, hc, "/ok", nil); err != nil || code != 200 || body != "ok" {
		t.Fatalf("HTTP call after the aborts: %d %q %v", code, body, err)
	}
	if got, err := demo.Whoami(ctx, cc); err != nil || got != "ok" {
		t.Fatalf("gRPC call after the aborts: %q %v", got, err)
	}
	var httpFaults, grpcFaults int
	for _, s := range rig.spans.Ended() {
		for _, e := range s.Events() {
			if e.Name != "weft.fault.abort" {
				continue
			}
			if s.SpanKind() != trace.SpanKindClient {
				t.Errorf("fault event on a %v span %q", s.SpanKind(), s.Name())
			}
			switch v := attrOf(e.Attributes, "weft.fault.abort"); v.AsString() {
			case "":
				if v.AsInt64() == 503 && attrOf(s.Attributes(), "http.response.status_code").AsInt64() == 503 {
					httpFaults++
				}
			case "Unavailable":
				grpcFaults++
			}
		}
	}
	if httpFaults != n || grpcFaults != n {
		t.Fatalf("spans with a fault event: %d HTTP, %d gRPC; want %d each", httpFaults, grpcFaults, n)
	}
	if logs := rig.logs.String(); strings.Contains(logs, "weft.breaker.state_change") {
		t.Fatalf("a breaker changed state:\n%s", logs)
	}
}

// attrOf returns the value of key in attrs (the zero Value when absent).
func attrOf(attrs []attribute.KeyValue, key attribute.Key) attribute.Value {
	for _, kv := range attrs {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// TestRouteRejectionsReported: an update a source refuses is logged with
// each problem's path and counted in weft.route.rejections, and the
// table stays.
func TestRouteRejectionsReported(t *testing.T) {
	leaktest.Check(t)
	rig := newTelRig(t)
	const good = "services: {pay: {defaultSubset: v1, subsets: {v1: {tags: [v1]}}}}"
	cfg, err := route.Parse([]byte(good), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	src, err := route.NewStatic(cfg, ReportRouteRejections(rig.logger(), rig.telemetry()))
	if err != nil {
		t.Fatal(err)
	}
	before := src.Table()
	for _, bad := range []string{
		"services: {pay: {defaultSubset: v9, subsets: {v1: {tags: [v1]}}}}",
		"services: {pay: {routes: [{match: [{path: {regex: '(a'}}]}]}}",
	} {
		cfg, err := route.Parse([]byte(bad), route.YAML)
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Update(cfg); !errors.Is(err, route.ErrInvalid) {
			t.Fatalf("update %s: %v, want a refusal", bad, err)
		}
	}
	if src.Table() != before {
		t.Fatal("a refused update replaced the table")
	}
	logs := rig.logs.String()
	for _, want := range []string{"mesh: route update refused", "services.pay.defaultSubset", "services.pay.routes[0].match[0].path.regex", "weft.route.rejected"} {
		if !strings.Contains(logs, want) {
			t.Errorf("no %q in the logs:\n%s", want, logs)
		}
	}
	rejected := rig.counterSum(t, "weft.route.rejections")
	if rejected != 2 {
		t.Fatalf("weft.route.rejections = %d, want 2", rejected)
	}
}

// counterSum returns the sum of the data points of the Int64 counter
// name, 0 when it has none.
func (r *telRig) counterSum(t *testing.T, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var sum int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					sum += dp.Value
				}
			}
		}
	}
	return sum
}

// TestMirrorCompare: the comparison hook sees both answers of a mirrored
// call — status, headers and the start of the body, the primary's as far
// as the caller read it.
func TestMirrorCompare(t *testing.T) {
	leaktest.Check(t)
	re := newRoutedEnv(t, routesYAML)
	got := make(chan MirrorComparison, 4)
	hc := re.env.client(WithRoutes(re.src), WithMirrorCompare(func(mc MirrorComparison) { got <- mc })).HTTPClient()
	ctx := testContext(t, 20*time.Second)
	for _, tt := range []struct {
		name        string
		read        bool
		primaryBody string
	}{
		{"body read", true, "v1"},
		{"body closed unread", false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://pay/mirrored", nil)
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if tt.read {
				if b, _ := io.ReadAll(resp.Body); string(b) != "v1" {
					t.Fatalf("primary body %q", b)
				}
			}
			resp.Body.Close()
			var mc MirrorComparison
			select {
			case mc = <-got:
			case <-ctx.Done():
				t.Fatal("no comparison")
			}
			if mc.Service != "pay" || mc.Route != "mirrored" || mc.Mirror != "shadow" || mc.Path != "/mirrored" || mc.Method != "GET" {
				t.Errorf("comparison of %+v", mc)
			}
			p, s := mc.Primary, mc.Shadow
			if p.Err != nil || p.Status != 200 || p.Header.Get("X-Served-By") != "v1" || string(p.Body) != tt.primaryBody || p.Truncated {
				t.Errorf("primary: %d %v %q %v", p.Status, p.Header, p.Body, p.Err)
			}
			if s.Err != nil || s.Status != 200 || s.Header.Get("X-Served-By") != "shadow" || string(s.Body) != "shadow" || s.Truncated {
				t.Errorf("shadow: %d %v %q %v", s.Status, s.Header, s.Body, s.Err)
			}
		})
	}
}

// TestFaultDelayEvent: a call a route's fault delays adds the event
// "weft.fault.delay" to the span of its context (here the caller's),
// HTTP and gRPC.
func TestFaultDelayEvent(t *testing.T) {
	leaktest.Check(t)
	rig := newTelRig(t)
	rig.serveHTTP("pay", telAID, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	rig.serveGRPC("greet", telAID, func(s *grpc.Server) {
		demo.RegisterFunc(s, func(context.Context) (string, error) { return "ok", nil })
	})
	src := staticRoutes(t, `
services:
  pay:
    routes: [{fault: {delay: {fixed: 1ms, percent: 100}}}]
  greet:
    routes: [{fault: {delay: {fixed: 1ms, percent: 100}}}]
`)
	c := rig.client(telClientID, WithRoutes(src))
	cc, err := c.DialGRPC("greet")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	for _, tt := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"http", func(ctx context.Context) error {
			_, _, _, err := payGet(ctx, c.HTTPClient(), "/", nil)
			return err
		}},
		{"grpc", func(ctx context.Context) error {
			_, err := demo.Whoami(ctx, cc)
			return err
		}},
	} {
		ctx, span := rig.tp.Tracer("caller").Start(testContext(t, 20*time.Second), "caller "+tt.name)
		if err := tt.call(ctx); err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		span.End()
		var delays int
		for _, s := range rig.spans.Ended() {
			if s.Name() != "caller "+tt.name {
				continue
			}
			for _, e := range s.Events() {
				if e.Name == "weft.fault.delay" && attrOf(e.Attributes, "weft.fault.delay").AsFloat64() == 0.001 {
					delays++
				}
			}
		}
		if delays != 1 {
			t.Errorf("%s: %d weft.fault.delay events on the caller's span, want 1", tt.name, delays)
		}
	}
}

// TestRoutesDestinationPolicy: a destination's traffic policy picks its
// balancer, as DestinationRule's trafficPolicy does: ring hash and
// maglev on a header, a cookie or a query parameter keep each key on one
// endpoint over many calls, and spread different keys over the
// endpoints.
func TestRoutesDestinationPolicy(t *testing.T) {
	tests := []struct {
		name, lb string
		request  func(user string) (path string, h http.Header)
	}{
		{"ring hash on a header", "{policy: ring_hash, hashHeader: x-user}",
			func(u string) (string, http.Header) { return "/", http.Header{"X-User": {u}} }},
		{"maglev on a cookie", "{policy: maglev, hashCookie: session}",
			func(u string) (string, http.Header) { return "/", http.Header{"Cookie": {"theme=dark; session=" + u}} }},
		{"ring hash on a query parameter", "{policy: ring_hash, hashQuery: user}",
			func(u string) (string, http.Header) { return "/cart?page=2&user=" + u, nil }},
		{"maglev on an escaped query parameter", "{policy: maglev, hashQuery: user}",
			func(u string) (string, http.Header) { return "/cart?user=" + u + "%20x&user=ignored", nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			re := newRoutedEnv(t, `
services:
  pay:
    trafficPolicy:
      loadBalancer: `+tt.lb+`
`)
			seenBy := map[string]string{}
			bodies := map[string]bool{}
			for round := range 5 {
				for u := range 20 {
					user := "user-" + string(rune('a'+u))
					path, h := tt.request(user)
					code, body, _ := re.get(t, path, h)
					if code != 200 {
						t.Fatalf("call: %d", code)
					}
					if prev, ok := seenBy[user]; ok && prev != body {
						t.Fatalf("round %d: %s went to %s, then %s", round, user, prev, body)
					}
					seenBy[user] = body
					bodies[body] = true
				}
			}
			if len(bodies) != 2 {
				t.Fatalf("20 keys all went to %v", bodies)
			}
		})
	}
}

// TestRoutesQueryHashGRPC: gRPC calls have no query, so a hash on a
// query parameter gives them no key: they succeed and go to random
// endpoints, as HTTP calls without the parameter do.
func TestRoutesQueryHashGRPC(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 3)
	c := env.client(WithRoutes(staticRoutes(t, `
services:
  demo-grpc: {trafficPolicy: {loadBalancer: {policy: ring_hash, hashQuery: user}}}
`)))
	cc, err := c.DialGRPC("demo-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 30*time.Second)
	ctx = metadata.AppendToOutgoingContext(ctx, "user", "alice")
	seen := map[string]bool{}
	for len(seen) < 3 {
		answer, err := demo.Whoami(ctx, cc)
		if err != nil {
			t.Fatalf("after %v: %v", seen, err)
		}
		seen[strings.Fields(answer)[0]] = true
	}
}

// TestDestinationBalancerKeptAcrossTables: a newer table whose
// destination selects and balances alike keeps the destination's
// balancer, with its load figures and ejections; a change of its load
// balancer or subset selector gives a new one.
func TestDestinationBalancerKeptAcrossTables(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	err := env.discovery.Set("demo",
		discovery.Endpoint{ID: "a", Addr: "127.0.0.1:1", Tags: []string{"v2"}},
		discovery.Endpoint{ID: "b", Addr: "127.0.0.1:2", Tags: []string{"v2"}})
	if err != nil {
		t.Fatal(err)
	}
	config := func(lb, tag string) string {
		return `
services:
  demo:
    subsets:
      v2: {tags: [` + tag + `]}
    trafficPolicy:
      loadBalancer: {policy: ` + lb + `}
      outlierDetection: {consecutiveFailures: 3}
    routes:
      - backends: [{subset: v2}]
      - name: unrelated
        match: [{path: {prefix: /other}}]
        backends: [{subset: v2}]
`
	}
	src := staticRoutes(t, config("least_request", "v2"))
	c := env.client(WithRoutes(src))
	cl, err := c.cluster("demo")
	if err != nil {
		t.Fatal(err)
	}
	balancerOf := func() *balancer.Balancer {
		t.Helper()
		for _, d := range src.Table().Destinations() {
			if d.Service == "demo" && d.Subset == "v2" {
				bal, _ := cl.destination(d)
				return bal
			}
		}
		t.Fatal("no destination demo/v2 in the table")
		return nil
	}
	update := func(yaml string) {
		t.Helper()
		cfg, err := route.Parse([]byte(yaml), route.YAML)
		if err != nil {
			t.Fatal(err)
		}
		if err := src.Update(cfg); err != nil {
			t.Fatal(err)
		}
	}
	first := balancerOf()
	update(config("least_request", "v2") + "\n# a newer table, same destinations\n")
	if got := balancerOf(); got != first {
		t.Error("a newer table with the same destination gave it a new balancer")
	}
	update(config("round_robin", "v2"))
	second := balancerOf()
	if second == first {
		t.Error("a changed load balancer kept the old balancer")
	}
	update(config("round_robin", "v2, canary"))
	if got := balancerOf(); got == second {
		t.Error("a changed subset selector kept the old balancer")
	}
}
