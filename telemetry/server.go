package telemetry

import (
	"context"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
)

// PeerFunc returns the verified SPIFFE ID of the caller of a request,
// given its context (mesh.PeerID is one), or an error when there is none.
type PeerFunc func(context.Context) (spiffeid.ID, error)

// Handler returns h wrapped in a server span and the
// http.server.request.duration metric. The span continues the trace
// context the request carries (a malformed one is ignored and a new
// trace starts), is named "{method} {route}" once the route is known, and
// carries the caller's SPIFFE ID as peer finds it (nil peer: none).
//
// Requests reaching h over mutual TLS passed authorization at the
// handshake, so their spans say weft.authorization.decision=allow.
// A nil t returns h itself.
func (t *Telemetry) Handler(h http.Handler, peer PeerFunc) http.Handler {
	return t.recorder().Handler(h, peer)
}

// UnaryServerInterceptor returns the gRPC server interceptor that records
// each unary call as a server span and in rpc.server.call.duration, with
// the caller's SPIFFE ID as peer finds it (nil peer: none). A nil t
// returns nil, which mesh leaves out of the server options.
func (t *Telemetry) UnaryServerInterceptor(peer PeerFunc) grpc.UnaryServerInterceptor {
	return t.recorder().UnaryServerInterceptor(peer)
}

// StreamServerInterceptor is [Telemetry.UnaryServerInterceptor] for
// streaming calls: the span covers the whole stream.
func (t *Telemetry) StreamServerInterceptor(peer PeerFunc) grpc.StreamServerInterceptor {
	return t.recorder().StreamServerInterceptor(peer)
}
