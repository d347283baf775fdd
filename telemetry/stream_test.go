package telemetry_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/leaktest"
)

// ending is the way an RPC ends; the client tells the server in the
// x-end metadata.
type ending string

const (
	endOK        ending = "ok"            // the server ends it with OK
	endError     ending = "error"         // the server ends it with a status
	endCancel    ending = "cancel"        // the client cancels it mid-way
	endCloseSend ending = "closesend-eof" // the client half-closes, then reads EOF
)

var errRefused = status.Error(codes.FailedPrecondition, "refused")

// endingServer serves grpc.testing.TestService's four RPC kinds, ending
// each RPC as its x-end metadata says.
type endingServer struct {
	testgrpc.UnimplementedTestServiceServer
	arrived chan struct{} // a handler waits for the client to cancel
}

func wayOf(ctx context.Context) ending {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get("x-end"); len(v) > 0 {
		return ending(v[0])
	}
	return endOK
}

// hang waits for the client to cancel.
func (s *endingServer) hang(ctx context.Context) error {
	s.arrived <- struct{}{}
	<-ctx.Done()
	return status.FromContextError(ctx.Err()).Err()
}

// cut ends an RPC whose way is an error or a cancellation: it returns
// true and the RPC's error, or false when the RPC goes on.
func (s *endingServer) cut(ctx context.Context) (bool, error) {
	switch wayOf(ctx) {
	case endError:
		return true, errRefused
	case endCancel:
		return true, s.hang(ctx)
	}
	return false, nil
}

func (s *endingServer) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if cut, err := s.cut(ctx); cut {
		return nil, err
	}
	return &testgrpc.SimpleResponse{}, nil
}

func (s *endingServer) StreamingInputCall(st grpc.ClientStreamingServer[testgrpc.StreamingInputCallRequest, testgrpc.StreamingInputCallResponse]) error {
	if _, err := st.Recv(); err != nil {
		return err
	}
	if cut, err := s.cut(st.Context()); cut {
		return err
	}
	for {
		_, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return st.SendAndClose(&testgrpc.StreamingInputCallResponse{})
		}
		if err != nil {
			return err
		}
	}
}

func (s *endingServer) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, st grpc.ServerStreamingServer[testgrpc.StreamingOutputCallResponse]) error {
	if err := st.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
		return err
	}
	if cut, err := s.cut(st.Context()); cut {
		return err
	}
	return st.Send(&testgrpc.StreamingOutputCallResponse{})
}

func (s *endingServer) FullDuplexCall(st grpc.BidiStreamingServer[testgrpc.StreamingOutputCallRequest, testgrpc.StreamingOutputCallResponse]) error {
	way := wayOf(st.Context())
	for i := 0; ; i++ {
		_, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := st.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
			return err
		}
		if cut, err := s.cut(st.Context()); cut {
			return err
		}
		if way == endOK && i == 1 {
			return nil // the server ends the stream; the client never half-closes
		}
	}
}

// drain reads a stream to its end and returns its error, nil for EOF.
func drain(recv func() error) error {
	for {
		if err := recv(); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

// rpc makes one RPC of a kind that ends as way. It returns the RPC's
// error or, when the client ended it by cancelling, a func that uses the
// ended stream again (its error is the RPC's).
type rpc func(ctx context.Context, cancel context.CancelFunc, c testgrpc.TestServiceClient, cc *grpc.ClientConn, way ending, arrived <-chan struct{}) (func() error, error)

func unaryRPC(ctx context.Context, cancel context.CancelFunc, c testgrpc.TestServiceClient, _ *grpc.ClientConn, way ending, arrived <-chan struct{}) (func() error, error) {
	if way == endCancel {
		go func() {
			select {
			case <-arrived:
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	return nil, err
}

func clientStreamingRPC(ctx context.Context, cancel context.CancelFunc, c testgrpc.TestServiceClient, _ *grpc.ClientConn, way ending, arrived <-chan struct{}) (func() error, error) {
	st, err := c.StreamingInputCall(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(&testgrpc.StreamingInputCallRequest{}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch way {
	case endCancel:
		<-arrived
		cancel()
		return func() error { _, err := st.CloseAndRecv(); return err }, nil
	case endCloseSend:
		if err := st.CloseSend(); err != nil {
			return nil, err
		}
		if err := st.RecvMsg(new(testgrpc.StreamingInputCallResponse)); err != nil {
			return nil, err
		}
		if err := st.RecvMsg(new(testgrpc.StreamingInputCallResponse)); !errors.Is(err, io.EOF) {
			return nil, err
		}
		return nil, nil
	}
	_, err = st.CloseAndRecv() // one RecvMsg, which returns nil on success
	return nil, err
}

func serverStreamingRPC(ctx context.Context, cancel context.CancelFunc, c testgrpc.TestServiceClient, cc *grpc.ClientConn, way ending, arrived <-chan struct{}) (func() error, error) {
	var st grpc.ClientStream
	if way == endCloseSend {
		// What the generated client does, step by step.
		desc := &grpc.StreamDesc{ServerStreams: true}
		s, err := cc.NewStream(ctx, desc, testgrpc.TestService_StreamingOutputCall_FullMethodName)
		if err != nil {
			return nil, err
		}
		if err := s.SendMsg(&testgrpc.StreamingOutputCallRequest{}); err != nil {
			return nil, err
		}
		if err := s.CloseSend(); err != nil {
			return nil, err
		}
		st = s
	} else {
		s, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
		if err != nil {
			return nil, err
		}
		st = s
	}
	recv := func() error { return st.RecvMsg(new(testgrpc.StreamingOutputCallResponse)) }
	if err := recv(); err != nil {
		return nil, err
	}
	if way == endCancel {
		<-arrived
		cancel()
		return recv, nil
	}
	return nil, drain(recv)
}

func bidiStreamingRPC(ctx context.Context, cancel context.CancelFunc, c testgrpc.TestServiceClient, _ *grpc.ClientConn, way ending, arrived <-chan struct{}) (func() error, error) {
	st, err := c.FullDuplexCall(ctx)
	if err != nil {
		return nil, err
	}
	recv := func() error { _, err := st.Recv(); return err }
	for i := 0; i < 2; i++ {
		if err := st.Send(&testgrpc.StreamingOutputCallRequest{}); err != nil {
			return nil, err
		}
		if err := recv(); err != nil {
			return nil, err
		}
		switch way {
		case endCancel:
			<-arrived
			cancel()
			return recv, nil
		case endError:
			return nil, drain(recv)
		}
	}
	if way == endCloseSend {
		if err := st.CloseSend(); err != nil {
			return nil, err
		}
	}
	return nil, drain(recv)
}

// TestServerSpansEndOnce makes one RPC of every kind, ended every way,
// against a real gRPC server, and checks that the RPC's server span ends
// once and its duration is measured once. (mesh's
// TestGRPCEveryRPCEndsOnce checks the same of the client side.)
func TestServerSpansEndOnce(t *testing.T) {
	leaktest.Check(t)
	kinds := []struct {
		name, method string
		rpc          rpc
		ways         []ending
	}{
		// A unary call has no half-close: the call returns its status.
		{"unary", testgrpc.TestService_UnaryCall_FullMethodName, unaryRPC, []ending{endOK, endError, endCancel}},
		{"client-streaming", testgrpc.TestService_StreamingInputCall_FullMethodName, clientStreamingRPC, []ending{endOK, endError, endCancel, endCloseSend}},
		{"server-streaming", testgrpc.TestService_StreamingOutputCall_FullMethodName, serverStreamingRPC, []ending{endOK, endError, endCancel, endCloseSend}},
		{"bidi-streaming", testgrpc.TestService_FullDuplexCall_FullMethodName, bidiStreamingRPC, []ending{endOK, endError, endCancel, endCloseSend}},
	}
	want := map[ending]codes.Code{endOK: codes.OK, endCloseSend: codes.OK, endError: codes.FailedPrecondition, endCancel: codes.Canceled}
	for _, k := range kinds {
		for _, way := range k.ways {
			t.Run(k.name+"/"+string(way), func(t *testing.T) {
				r := newRig(t)
				srv := &endingServer{arrived: make(chan struct{}, 1)}
				gs := grpc.NewServer(grpc.ChainUnaryInterceptor(r.tel.UnaryServerInterceptor(nil)),
					grpc.ChainStreamInterceptor(r.tel.StreamServerInterceptor(nil)))
				testgrpc.RegisterTestServiceServer(gs, srv)
				addr := serveGRPC(t, gs)

				cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err != nil {
					t.Fatal(err)
				}
				defer cc.Close()

				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				ctx = metadata.AppendToOutgoingContext(ctx, "x-end", string(way))
				after, err := k.rpc(ctx, cancel, testgrpc.NewTestServiceClient(cc), cc, way, srv.arrived)
				if after == nil && status.Code(err) != want[way] {
					t.Fatalf("RPC ended with %v, want %v", err, want[way])
				}

				// Ends after cancellation happen on their own: wait for them.
				method := k.method[1:]
				deadline := time.Now().Add(20 * time.Second)
				for countSpans(r, method, trace.SpanKindServer) == 0 {
					if time.Now().After(deadline) {
						t.Fatal("the server span never ended")
					}
					time.Sleep(5 * time.Millisecond) // polling interval
				}
				if after != nil {
					// The caller uses the stream again, which reports the
					// cancellation: nothing more may end.
					if err := after(); status.Code(err) != want[way] {
						t.Fatalf("stream after cancellation: %v, want %v", err, want[way])
					}
				}

				if n := countSpans(r, method, trace.SpanKindServer); n != 1 {
					t.Errorf("%d server spans, want 1", n)
				}
				var n uint64
				for _, dp := range histogram(t, r.metric(t, "rpc.server.call.duration")) {
					if v, _ := dp.Attributes.Value("rpc.method"); v.AsString() == method {
						n += dp.Count
					}
				}
				if n != 1 {
					t.Errorf("rpc.server.call.duration count %d, want 1", n)
				}
			})
		}
	}
}

// serveGRPC serves gs on a loopback port until the test ends and
// returns its address.
func serveGRPC(t testing.TB, gs *grpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(ln) }()
	t.Cleanup(func() { gs.Stop(); <-served })
	return ln.Addr().String()
}

// countSpans counts the ended spans of method of kind.
func countSpans(r *rig, method string, kind trace.SpanKind) int {
	n := 0
	for _, s := range r.spans.Ended() {
		if s.Name() == method && s.SpanKind() == kind {
			n++
		}
	}
	return n
}
