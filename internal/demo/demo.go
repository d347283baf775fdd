// Package demo is the small service the examples and benchmarks run: an
// HTTP handler and a gRPC method that both answer with the name of the
// instance that served the call and the SPIFFE ID of its caller.
//
// The gRPC service is described by hand (no generated code) with
// well-known wrapper messages: /weft.demo.v1.Demo/Whoami takes a
// StringValue and returns a StringValue.
package demo

import (
	"context"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// WhoamiMethod is the full name of the demo gRPC method.
const WhoamiMethod = "/weft.demo.v1.Demo/Whoami"

// PeerFunc returns the SPIFFE ID of the caller of a request, given its
// context; mesh.PeerID is one.
type PeerFunc func(context.Context) (spiffeid.ID, error)

// Answer formats what an instance answers: its name and its caller's ID,
// as peer finds it ("anonymous" when it finds none or peer is nil).
func Answer(ctx context.Context, instance string, peer PeerFunc) string {
	caller := "anonymous"
	if peer != nil {
		if id, err := peer(ctx); err == nil {
			caller = id.String()
		}
	}
	return instance + " saw " + caller
}

// Handler returns the HTTP side of instance: every request is answered
// with [Answer].
func Handler(instance string, peer PeerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprint(w, Answer(r.Context(), instance, peer))
	})
}

// Register adds the demo gRPC service of instance to s: every call is
// answered with [Answer].
func Register(s *grpc.Server, instance string, peer PeerFunc) {
	RegisterFunc(s, func(ctx context.Context) (string, error) {
		return Answer(ctx, instance, peer), nil
	})
}

// RegisterFunc adds the demo gRPC service to s with answer as the body of
// its method, through the server's interceptors.
func RegisterFunc(s *grpc.Server, answer func(context.Context) (string, error)) {
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: "weft.demo.v1.Demo",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Whoami",
			Handler: func(_ any, ctx context.Context, dec func(any) error, intercept grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				handle := func(ctx context.Context, _ any) (any, error) {
					out, err := answer(ctx)
					if err != nil {
						return nil, err
					}
					return wrapperspb.String(out), nil
				}
				if intercept == nil {
					return handle(ctx, in)
				}
				return intercept(ctx, in, &grpc.UnaryServerInfo{Server: struct{}{}, FullMethod: WhoamiMethod}, handle)
			},
		}},
	}, struct{}{})
}

// Whoami calls the demo gRPC method over cc.
func Whoami(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (string, error) {
	out := new(wrapperspb.StringValue)
	if err := cc.Invoke(ctx, WhoamiMethod, wrapperspb.String("whoami"), out, opts...); err != nil {
		return "", err
	}
	return out.GetValue(), nil
}
