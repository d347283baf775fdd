package mesh

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
)

// streamService serves every kind of RPC of grpc-go's test service. The
// "mode" metadata of a call says how it ends: "ok", "fail" (an
// InvalidArgument status after the first request), or "block" (until
// the caller gives up).
type streamService struct {
	testgrpc.UnimplementedTestServiceServer
	name     string
	finished atomic.Int64  // handlers returned
	blocked  chan struct{} // when set, signalled as a unary call starts blocking
}

func mode(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("mode"); len(v) > 0 {
		return v[0]
	}
	return "ok"
}

var errOnPurpose = status.Error(codes.InvalidArgument, "failing on purpose")

func (s *streamService) end(ctx context.Context) error {
	switch mode(ctx) {
	case "fail":
		return errOnPurpose
	case "block":
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return nil
}

func (s *streamService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	defer s.finished.Add(1)
	if s.blocked != nil && mode(ctx) == "block" {
		select {
		case s.blocked <- struct{}{}:
		case <-ctx.Done():
		}
	}
	if err := s.end(ctx); err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{Username: s.name}, nil
}

func (s *streamService) StreamingInputCall(stream testgrpc.TestService_StreamingInputCallServer) error {
	defer s.finished.Add(1)
	n := 0
	for {
		in, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&testgrpc.StreamingInputCallResponse{AggregatedPayloadSize: int32(n)})
		}
		if err != nil {
			return err
		}
		n += len(in.GetPayload().GetBody())
		if err := s.end(stream.Context()); err != nil {
			return err
		}
	}
}

func (s *streamService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	defer s.finished.Add(1)
	if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
		return err
	}
	if err := s.end(stream.Context()); err != nil {
		return err
	}
	return stream.Send(&testgrpc.StreamingOutputCallResponse{})
}

func (s *streamService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	defer s.finished.Add(1)
	for {
		_, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
			return err
		}
		if err := s.end(stream.Context()); err != nil {
			return err
		}
	}
}

// rpcEnding is one way an RPC of one kind is made and ends.
type rpcEnding struct {
	kind, mode string
	method     string
	run        func(ctx context.Context, tc testgrpc.TestServiceClient, cancel context.CancelFunc) error
}

func payload() *testgrpc.Payload { return &testgrpc.Payload{Body: []byte("x")} }

// rpcEndings makes every kind of RPC end in every way: success, an error
// status, a cancellation by the caller, and CloseSend followed by EOF.
func rpcEndings(server *streamService) []rpcEnding {
	unary := func(ctx context.Context, tc testgrpc.TestServiceClient, cancel context.CancelFunc) error {
		if mode(metadataOf(ctx)) == "block" {
			go cancelWhenBlocked(ctx, server, cancel)
		}
		_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return err
	}
	clientStreaming := func(ctx context.Context, tc testgrpc.TestServiceClient, cancel context.CancelFunc) error {
		s, err := tc.StreamingInputCall(ctx)
		if err != nil {
			return err
		}
		for range 3 {
			if err := s.Send(&testgrpc.StreamingInputCallRequest{Payload: payload()}); err != nil {
				break // the status comes with CloseAndRecv
			}
		}
		if mode(metadataOf(ctx)) == "block" {
			cancel()
		}
		_, err = s.CloseAndRecv()
		return err
	}
	serverStreaming := func(ctx context.Context, tc testgrpc.TestServiceClient, cancel context.CancelFunc) error {
		s, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
		if err != nil {
			return err
		}
		if _, err := s.Recv(); err != nil {
			return err
		}
		if mode(metadataOf(ctx)) == "block" {
			cancel() // the caller gives up after the first response
			return nil
		}
		for {
			if _, err := s.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	bidi := func(ctx context.Context, tc testgrpc.TestServiceClient, cancel context.CancelFunc) error {
		s, err := tc.FullDuplexCall(ctx)
		if err != nil {
			return err
		}
		if err := s.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil {
			return err
		}
		if _, err := s.Recv(); err != nil {
			return err
		}
		if mode(metadataOf(ctx)) == "block" {
			cancel()
			return nil
		}
		if err := s.CloseSend(); err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	const svc = "/grpc.testing.TestService/"
	var out []rpcEnding
	for _, k := range []struct {
		kind, method string
		run          func(context.Context, testgrpc.TestServiceClient, context.CancelFunc) error
	}{
		{"unary", svc + "UnaryCall", unary},
		{"client-streaming", svc + "StreamingInputCall", clientStreaming},
		{"server-streaming", svc + "StreamingOutputCall", serverStreaming},
		{"bidi-streaming", svc + "FullDuplexCall", bidi},
	} {
		for _, m := range []string{"ok", "fail", "block"} {
			out = append(out, rpcEnding{kind: k.kind, mode: m, method: k.method, run: k.run})
		}
	}
	return out
}

// metadataOf returns the outgoing metadata of ctx as incoming, for mode.
func metadataOf(ctx context.Context) context.Context {
	md, _ := metadata.FromOutgoingContext(ctx)
	return metadata.NewIncomingContext(ctx, md)
}

// cancelWhenBlocked cancels a unary call once its handler has started
// blocking: the scenario is a caller that gives up on a call in flight.
func cancelWhenBlocked(ctx context.Context, svc *streamService, cancel context.CancelFunc) {
	select {
	case <-svc.blocked:
	case <-ctx.Done():
	}
	cancel()
}

// TestGRPCEveryRPCEndsOnce: unary, client-, server- and bidi-streaming
// calls, each ending in success, an error, a cancellation (and, for
// bidi, CloseSend then EOF), end their client span exactly once and give
// their endpoint back to the balancer exactly once.
func TestGRPCEveryRPCEndsOnce(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	svc := &streamService{name: "s1", blocked: make(chan struct{}, 1)}
	r.serveGRPC("streams", telBID, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, svc) })
	c := r.client(telClientID, WithCircuitBreaker(breaker.Settings{}))
	tc := testgrpc.NewTestServiceClient(dial(t, c, "streams"))
	for _, e := range rpcEndings(svc) {
		t.Run(e.kind+"/"+e.mode, func(t *testing.T) {
			r.spans.Reset()
			before := svc.finished.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ctx = metadata.AppendToOutgoingContext(ctx, "mode", e.mode)
			err := e.run(ctx, tc, cancel)
			switch e.mode {
			case "ok":
				if err != nil {
					t.Fatalf("call: %v", err)
				}
			case "fail":
				if status.Code(err) != codes.InvalidArgument {
					t.Fatalf("call: %v, want InvalidArgument", err)
				}
			}
			name := strings.TrimPrefix(e.method, "/")
			pollUntil(t, 20*time.Second, "the call's client span ended", func() bool {
				return countClientSpans(r, name) >= 1 && svc.finished.Load() > before
			})
			ep := c.clusterEndpoints(t, "streams")
			pollUntil(t, 20*time.Second, "the endpoint given back", func() bool { return ep.Load.InFlight() == 0 })
			if n := countClientSpans(r, name); n != 1 {
				t.Fatalf("%d client spans ended, want 1", n)
			}
		})
	}
}

// countClientSpans counts the ended client spans named name.
func countClientSpans(r *telRig, name string) int {
	n := 0
	for _, s := range r.spans.Ended() {
		if s.Name() == name && s.SpanKind() == trace.SpanKindClient {
			n++
		}
	}
	return n
}

// clusterEndpoints returns the one endpoint of service's balancer.
func (c *Client) clusterEndpoints(t *testing.T, service string) *balancer.Endpoint {
	t.Helper()
	cl, err := c.cluster(service)
	if err != nil {
		t.Fatal(err)
	}
	eps := cl.balancer.Endpoints()
	if len(eps) != 1 {
		t.Fatalf("%d endpoints", len(eps))
	}
	return eps[0]
}

// TestGRPCStreamsRefusedLikeUnary: the client rate limit and open
// breakers refuse streams as they refuse unary calls, without I/O.
func TestGRPCStreamsRefusedLikeUnary(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	svc := &streamService{name: "s1"}
	r.serveGRPC("limited", telBID, func(s *grpc.Server) { testgrpc.RegisterTestServiceServer(s, svc) })
	c := r.client(telClientID, WithRateLimit(func(string) *ClientRateLimit {
		return &ClientRateLimit{RateLimit: breaker.RateLimit{PerSecond: 0.001, Burst: 2}}
	}))
	tc := testgrpc.NewTestServiceClient(dial(t, c, "limited"))
	ctx := testContext(t, 20*time.Second)
	if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	s, err := tc.FullDuplexCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("second call, a stream: %v", err)
	}
	served := svc.finished.Load()
	for i := 0; i < 4; i++ {
		_, err := tc.StreamingInputCall(ctx)
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("stream %d past the burst: %v, want ResourceExhausted", i, err)
		}
		if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}); status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("unary call %d past the burst: %v, want ResourceExhausted", i, err)
		}
	}
	if svc.finished.Load() != served {
		t.Fatal("a refused call reached the server")
	}

	// Breakers: one failure opens every endpoint's breaker; then streams
	// fail fast, as unary calls do.
	c2 := r.client(telClientID, WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 1, OpenTimeout: time.Hour}))
	tc2 := testgrpc.NewTestServiceClient(dial(t, c2, "limited"))
	if _, err := tc2.UnaryCall(ctx, &testgrpc.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	// A failure of the endpoint, as the breaker counts it.
	br := c2.Breakers("limited")
	br.Get("limited-1").Record(breaker.Failure)
	if !br.Open("limited-1") {
		t.Fatal("breaker not open after a failure")
	}
	served = svc.finished.Load()
	if _, err := tc2.StreamingInputCall(ctx); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "circuit") {
		t.Fatalf("stream with every breaker open: %v, want Unavailable (circuit open)", err)
	}
	if _, err := tc2.UnaryCall(ctx, &testgrpc.SimpleRequest{}); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "circuit") {
		t.Fatalf("unary call with every breaker open: %v", err)
	}
	if svc.finished.Load() != served {
		t.Fatal("a call reached the server with every breaker open")
	}
}

// TestGRPCHedgeKeepsWinnersMetadata: the header, trailer and peer a
// hedged call gives its caller are the winner's, and stay so after the
// losing attempt has ended.
func TestGRPCHedgeKeepsWinnersMetadata(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	var slowEntered, slowDone atomic.Int64
	answer := func(name string, slow bool) func(context.Context) (string, error) {
		return func(ctx context.Context) (string, error) {
			_ = grpc.SetHeader(ctx, metadata.Pairs("instance", name))
			_ = grpc.SetTrailer(ctx, metadata.Pairs("instance-trailer", name))
			if slow {
				slowEntered.Add(1)
				defer slowDone.Add(1)
				<-ctx.Done() // the slow instance answers only when cancelled
				return "", status.FromContextError(ctx.Err()).Err()
			}
			return name, nil
		}
	}
	fast := startDemoGRPC(t, env, "fast", answer("fast", false))
	slow := startDemoGRPC(t, env, "slow", answer("slow", true))
	if err := env.discovery.Set("hedged", discovery.Endpoint{ID: "slow", Addr: slow}, discovery.Endpoint{ID: "fast", Addr: fast}); err != nil {
		t.Fatal(err)
	}
	c := env.client(
		WithIdempotent(func(_, route string) bool { return route == demo.WhoamiMethod }),
		WithHedging(HedgePolicy{Delay: time.Millisecond}),
	)
	cc, err := c.DialGRPC("hedged")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 30*time.Second)
	// Both endpoints must have a ready connection for the first attempts
	// to go to the slow one: call until one has.
	pollUntil(t, 20*time.Second, "a call on the slow endpoint", func() bool {
		wctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		_, _ = demo.Whoami(wctx, cc)
		return slowEntered.Load() > 0
	})
	pollUntil(t, 20*time.Second, "the warm-up attempts ended", func() bool { return slowDone.Load() == slowEntered.Load() })
	hedges := 0
	for i := 0; i < 30; i++ {
		var header, trailer metadata.MD
		var p peer.Peer
		entered := slowEntered.Load()
		got, err := demo.Whoami(ctx, cc, grpc.Header(&header), grpc.Trailer(&trailer), grpc.Peer(&p))
		if err != nil || got != "fast" {
			t.Fatalf("call %d: %q %v", i, got, err)
		}
		if slowEntered.Load() == entered {
			continue // the first attempt went to the fast instance: no hedge
		}
		hedges++
		// Wait for the losing attempt to end: nothing it received may
		// reach the caller's variables.
		pollUntil(t, 20*time.Second, "the losing attempt ended", func() bool { return slowDone.Load() == slowEntered.Load() })
		if h, tr := header.Get("instance"), trailer.Get("instance-trailer"); len(h) != 1 || h[0] != "fast" || len(tr) != 1 || tr[0] != "fast" {
			t.Fatalf("call %d: header %v trailer %v, want the fast instance's", i, header, trailer)
		}
		if p.Addr == nil || p.Addr.String() != fast {
			t.Fatalf("call %d: peer %v, want %s", i, p.Addr, fast)
		}
	}
	if hedges < 5 {
		t.Fatalf("only %d of 30 calls were hedged", hedges)
	}
}

// startDemoGRPC serves the demo method with answer on a weft gRPC server
// over mutual TLS and returns its address.
func startDemoGRPC(t *testing.T, env *testEnv, name string, answer func(context.Context) (string, error)) string {
	t.Helper()
	gopts, err := GRPCServerOptions(WithIdentity(env.source(testServerID)))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(gopts...)
	demo.RegisterFunc(gs, answer)
	return serveGRPC(t, gs)
}

// TestDialGRPCKeepsBalancingWithUserServiceConfig: a default service
// config of the caller's (per-method timeouts) does not turn weft's
// balancing off: calls still spread over every instance.
func TestDialGRPCKeepsBalancingWithUserServiceConfig(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 3)
	c := env.client()
	cc, err := c.DialGRPC("demo-grpc", grpc.WithDefaultServiceConfig(`{"methodConfig":[{"name":[{"service":"weft.demo.v1.Demo"}],"timeout":"5s"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 30*time.Second)
	seen := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(seen) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %v answered", seen)
		}
		answer, err := demo.Whoami(ctx, cc)
		if err != nil {
			t.Fatal(err)
		}
		seen[strings.Fields(answer)[0]] = true
	}
}

// TestEmptyEndpointSetHTTPAndGRPC: when discovery empties a service's
// endpoint set, HTTP and gRPC calls both fail at once with
// ErrNoEndpoints, and both recover when endpoints come back.
func TestEmptyEndpointSetHTTPAndGRPC(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 2)
	c := env.client()
	hc := c.HTTPClient()
	cc, err := c.DialGRPC("demo-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 30*time.Second)
	if _, err := demo.Whoami(ctx, cc); err != nil {
		t.Fatal(err)
	}
	if code, _, err := call(t, hc, "GET", "http://demo/", "", nil); err != nil || code != 200 {
		t.Fatalf("HTTP: %d %v", code, err)
	}
	if err := env.discovery.Set("demo"); err != nil {
		t.Fatal(err)
	}
	if err := env.discovery.Set("demo-grpc"); err != nil {
		t.Fatal(err)
	}
	// Discovery hands the empty sets over asynchronously.
	var herr, gerr error
	pollUntil(t, 20*time.Second, "the empty sets seen", func() bool {
		var resp *http.Response
		if resp, herr = hc.Get("http://demo/"); herr == nil {
			resp.Body.Close()
		}
		_, gerr = demo.Whoami(ctx, cc)
		return herr != nil && gerr != nil
	})
	if !errors.Is(herr, balancer.ErrNoEndpoints) {
		t.Fatalf("HTTP with no endpoints: %v, want ErrNoEndpoints", herr)
	}
	if status.Code(gerr) != codes.Unavailable || !strings.Contains(gerr.Error(), balancer.ErrNoEndpoints.Error()) {
		t.Fatalf("gRPC with no endpoints: %v, want Unavailable with %q", gerr, balancer.ErrNoEndpoints)
	}
	env.publish(env.instances...)
	pollUntil(t, 20*time.Second, "calls answered again", func() bool {
		_, gerr := demo.Whoami(ctx, cc)
		resp, herr := hc.Get("http://demo/")
		if herr == nil {
			resp.Body.Close()
		}
		return gerr == nil && herr == nil
	})
}
