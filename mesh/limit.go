package mesh

import (
	"context"
	"math"
	"net"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// protectConfig is the server-side protection configured by options.
type protectConfig struct {
	routes   map[string]breaker.RateLimit
	peer     *breaker.RateLimit
	maxPeers int
	conc     *breaker.ConcurrencySettings
	trust    tlsid.Authorizer // whose priority claims count; nil: nobody's
	now      func() time.Time
}

// WithRouteRateLimit limits the calls a server accepts on one route, from
// all callers together: route is an HTTP URL path ("/charge", matched
// exactly) or a gRPC full method name ("/pay.Pay/Charge"). A call over the
// limit is answered 429 Too Many Requests with Retry-After (HTTP) or
// ResourceExhausted with the [RetryPushbackKey] trailer (gRPC), before
// the handler runs. A second limit for the same route replaces the first.
func WithRouteRateLimit(route string, l breaker.RateLimit) ServerOption {
	return protectOption(func(c *serverConfig) {
		if c.protect.routes == nil {
			c.protect.routes = make(map[string]breaker.RateLimit)
		}
		c.protect.routes[route] = l
	})
}

// WithPeerRateLimit limits the calls a server accepts from each caller:
// each verified SPIFFE ID (or, without mutual TLS, each remote IP) gets
// its own bucket l, answered as in [WithRouteRateLimit]. At most maxPeers
// buckets are kept (zero or less means [breaker.DefaultMaxKeys]); the
// least recently seen caller is forgotten first, so a flood of identities
// costs bounded memory.
func WithPeerRateLimit(l breaker.RateLimit, maxPeers int) ServerOption {
	return protectOption(func(c *serverConfig) {
		c.protect.peer = &l
		c.protect.maxPeers = maxPeers
	})
}

// WithConcurrencyLimit caps the calls a server handles at once, with
// priorities (see [breaker.ConcurrencyLimiter]): a critical call may use
// the whole limit and briefly wait for a slot; any other call is
// sheddable and is refused at once — 503 Service Unavailable (HTTP) or
// Unavailable (gRPC) — when in-flight calls reach the part of the limit
// outside the critical reserve.
//
// A call is critical only when its caller marks it so ([PriorityHeader]
// / [PriorityMetadataKey] set to "critical") and the server trusts that
// caller's claim ([WithTrustedPriority]); by default no claim is trusted
// and every call is sheddable.
//
// Like the rate limits, the limit is per server: [NewServer] and each call
// of [GRPCServerOptions] build limiters of their own from the options.
func WithConcurrencyLimit(s breaker.ConcurrencySettings) ServerOption {
	return protectOption(func(c *serverConfig) {
		c.protect.conc = &s
	})
}

// WithTrustedPriority makes the server honour the priority claims
// ([PriorityHeader], [PriorityMetadataKey]) of the callers authorize
// accepts: their verified SPIFFE IDs. The claim is asserted by the
// caller, so it is ignored from anyone else, and from callers without a
// verified ID: their calls are sheddable, whatever they claim. Without
// this option nobody's claim is trusted. A nil authorize is ignored.
func WithTrustedPriority(authorize tlsid.Authorizer) ServerOption {
	return protectOption(func(c *serverConfig) {
		if authorize != nil {
			c.protect.trust = authorize
		}
	})
}

// protectOption is the adapter of the server options of this file.
type protectOption func(*serverConfig)

func (f protectOption) applyServer(c *serverConfig) { f(c) }

// protector applies a server's rate and concurrency limits. Its fields
// are set once; the limiters are safe for concurrent use.
type protector struct {
	routes map[string]*rate.Limiter // nil: no route limits
	peers  *breaker.KeyedLimiter    // nil: no peer limit
	conc   *breaker.ConcurrencyLimiter
	timed  bool             // the concurrency limit adapts to latency: time each call
	trust  tlsid.Authorizer // whose priority claims count; nil: nobody's
	now    func() time.Time
	tel    *telemetry.Telemetry // nil: none (telemetry.go)
}

// newProtector returns the protector of c, nil when c configures none.
func newProtector(c *protectConfig) *protector {
	if len(c.routes) == 0 && c.peer == nil && c.conc == nil {
		return nil
	}
	p := &protector{now: c.now, trust: c.trust}
	if p.now == nil {
		p.now = time.Now
	}
	if len(c.routes) > 0 {
		p.routes = make(map[string]*rate.Limiter, len(c.routes))
		for route, l := range c.routes {
			p.routes[route] = l.NewLimiter()
		}
	}
	if c.peer != nil {
		p.peers = breaker.NewKeyedLimiter(*c.peer, c.maxPeers)
	}
	if c.conc != nil {
		p.conc = breaker.NewConcurrencyLimiter(*c.conc)
		p.timed = c.conc.Adaptive != nil
	}
	return p
}

// rateLimit applies the route and peer limits to a call at now; when one
// refuses, it returns false and when to come back.
func (p *protector) rateLimit(route string, peerKey func() string, now time.Time) (bool, time.Duration) {
	if lim := p.routes[route]; lim != nil && !lim.AllowN(now, 1) {
		return false, breaker.RetryAfter(lim, now)
	}
	if p.peers != nil {
		return p.peers.Allow(peerKey(), now)
	}
	return true, 0
}

// protectHandler wraps h with the server's limits, or returns h when
// there are none.
func protectHandler(h http.Handler, c *serverConfig) http.Handler {
	p := newProtector(&c.protect)
	if p == nil {
		return h
	}
	p.tel = c.telemetry
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.routes != nil || p.peers != nil {
			ok, wait := p.rateLimit(r.URL.Path, func() string { return httpPeerKey(r) }, p.now())
			if !ok {
				p.tel.Rejected(r.Context(), telemetry.Server, "", telemetry.RateLimited)
				w.Header().Set("Retry-After", retryAfterSeconds(wait))
				http.Error(w, "rate limited", http.StatusTooManyRequests)
				return
			}
		}
		if p.conc != nil {
			prio := p.priority(r.Context(), r.Header.Get(PriorityHeader))
			if err := p.conc.Acquire(r.Context(), prio); err != nil {
				p.tel.Rejected(r.Context(), telemetry.Server, "", telemetry.Shed)
				http.Error(w, "overloaded", http.StatusServiceUnavailable)
				return
			}
			defer p.release(p.start())
		}
		h.ServeHTTP(w, r)
	})
}

// protectGRPCOptions returns the interceptors that apply the server's
// limits to gRPC calls, none when there are none.
func protectGRPCOptions(c *serverConfig) []grpc.ServerOption {
	p := newProtector(&c.protect)
	if p == nil {
		return nil
	}
	p.tel = c.telemetry
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			release, err := p.admitGRPC(ctx, info.FullMethod)
			if err != nil {
				return nil, err
			}
			defer release()
			return handler(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			release, err := p.admitGRPC(ss.Context(), info.FullMethod)
			if err != nil {
				return err
			}
			defer release()
			return handler(srv, ss)
		}),
	}
}

func noRelease() {}

// admitGRPC applies the limits to a gRPC call of method.
func (p *protector) admitGRPC(ctx context.Context, method string) (release func(), err error) {
	if p.routes != nil || p.peers != nil {
		ok, wait := p.rateLimit(method, func() string { return grpcPeerKey(ctx) }, p.now())
		if !ok {
			p.tel.Rejected(ctx, telemetry.Server, "", telemetry.RateLimited)
			ms := int64(math.Ceil(float64(wait) / float64(time.Millisecond)))
			_ = grpc.SetTrailer(ctx, metadata.Pairs(RetryPushbackKey, strconv.FormatInt(ms, 10)))
			return nil, status.Errorf(codes.ResourceExhausted, "mesh: rate limited, retry in %d ms", ms)
		}
	}
	if p.conc == nil {
		return noRelease, nil
	}
	var claim string
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(PriorityMetadataKey); len(v) > 0 {
			claim = v[0]
		}
	}
	prio := p.priority(ctx, claim)
	if err := p.conc.Acquire(ctx, prio); err != nil {
		p.tel.Rejected(ctx, telemetry.Server, "", telemetry.Shed)
		return nil, status.Error(codes.Unavailable, "mesh: overloaded, call shed")
	}
	start := p.start()
	return func() { p.release(start) }, nil
}

// priority returns the priority of a call whose caller claims claim:
// the claim counts only from a caller with a verified ID that the
// server's trust authorizer accepts; any other call is sheddable.
func (p *protector) priority(ctx context.Context, claim string) breaker.Priority {
	if p.trust == nil || claim == "" {
		return breaker.Sheddable
	}
	prio := breaker.ParsePriority(claim)
	if prio == breaker.Sheddable {
		return prio
	}
	id, err := PeerID(ctx)
	if err != nil || p.trust(id) != nil {
		return breaker.Sheddable
	}
	return prio
}

// start returns the start time of an admitted call when the concurrency
// limit needs latencies, and the zero time otherwise (a clock read saved).
func (p *protector) start() time.Time {
	if p.timed {
		return time.Now()
	}
	return time.Time{}
}

// release ends an admitted call that started at start.
func (p *protector) release(start time.Time) {
	var rtt time.Duration
	if p.timed {
		rtt = time.Since(start)
	}
	p.conc.Release(rtt, true)
}

// httpPeerKey is the rate-limit key of r's caller: its SPIFFE ID, or its
// IP without mutual TLS.
func httpPeerKey(r *http.Request) string {
	if id, err := PeerID(r.Context()); err == nil {
		return id.String()
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// grpcPeerKey is the rate-limit key of the caller of a gRPC call.
func grpcPeerKey(ctx context.Context) string {
	if id, err := PeerID(ctx); err == nil {
		return id.String()
	}
	if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
		if host, _, err := net.SplitHostPort(pr.Addr.String()); err == nil {
			return host
		}
		return pr.Addr.String()
	}
	return ""
}

// retryAfterSeconds formats d as a Retry-After value: whole seconds,
// rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64(math.Ceil(d.Seconds()))
	return strconv.FormatInt(max(s, 1), 10)
}
