package mesh

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
)

// grpcResServer is a real gRPC server with the demo service over mutual
// TLS on loopback, counting calls and failing them with Unavailable on
// demand.
type grpcResServer struct {
	name  string
	addr  string
	calls atomic.Int64
	fail  atomic.Bool
}

func startGRPCResServer(t *testing.T, env *testEnv, name string, opts ...ServerOption) *grpcResServer {
	t.Helper()
	s := &grpcResServer{name: name}
	gopts, err := GRPCServerOptions(append([]ServerOption{WithIdentity(env.source(testServerID))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	// Counts (and fails) every call that reaches the server, before
	// weft's own interceptors.
	gopts = append([]grpc.ServerOption{grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		s.calls.Add(1)
		if s.fail.Load() {
			return nil, status.Error(codes.Unavailable, "failing on purpose")
		}
		return h(ctx, req)
	})}, gopts...)
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, name, PeerID)
	s.addr = serveGRPC(t, gs)
	return s
}

func publishGRPC(t *testing.T, env *testEnv, service string, servers ...*grpcResServer) {
	t.Helper()
	eps := make([]discovery.Endpoint, len(servers))
	for i, s := range servers {
		eps[i] = discovery.Endpoint{ID: s.name, Addr: s.addr}
	}
	if err := env.discovery.Set(service, eps...); err != nil {
		t.Fatal(err)
	}
}

func idempotentWhoami(m string) bool { return m == demo.WhoamiMethod }

// TestGRPCRetriesAndBreakers: one of three gRPC endpoints fails with
// Unavailable; an idempotent method retried on other endpoints never
// fails. When all fail, breakers open and calls fail fast with
// ErrCircuitOpen as Unavailable.
func TestGRPCRetriesAndBreakers(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	a, b, bad := startGRPCResServer(t, env, "a"), startGRPCResServer(t, env, "b"), startGRPCResServer(t, env, "bad")
	bad.fail.Store(true)
	publishGRPC(t, env, "g", a, bad, b)
	c := env.client(
		WithRetry(RetryPolicy{Backoff: time.Millisecond, IdempotentMethod: idempotentWhoami}),
		WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 3, OpenTimeout: time.Minute}),
	)
	cc, err := c.DialGRPC("g")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	// Until the channel has ready connections, the first calls are picked
	// by gRPC's own picker (weft's, without pinning); once the good
	// endpoints are ready, no call may fail.
	poll(t, "the good endpoints ready", func() bool {
		demo.Whoami(ctx, cc)
		return a.calls.Load() > 0 && b.calls.Load() > 0
	})
	for i := 0; i < 300; i++ {
		answer, err := demo.Whoami(ctx, cc)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if strings.HasPrefix(answer, "bad ") {
			t.Fatalf("call %d answered by the failing endpoint", i)
		}
	}
	t.Logf("300 idempotent gRPC calls, no failure; failing endpoint saw %d, others %d and %d", bad.calls.Load(), a.calls.Load(), b.calls.Load())
	if n := bad.calls.Load(); n > 10 {
		t.Fatalf("failing endpoint saw %d calls after its breaker should have opened", n)
	}

	// A method not marked idempotent is not retried.
	a.fail.Store(true)
	b.fail.Store(true)
	nc, err := env.client(WithRetry(RetryPolicy{Backoff: time.Millisecond})).DialGRPC("g")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	demo.Whoami(ctx, nc) // connect
	before := bad.calls.Load() + a.calls.Load() + b.calls.Load()
	if _, err = demo.Whoami(ctx, nc); status.Code(err) != codes.Unavailable {
		t.Fatalf("non-idempotent call: %v", err)
	}
	if n := bad.calls.Load() + a.calls.Load() + b.calls.Load() - before; n != 1 {
		t.Fatalf("non-idempotent call made %d attempts", n)
	}

	// Every endpoint fails: breakers open, then calls fail fast.
	for i := 0; i < 20; i++ {
		demo.Whoami(ctx, cc)
	}
	total := bad.calls.Load() + a.calls.Load() + b.calls.Load()
	start := time.Now()
	_, err = demo.Whoami(ctx, cc)
	took := time.Since(start)
	if !errors.Is(err, ErrCircuitOpen) || status.Code(err) != codes.Unavailable {
		t.Fatalf("all breakers open: %v (code %v)", err, status.Code(err))
	}
	if n := bad.calls.Load() + a.calls.Load() + b.calls.Load(); n != total {
		t.Fatalf("%d calls reached servers with every breaker open", n-total)
	}
	t.Logf("gRPC fail fast with every breaker open: %v", took)
}

// TestGRPCRouteRateLimit: exactly the burst passes, then ResourceExhausted
// with the retry pushback trailer; a retrying client honours the pushback
// and gives up when it is beyond the deadline.
func TestGRPCRouteRateLimit(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	t0 := time.Unix(1_700_000_000, 0)
	s := startGRPCResServer(t, env, "limited",
		WithClock(nowClock(func() time.Time { return t0 })),
		WithRouteRateLimit(demo.WhoamiMethod, breaker.RateLimit{PerSecond: 2, Burst: 3}))
	publishGRPC(t, env, "g", s)
	c := env.client()
	cc, err := c.DialGRPC("g")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	for i := 0; i < 3; i++ {
		if _, err := demo.Whoami(ctx, cc); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	var trailer metadata.MD
	_, err = demo.Whoami(ctx, cc, grpc.Trailer(&trailer))
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("call over the burst: %v", err)
	}
	if v := trailer.Get(RetryPushbackKey); len(v) != 1 || v[0] != "500" {
		t.Fatalf("pushback trailer %v, want 500", v)
	}

	// A retrying client waits out the pushback when the deadline allows
	// it; the fake server clock never moves, so the retry is refused too
	// and the error comes back after the pushback.
	rc := env.client(WithRetry(RetryPolicy{MaxAttempts: 2, Backoff: time.Millisecond, IdempotentMethod: idempotentWhoami}))
	rcc, err := rc.DialGRPC("g")
	if err != nil {
		t.Fatal(err)
	}
	defer rcc.Close()
	calls := s.calls.Load()
	start := time.Now()
	_, err = demo.Whoami(ctx, rcc)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("retried call: %v", err)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Fatalf("retry came %v after the first attempt, before the 500 ms pushback", took)
	}
	if n := s.calls.Load() - calls; n != 2 {
		t.Fatalf("%d attempts, want 2", n)
	}
	// With less time left than the pushback, no retry.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	calls = s.calls.Load()
	_, err = demo.Whoami(short, rcc)
	if status.Code(err) != codes.ResourceExhausted || s.calls.Load()-calls != 1 {
		t.Fatalf("short deadline: %v after %d attempts, want ResourceExhausted after 1", err, s.calls.Load()-calls)
	}
}

// TestGRPCShedding: sheddable gRPC calls are refused with Unavailable
// when the server is at the sheddable part of its limit; critical calls
// (metadata weft-priority: critical) still get through.
func TestGRPCShedding(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	release := make(chan struct{})
	entered := make(chan struct{}, 8)
	gopts, err := GRPCServerOptions(WithIdentity(env.source(testServerID)),
		WithConcurrencyLimit(breaker.ConcurrencySettings{Limit: 4, CriticalReserve: 0.5, CriticalWait: -1}),
		WithTrustedPriority(tlsid.AuthorizeID(testClientID)))
	if err != nil {
		t.Fatal(err)
	}
	gopts = append(gopts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("block")) > 0 {
			entered <- struct{}{}
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return h(ctx, req)
	}))
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, "busy", PeerID)
	if err := env.discovery.Set("busy", discovery.Endpoint{ID: "busy", Addr: serveGRPC(t, gs)}); err != nil {
		t.Fatal(err)
	}
	cc, err := env.client().DialGRPC("busy")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	errs := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, err := demo.Whoami(metadata.AppendToOutgoingContext(ctx, "block", strconv.Itoa(i)), cc)
			errs <- err
		}()
	}
	<-entered
	<-entered
	_, err = demo.Whoami(ctx, cc)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("sheddable call at the limit: %v, want Unavailable", err)
	}
	if _, err := demo.Whoami(metadata.AppendToOutgoingContext(ctx, PriorityMetadataKey, "critical"), cc); err != nil {
		t.Fatalf("critical call: %v", err)
	}
	close(release)
	for i := 0; i < 2; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestGRPCHedging: against a gRPC endpoint that stalls, a hedged call of
// an idempotent method is answered by the other endpoint after the hedge
// delay, and the stalled attempt is cancelled (the server sees it).
func TestGRPCHedging(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	var entered, cancelled atomic.Int64
	fast := startGRPCResServer(t, env, "fast")
	// The stalling server waits for each call to be cancelled.
	stall := &grpcResServer{name: "stall"}
	gopts, err := GRPCServerOptions(WithIdentity(env.source(testServerID)))
	if err != nil {
		t.Fatal(err)
	}
	gopts = append(gopts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		entered.Add(1)
		<-ctx.Done()
		cancelled.Add(1)
		return nil, status.FromContextError(ctx.Err()).Err()
	}))
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, "stall", PeerID)
	stall.addr = serveGRPC(t, gs)
	publishGRPC(t, env, "h", stall, fast)

	const delay = 50 * time.Millisecond
	c := env.client(
		WithIdempotent(func(_, route string) bool { return idempotentWhoami(route) }),
		WithHedging(HedgePolicy{Delay: delay}),
	)
	cc, err := c.DialGRPC("h")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	// Connect to both endpoints first: once both are ready, every call
	// is pinned by weft and hedged.
	poll(t, "both endpoints ready", func() bool {
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		demo.Whoami(wctx, cc)
		return fast.calls.Load() > 0 && entered.Load() > 0
	})
	poll(t, "warm-up calls cancelled", func() bool { return cancelled.Load() == entered.Load() })
	warm := entered.Load()
	for i := 0; i < 6; i++ {
		start := time.Now()
		answer, err := demo.Whoami(ctx, cc)
		took := time.Since(start)
		if err != nil || !strings.HasPrefix(answer, "fast ") {
			t.Fatalf("hedged call %d: %q %v", i, answer, err)
		}
		if took > delay+2*time.Second {
			t.Fatalf("hedged call %d took %v", i, took)
		}
	}
	if entered.Load()-warm < 2 {
		t.Fatalf("only %d calls reached the stalling endpoint", entered.Load()-warm)
	}
	poll(t, "every stalled attempt cancelled", func() bool { return cancelled.Load() == entered.Load() })
	t.Logf("gRPC hedging: %d attempts stalled and were cancelled; 6 calls answered by the fast endpoint", entered.Load()-warm)
}
