package mesh

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// gate holds a server's calls while it is shut, counting them.
type gate struct {
	mu       sync.Mutex
	shut     chan struct{} // nil while open
	inflight atomic.Int32
	arrivals atomic.Int32
}

func (g *gate) close() {
	g.mu.Lock()
	g.shut = make(chan struct{})
	g.mu.Unlock()
}

func (g *gate) open() {
	g.mu.Lock()
	if g.shut != nil {
		close(g.shut)
		g.shut = nil
	}
	g.mu.Unlock()
}

// pass is a call's way through: it waits while the gate is shut, or
// until ctx ends.
func (g *gate) pass(ctx context.Context) {
	g.arrivals.Add(1)
	g.inflight.Add(1)
	defer g.inflight.Add(-1)
	g.mu.Lock()
	shut := g.shut
	g.mu.Unlock()
	if shut != nil {
		select {
		case <-shut:
		case <-ctx.Done():
		}
	}
}

// poolEnv is an HTTP service "pay" and a gRPC service "greet", one
// mTLS endpoint each behind a gate, called by a client routed by a
// static source and with breakers that trip on one failure.
type poolEnv struct {
	httpGate, grpcGate *gate
	client             *Client
	cc                 *grpc.ClientConn
}

func newPoolEnv(t *testing.T, yaml string, opts ...ClientOption) *poolEnv {
	t.Helper()
	env := newTestEnv(t, 0)
	pe := &poolEnv{httpGate: &gate{}, grpcGate: &gate{}}
	srv, err := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pe.httpGate.pass(r.Context())
		_, _ = io.WriteString(w, "pay")
	}), WithIdentity(env.source(testServerID)))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.discovery.Set("pay", discovery.Endpoint{ID: "pay-1", Addr: startServer(t, srv)}); err != nil {
		t.Fatal(err)
	}
	ga := startDemoGRPC(t, env, "greet-1", func(ctx context.Context) (string, error) {
		pe.grpcGate.pass(ctx)
		return "greet", nil
	})
	if err := env.discovery.Set("greet", discovery.Endpoint{ID: "greet-1", Addr: ga}); err != nil {
		t.Fatal(err)
	}
	src := staticRoutes(t, yaml)
	pe.client = env.client(append([]ClientOption{WithRoutes(src), WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 1})}, opts...)...)
	if pe.cc, err = pe.client.DialGRPC("greet"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pe.cc.Close() })
	return pe
}

func (pe *poolEnv) getHTTP(ctx context.Context) (string, error) {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://pay/", nil)
	resp, err := pe.client.HTTPClient().Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func (pe *poolEnv) streamGRPC(ctx context.Context) (string, error) {
	s, err := pe.cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Whoami"}, demo.WhoamiMethod)
	if err != nil {
		return "", err
	}
	if err := s.SendMsg(wrapperspb.String("whoami")); err != nil {
		return "", err
	}
	if err := s.CloseSend(); err != nil {
		return "", err
	}
	out := new(wrapperspb.StringValue)
	if err := s.RecvMsg(out); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}

// TestConnectionPoolLimits: with maxRequests 2 and two slow calls in
// flight, a third call to the destination is refused at once with
// ErrOverflow (gRPC: Unavailable), never reaches the server and counts
// against no endpoint: the breaker that trips on one failure stays
// closed; telemetry counts it as a rejection for concurrency_limit. Once
// the slow calls end, calls pass again. HTTP, gRPC unary calls and gRPC
// streams alike, each against a real mTLS server.
func TestConnectionPoolLimits(t *testing.T) {
	leaktest.Check(t)
	rig := newTelRig(t)
	pe := newPoolEnv(t, `
services:
  pay: {trafficPolicy: {connectionPool: {maxRequests: 2}}}
  greet: {trafficPolicy: {connectionPool: {maxRequests: 2}}}
`, WithTelemetry(rig.telemetry()))
	tests := []struct {
		name    string
		service string
		ep      string
		g       *gate
		call    func(context.Context) (string, error)
		want    string
	}{
		{"http", "pay", "pay-1", pe.httpGate, pe.getHTTP, "pay"},
		{"grpc unary", "greet", "greet-1", pe.grpcGate, func(ctx context.Context) (string, error) { return demo.Whoami(ctx, pe.cc) }, "greet"},
		{"grpc stream", "greet", "greet-1", pe.grpcGate, pe.streamGRPC, "greet"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testContext(t, 30*time.Second)
			if got, err := tt.call(ctx); err != nil || got != tt.want {
				t.Fatalf("first call: %q %v", got, err)
			}
			tt.g.close()
			defer tt.g.open()
			before := tt.g.arrivals.Load()
			slow := make(chan error, 2)
			for range 2 {
				go func() {
					_, err := tt.call(ctx)
					slow <- err
				}()
			}
			poll(t, "two slow calls at the server", func() bool { return tt.g.inflight.Load() == 2 })

			start := time.Now()
			_, err := tt.call(ctx)
			took := time.Since(start)
			if !errors.Is(err, ErrOverflow) {
				t.Fatalf("third call: %v, want ErrOverflow", err)
			}
			if tt.service == "greet" && status.Code(err) != codes.Unavailable {
				t.Errorf("third call's code %v, want Unavailable", status.Code(err))
			}
			if n := tt.g.arrivals.Load() - before; n != 2 || tt.g.inflight.Load() != 2 {
				t.Errorf("the server saw %d calls (%d in flight), want the 2 slow ones", n, tt.g.inflight.Load())
			}
			if st := pe.client.Breakers(tt.service).Get(tt.ep).State(); st != breaker.Closed {
				t.Errorf("breaker %v after the overflow, want closed: an overflow is no endpoint failure", st)
			}
			if n := rig.counterSum(t, "weft.request.rejections"); n != int64(i+1) {
				t.Errorf("weft.request.rejections = %d, want %d", n, i+1)
			}
			t.Logf("third call refused in %v while two were in flight: %v", took, err)
			if logs := rig.logs.String(); !strings.Contains(logs, "concurrency_limit") {
				t.Errorf("no rejection for concurrency_limit in the logs:\n%s", logs)
			}

			tt.g.open()
			for range 2 {
				if err := <-slow; err != nil {
					t.Errorf("slow call: %v", err)
				}
			}
			for range 3 {
				if got, err := tt.call(ctx); err != nil || got != tt.want {
					t.Fatalf("after the slow calls ended: %q %v", got, err)
				}
			}
		})
	}
}

// TestConnectionPoolPending: with maxConnections 1 and
// maxPendingRequests 1, a second HTTP call waits for the connection and a
// third is refused at once; when the first ends, the waiting call goes
// through.
func TestConnectionPoolPending(t *testing.T) {
	leaktest.Check(t)
	pe := newPoolEnv(t, `
services:
  pay: {trafficPolicy: {connectionPool: {maxConnections: 1, maxPendingRequests: 1}}}
`)
	ctx := testContext(t, 30*time.Second)
	if _, err := pe.getHTTP(ctx); err != nil {
		t.Fatal(err)
	}
	cl, err := pe.client.cluster("pay")
	if err != nil {
		t.Fatal(err)
	}
	pe.httpGate.close()
	defer pe.httpGate.open()
	done := make(chan error, 2)
	call := func() {
		_, err := pe.getHTTP(ctx)
		done <- err
	}
	go call()
	poll(t, "the first call at the server", func() bool { return pe.httpGate.inflight.Load() == 1 })
	go call()
	poll(t, "the second call pending", func() bool {
		cl.pools.mu.Lock()
		defer cl.pools.mu.Unlock()
		p := cl.pools.m[""]
		return p != nil && p.pending.Load() == 1
	})
	if _, err := pe.getHTTP(ctx); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third call: %v, want ErrOverflow", err)
	}
	if n := pe.httpGate.arrivals.Load(); n != 2 {
		t.Errorf("the server saw %d calls, want the first call and the one before it", n)
	}
	pe.httpGate.open()
	for range 2 {
		if err := <-done; err != nil {
			t.Errorf("call: %v", err)
		}
	}
	if n := pe.httpGate.arrivals.Load(); n != 3 {
		t.Errorf("the server saw %d calls, want 3: the pending call went through", n)
	}
}

// TestConnectionPoolBodyClosedTwice: an HTTP call holds its place in the
// pool until its response body is closed, and closing it twice frees
// the place once.
func TestConnectionPoolBodyClosedTwice(t *testing.T) {
	leaktest.Check(t)
	pe := newPoolEnv(t, `
services:
  pay: {trafficPolicy: {connectionPool: {maxRequests: 1}}}
`)
	ctx := testContext(t, 30*time.Second)
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://pay/", nil)
	resp, err := pe.client.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pe.getHTTP(ctx); !errors.Is(err, ErrOverflow) {
		t.Fatalf("a call while a response body is open: %v, want ErrOverflow", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp.Body.Close()
	pe.httpGate.close()
	defer pe.httpGate.open()
	slow := make(chan error, 1)
	go func() {
		_, err := pe.getHTTP(ctx)
		slow <- err
	}()
	poll(t, "the slow call at the server", func() bool { return pe.httpGate.inflight.Load() == 1 })
	if _, err := pe.getHTTP(ctx); !errors.Is(err, ErrOverflow) {
		t.Errorf("a second call beside the slow one: %v, want ErrOverflow: the double close freed two places", err)
	}
	pe.httpGate.open()
	if err := <-slow; err != nil {
		t.Error(err)
	}
}

// BenchmarkPoolAdmit measures the admission of a call by a
// destination's connection pool and its release, from parallel callers:
// no allocation; an atomic counter for maxRequests, and
// x/sync/semaphore's lock for maxConnections.
func BenchmarkPoolAdmit(b *testing.B) {
	for _, tt := range []struct {
		name    string
		set     route.ConnectionPool
		ownConn bool
	}{
		{"grpc/maxRequests", route.ConnectionPool{MaxRequests: 1 << 20}, false},
		{"http/maxConnections+maxRequests", route.ConnectionPool{MaxConnections: 1 << 20, MaxPendingRequests: 8, MaxRequests: 1 << 20}, true},
	} {
		p := newPoolLimit("bench", tt.set)
		b.Run(tt.name, func(b *testing.B) {
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					done, err := p.acquire(ctx, tt.ownConn)
					if err != nil {
						b.Fatal(err)
					}
					done()
				}
			})
		})
	}
}

// TestRouteWarningsReported: each warning of a source's tables is logged
// once, however many tables keep it.
func TestRouteWarningsReported(t *testing.T) {
	var logs strings.Builder
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	shadowed := `
services:
  pay:
    routes:
      - backends: [{service: pay}]
      - match: [{path: {prefix: /a}}]`
	src, err := route.NewStatic(mustParseRoutes(t, shadowed), ReportRouteWarnings(logger))
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Update(mustParseRoutes(t, shadowed+"\n        timeout: 1s")); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "mesh: route field not applied"); n != 1 {
		t.Fatalf("logged %d times, want once:\n%s", n, logs.String())
	}
	for _, want := range []string{"source=static", "path=services.pay.routes[1]", "never matches"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in the log:\n%s", want, logs.String())
		}
	}
	if ReportRouteWarnings(nil) != nil {
		t.Error("a nil logger gives an option")
	}
}

func mustParseRoutes(t *testing.T, y string) *route.Config {
	t.Helper()
	cfg, err := route.Parse([]byte(y), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
