package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/tlsid"
)

// Secure naming: a client checks that the server of each endpoint
// presents the SPIFFE ID discovery expects of it
// ([discovery.Endpoint.Identity]), on every connection, HTTP and gRPC
// alike, after the TLS handshake and before a byte of a request is sent.

// ErrUnexpectedPeer is returned (wrapped) by a call whose endpoint's
// server presented another SPIFFE ID than the one discovery expects of
// that endpoint. Nothing of the request was sent.
var ErrUnexpectedPeer = errors.New("mesh: server presented an unexpected identity")

// ErrNoExpectedIdentity is returned (wrapped) by a call of a client built
// with [WithRequiredIdentities] to an endpoint for which discovery gives
// no expected identity. Nothing was sent.
var ErrNoExpectedIdentity = errors.New("mesh: endpoint has no expected identity")

// WithRequiredIdentities makes a client refuse to connect to an endpoint
// for which discovery gives no expected identity
// ([discovery.Endpoint.Identity]), failing with [ErrNoExpectedIdentity],
// instead of accepting any server its authorizer admits. It needs
// [WithIdentity].
func WithRequiredIdentities() ClientOption {
	return clientOptionFunc(func(c *clientConfig) { c.requireIdentities = true })
}

// naming is the secure naming of one destination service: the expected
// identity of each endpoint address, and the checks of connections to
// them. It is safe for concurrent use.
type naming struct {
	service  string
	required bool
	logger   *slog.Logger
	warned   atomic.Bool
	byAddr   atomic.Pointer[map[string]spiffeid.ID]
}

func newNaming(service string, required bool, logger *slog.Logger) *naming {
	n := &naming{service: service, required: required, logger: logger}
	n.byAddr.Store(&map[string]spiffeid.ID{})
	return n
}

// update takes in the endpoints of a discovery update. It reports
// whether the expected identity of an address changed: connections
// verified against the old one must not be reused. The first time some
// endpoint has no expected identity (and none is required), it logs that
// the service's servers are verified by the authorizer alone.
func (n *naming) update(eps []discovery.Endpoint) (changed bool) {
	m := make(map[string]spiffeid.ID, len(eps))
	missing := false
	old := *n.byAddr.Load()
	for _, e := range eps {
		m[e.Addr] = e.Identity
		missing = missing || e.Identity.IsZero()
		if id, ok := old[e.Addr]; ok && id != e.Identity {
			changed = true
		}
	}
	n.byAddr.Store(&m)
	if missing && !n.required && n.warned.CompareAndSwap(false, true) {
		n.logger.Warn("mesh: discovery gives no expected identity for some endpoints; their servers are verified by trust domain (the authorizer) only",
			slog.String("service", n.service))
	}
	return changed
}

// allowed reports whether a connection to the endpoint at addr, whose
// server must present expected (zero: unknown), may be made at all: not
// without an expected identity when one is required.
func (n *naming) allowed(network, addr string, expected spiffeid.ID) error {
	if expected.IsZero() && n.required {
		return dialError(network, addr, fmt.Errorf("%w: %q endpoint %s", ErrNoExpectedIdentity, n.service, addr))
	}
	return nil
}

// verify is the secure naming check of a connection to the endpoint at
// addr whose server must present expected (zero: unknown, the
// authorizer's check stands alone): state is the connection's TLS state.
// Errors are dial errors: nothing of a request was sent.
func (n *naming) verify(network, addr string, expected spiffeid.ID, state *tls.ConnectionState) error {
	if expected.IsZero() {
		return n.allowed(network, addr, expected)
	}
	got, err := tlsid.PeerID(state)
	switch {
	case err != nil:
		return dialError(network, addr, fmt.Errorf("%w: %q endpoint %s: %w", ErrUnexpectedPeer, n.service, addr, err))
	case got != expected:
		return dialError(network, addr, fmt.Errorf("%w: %q endpoint %s presented %s, want %s", ErrUnexpectedPeer, n.service, addr, got, expected))
	}
	return nil
}

// dialError is err as an error of connecting to addr.
func dialError(network, addr string, err error) error {
	return &net.OpError{Op: "dial", Net: network, Addr: opAddr(addr), Err: err}
}

// opAddr is addr as the address of a [net.OpError].
type opAddr string

func (a opAddr) Network() string { return "tcp" }
func (a opAddr) String() string  { return string(a) }

// tlsHandshakeTimeout bounds a client's TLS handshakes.
const tlsHandshakeTimeout = 10 * time.Second

// dialTLS returns the DialTLSContext of a cluster's HTTP transport: a TLS
// connection with cfg over a connection of dial, checked against the
// expected identity of the endpoint at addr.
func (n *naming) dialTLS(cfg *tls.Config, dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		expected := (*n.byAddr.Load())[addr]
		if err := n.allowed(network, addr, expected); err != nil {
			return nil, err
		}
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conn := tls.Client(raw, cfg)
		hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
		defer cancel()
		if err := conn.HandshakeContext(hctx); err != nil {
			_ = raw.Close()
			return nil, &calltel.HandshakeError{Err: err}
		}
		state := conn.ConnectionState()
		if err := n.verify(network, addr, expected, &state); err != nil {
			_ = conn.Close()
			return nil, err
		}
		return conn, nil
	}
}

// expectedIdentityKey is the attribute of a gRPC resolver address that
// holds the endpoint's expected identity.
type expectedIdentityKey struct{}

// expectedIdentity returns the attributes of the gRPC address of e: its
// expected identity, nil when it has none.
func expectedIdentity(e *discovery.Endpoint) *attributes.Attributes {
	if e.Identity.IsZero() {
		return nil
	}
	return attributes.New(expectedIdentityKey{}, e.Identity)
}

// grpcCredentials wraps the transport credentials of a gRPC connection
// with n's check: grpc-go hands each handshake the attributes of the
// address it dials.
func (n *naming) grpcCredentials(c credentials.TransportCredentials) credentials.TransportCredentials {
	return &namedCredentials{TransportCredentials: c, n: n}
}

type namedCredentials struct {
	credentials.TransportCredentials
	n *naming
}

func (c *namedCredentials) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	expected, _ := credentials.ClientHandshakeInfoFromContext(ctx).Attributes.Value(expectedIdentityKey{}).(spiffeid.ID)
	addr := raw.RemoteAddr().String()
	if err := c.n.allowed("tcp", addr, expected); err != nil {
		return nil, nil, err
	}
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		return nil, nil, err
	}
	var state *tls.ConnectionState
	if ti, ok := info.(credentials.TLSInfo); ok {
		state = &ti.State
	}
	if err := c.n.verify("tcp", addr, expected, state); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return conn, info, nil
}

func (c *namedCredentials) Clone() credentials.TransportCredentials {
	return &namedCredentials{TransportCredentials: c.TransportCredentials.Clone(), n: c.n}
}
