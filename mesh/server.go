package mesh

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// DefaultMaxConcurrentStreams bounds the streams one HTTP/2 or gRPC
// connection may have open at once on a weft server, which also bounds
// rapid-reset floods.
const DefaultMaxConcurrentStreams = 250

// Server serves an [http.Handler] inside the mesh: over mutual TLS 1.3
// when an identity is configured, with the verified peer SPIFFE ID made
// available to the handler through [PeerID].
//
// The zero value is not usable; build one with [NewServer].
type Server struct {
	cfg  serverConfig
	http *http.Server
}

// NewServer returns a server for h configured by opts.
func NewServer(h http.Handler, opts ...ServerOption) (*Server, error) {
	if h == nil {
		return nil, errors.New("mesh: new server: nil handler")
	}
	cfg, err := newServerConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("mesh: new server: %w", err)
	}
	s := &Server{cfg: cfg}
	s.http = &http.Server{
		ErrorLog: serverErrorLog(cfg.logger),
		HTTP2:    &http.HTTP2Config{MaxConcurrentStreams: DefaultMaxConcurrentStreams},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if tc, ok := c.(*tls.Conn); ok {
				return context.WithValue(ctx, peerKey{}, &connPeer{conn: tc})
			}
			return ctx
		},
	}
	// The path is normalized first, then the body idle timeout covers
	// every step that may hold a slot.
	s.http.Handler = normalizeHandler(applyTimeouts(s.http, cfg.telemetry.Handler(accessHandler(protectHandler(h, &cfg), &cfg), PeerID), cfg.timeouts))
	if cfg.identity != nil {
		tlsConfig, err := tlsid.ServerConfig(cfg.identity, cfg.authorize)
		if err != nil {
			return nil, fmt.Errorf("mesh: new server: %w", err)
		}
		s.http.TLSConfig = tlsConfig
	}
	return s, nil
}

func newServerConfig(opts []ServerOption) (serverConfig, error) {
	var cfg serverConfig
	for _, o := range opts {
		if o != nil {
			o.applyServer(&cfg)
		}
	}
	if cfg.logger == nil {
		cfg.logger = slog.New(slog.DiscardHandler)
	}
	if cfg.identity != nil && cfg.authorize == nil {
		a, err := sameTrustDomain(cfg.identity)
		if err != nil {
			return cfg, err
		}
		cfg.authorize = a
	}
	cfg.stopObserving = observeIdentity(cfg.telemetry, cfg.identity)
	cfg.authorize = observeAuthorizer(cfg.telemetry, telemetry.Server, cfg.authorize)
	return cfg, nil
}

// Serve accepts connections on ln until [Server.Shutdown] or
// [Server.Close]; with an identity, every connection is a TLS 1.3
// handshake that requires a client SVID. It returns
// [http.ErrServerClosed] after a shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if s.http.TLSConfig != nil {
		return s.http.ServeTLS(ln, "", "")
	}
	return s.http.Serve(ln)
}

// Shutdown stops accepting connections and waits, until ctx ends, for
// requests in flight to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.cfg.stopObserving()
	return s.http.Shutdown(ctx)
}

// Close closes the listeners and every connection at once, and stops
// reporting the server's identity to telemetry.
func (s *Server) Close() error {
	s.cfg.stopObserving()
	return s.http.Close()
}

type peerKey struct{}

// connPeer caches the peer ID of one server connection, so it is parsed
// once per connection rather than once per request.
type connPeer struct {
	conn *tls.Conn
	once sync.Once
	id   spiffeid.ID
	err  error
}

func (p *connPeer) get() (spiffeid.ID, error) {
	p.once.Do(func() {
		state := p.conn.ConnectionState()
		p.id, p.err = tlsid.PeerID(&state)
	})
	return p.id, p.err
}
