package mesh

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// AccessStats counts the decisions of a server's request policies (see
// [WithAccessPolicy]). Read it from metrics code; give the same value to
// several servers to count them together.
//
// The zero value is ready to use. It is safe for concurrent use.
type AccessStats struct {
	allowed, denied, failed, audited atomic.Uint64
}

// Allowed returns how many requests the policies allowed.
func (s *AccessStats) Allowed() uint64 { return s.allowed.Load() }

// Denied returns how many requests were refused by a policy (403 /
// PermissionDenied), non-canonical gRPC method names included.
func (s *AccessStats) Denied() uint64 { return s.denied.Load() }

// Failed returns how many requests were refused because a policy could
// not decide (503 / Unavailable), such as Consul being unreachable.
func (s *AccessStats) Failed() uint64 { return s.failed.Load() }

// Audited returns how many requests an audit-only policy
// ([WithAccessAudit]) would have refused.
func (s *AccessStats) Audited() uint64 { return s.audited.Load() }

// accessConfig is the request-level access control of one server.
type accessConfig struct {
	enforce []tlsid.RequestPolicy
	audit   []tlsid.RequestPolicy
	stats   *AccessStats
	tel     *telemetry.Telemetry // nil: none (telemetry.go)
}

type serverOptionFunc func(*serverConfig)

func (f serverOptionFunc) applyServer(c *serverConfig) { f(c) }

func accessOf(c *serverConfig) *accessConfig {
	if c.access == nil {
		c.access = &accessConfig{}
	}
	return c.access
}

// WithAccessPolicy makes the server check every request against p, after
// the handshake and before the handler: an HTTP request p denies is
// answered 403 Forbidden, a gRPC call PermissionDenied; when p cannot
// decide (its error does not wrap [tlsid.ErrUnauthorized]) the answer is
// 503 / Unavailable. Several policies may be given: each must allow.
//
// p sees the peer's verified SPIFFE ID, the request's headers (gRPC: the
// call's metadata; both also answer ":authority", "host" and ":method")
// and the request's method and path in normalized form ([NormalizePath]: "/a/../admin", "//admin" and
// "/a%2F..%2Fadmin" are all "/admin"), with the escaped path as sent
// when it differs ([tlsid.Request].EscapedPath); the server normalizes every
// request's path once, before any decision, so the HTTP handler receives
// that same path (RawPath cleared, RequestURI rewritten to match), CONNECT
// requests with a path included: what was authorized is what is routed. A gRPC method name that is not canonical
// ("/pkg.Service/Method") is denied.
//
// Use [tlsid.NewPolicy] for allow/deny rules, [tlsid.WatchConsulIntentions]
// for Consul's intentions, L7 permissions included, decided in-process,
// and [tlsid.NewConsulIntentions] for Consul's L4 decision from the
// agent's authorize endpoint. A nil p is ignored.
func WithAccessPolicy(p tlsid.RequestPolicy) ServerOption {
	return serverOptionFunc(func(c *serverConfig) {
		if p != nil {
			a := accessOf(c)
			a.enforce = append(a.enforce, p)
		}
	})
}

// WithAccessAudit checks every request against p without enforcing it:
// requests p would deny are logged (at warning level, on the server's
// logger) and counted in [AccessStats.Audited], then served. Use it to
// try a policy out before [WithAccessPolicy]. A nil p is ignored.
func WithAccessAudit(p tlsid.RequestPolicy) ServerOption {
	return serverOptionFunc(func(c *serverConfig) {
		if p != nil {
			a := accessOf(c)
			a.audit = append(a.audit, p)
		}
	})
}

// WithAccessStats sets where the server counts its access decisions.
// Without it they are counted in a value nobody reads. A nil s is
// ignored.
func WithAccessStats(s *AccessStats) ServerOption {
	return serverOptionFunc(func(c *serverConfig) {
		if s != nil {
			accessOf(c).stats = s
		}
	})
}

// verdict is the outcome of the access check of one request.
type verdict int

const (
	allow verdict = iota
	deny
	unavailable
)

// check runs the policies on r, counts and logs the outcome.
func (a *accessConfig) check(ctx context.Context, r tlsid.Request, logger *slog.Logger) verdict {
	for _, p := range a.enforce {
		if err := p.AuthorizeRequest(ctx, r); err != nil {
			if errors.Is(err, tlsid.ErrUnauthorized) {
				a.stats.denied.Add(1)
				// Logged here, once: telemetry records the metric and the span event.
				calltel.Of(a.tel).AuthorizationDeniedLogged(ctx, telemetry.Server, r.Peer.String(), err)
				logger.LogAttrs(ctx, slog.LevelDebug, "mesh: access denied", accessAttrs(r, err)...)
				return deny
			}
			a.stats.failed.Add(1)
			logger.LogAttrs(ctx, slog.LevelWarn, "mesh: access check failed", accessAttrs(r, err)...)
			return unavailable
		}
	}
	for _, p := range a.audit {
		if err := p.AuthorizeRequest(ctx, r); err != nil {
			a.stats.audited.Add(1)
			logger.LogAttrs(ctx, slog.LevelWarn, "mesh: access audit: would deny", accessAttrs(r, err)...)
		}
	}
	a.stats.allowed.Add(1)
	return allow
}

func accessAttrs(r tlsid.Request, err error) []slog.Attr {
	peer := "none"
	if !r.Peer.IsZero() {
		peer = r.Peer.String()
	}
	p := redactText(r.Path)
	if len(p) > 256 {
		p = p[:256] + "…"
	}
	return []slog.Attr{slog.String("peer", peer), slog.String("method", r.Method), slog.String("path", p), slog.String("reason", telemetry.Redact(err))}
}

// newAccess finishes the access configuration of a server; nil when no
// policy is set.
func newAccess(c *serverConfig) *accessConfig {
	a := c.access
	if a == nil || len(a.enforce)+len(a.audit) == 0 {
		return nil
	}
	if a.stats == nil {
		a.stats = &AccessStats{}
	}
	a.tel = c.telemetry
	return a
}

// accessHandler wraps h with the server's request policies; it returns h
// itself when there are none.
func accessHandler(h http.Handler, c *serverConfig) http.Handler {
	a := newAccess(c)
	if a == nil {
		return h
	}
	logger := c.logger
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, _ := PeerID(r.Context())
		switch a.check(r.Context(), tlsid.Request{Peer: peer, Method: r.Method, Path: r.URL.Path, EscapedPath: sentPath(r), Header: (*httpHeaders)(r)}, logger) {
		case deny:
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		case unavailable:
			http.Error(w, "access check unavailable", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// accessGRPCOptions returns the interceptors that apply the server's
// request policies to gRPC calls; none when there are no policies.
func accessGRPCOptions(c *serverConfig) []grpc.ServerOption {
	a := newAccess(c)
	if a == nil {
		return nil
	}
	logger := c.logger
	checkCall := func(ctx context.Context, method string) error {
		if !canonicalGRPCMethod(method) {
			a.stats.denied.Add(1)
			return status.Error(codes.PermissionDenied, "weft: access denied: non-canonical method")
		}
		peer, _ := PeerID(ctx)
		switch a.check(ctx, tlsid.Request{Peer: peer, Method: http.MethodPost, Path: method, Header: &grpcHeaders{ctx: ctx}}, logger) {
		case deny:
			return status.Error(codes.PermissionDenied, "weft: access denied")
		case unavailable:
			return status.Error(codes.Unavailable, "weft: access check unavailable")
		}
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			if err := checkCall(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			if err := checkCall(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return handler(srv, ss)
		}),
	}
}

// canonicalGRPCMethod reports whether m is "/service/method" with
// non-empty, dot-free segments and nothing else.
func canonicalGRPCMethod(m string) bool {
	if len(m) < 4 || m[0] != '/' {
		return false
	}
	i := strings.IndexByte(m[1:], '/') + 1
	if i <= 1 || i == len(m)-1 || strings.IndexByte(m[i+1:], '/') >= 0 {
		return false
	}
	svc, meth := m[1:i], m[i+1:]
	return svc != "." && svc != ".." && meth != "." && meth != ".."
}

// httpHeaders gives a request policy an HTTP request's headers, and the
// pseudo-headers Consul's intentions may match: ":authority" (and
// "host", which net/http moves out of the header map) and ":method".
type httpHeaders http.Request

// Values implements [tlsid.Headers].
func (h *httpHeaders) Values(name string) []string {
	r := (*http.Request)(h)
	switch {
	case strings.EqualFold(name, ":authority") || strings.EqualFold(name, "host"):
		return []string{r.Host}
	case strings.EqualFold(name, ":method"):
		return []string{r.Method}
	}
	return r.Header.Values(name)
}

// grpcHeaders gives a request policy a gRPC call's metadata, read only
// when a policy asks for a header; the metadata holds ":authority",
// "host" reads it too, and ":method" is POST.
type grpcHeaders struct{ ctx context.Context }

var grpcMethod = []string{http.MethodPost}

// Values implements [tlsid.Headers].
func (h *grpcHeaders) Values(name string) []string {
	switch {
	case strings.EqualFold(name, "host"):
		name = ":authority"
	case strings.EqualFold(name, ":method"):
		return grpcMethod
	}
	// Metadata keys are lowercase; ValueFromIncomingContext finds them
	// whatever the case of name.
	return metadata.ValueFromIncomingContext(h.ctx, name)
}
