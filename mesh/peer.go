package mesh

import (
	"context"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/weftmesh/weft/tlsid"
)

// PeerID returns the verified SPIFFE ID of the caller, given the context
// of a request served by a [Server] (r.Context()) or of a gRPC method
// served with [GRPCServerOptions]. It returns [tlsid.ErrNoPeerID] when the
// call did not come over mutual TLS.
func PeerID(ctx context.Context) (spiffeid.ID, error) {
	if p, ok := ctx.Value(peerKey{}).(*connPeer); ok {
		return p.get()
	}
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
			return tlsid.PeerID(&info.State)
		}
	}
	return spiffeid.ID{}, tlsid.ErrNoPeerID
}
