package mesh

import (
	"log/slog"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// ClientOption configures a [Client].
type ClientOption interface{ applyClient(*clientConfig) }

// ServerOption configures a [Server] or the gRPC server options of
// [GRPCServerOptions].
type ServerOption interface{ applyServer(*serverConfig) }

// Option configures clients and servers alike.
type Option interface {
	ClientOption
	ServerOption
}

type clientConfig struct {
	watcher           discovery.Watcher
	identity          tlsid.Source
	authorize         tlsid.Authorizer
	serviceAuthorize  func(service string) tlsid.Authorizer
	requireIdentities bool // WithRequiredIdentities (naming.go)
	policy            func(service string) balancer.Policy
	logger            *slog.Logger
	resilience        resilienceConfig     // retries, hedging, breakers, rate limits (resilience.go)
	clock             Clock                // nil: the system clock
	routes            route.Source         // nil: no routing (routing.go)
	mirrorCompare     mirrorHook           // nil: none (routing_mirror.go)
	stopObserving     func()               // stops telemetry's watch of the identity's expiry
	telemetry         *telemetry.Telemetry // nil: none (telemetry.go)
}

type serverConfig struct {
	protect   protectConfig // rate and concurrency limits (limit.go)
	identity  tlsid.Source
	authorize tlsid.Authorizer
	logger    *slog.Logger
	access    *accessConfig        // request policies, see access.go
	timeouts  ServerTimeouts       // timeouts.go
	maxResets int                  // stream resets per second (reset.go); 0: the default
	telemetry *telemetry.Telemetry // nil: none (telemetry.go)
	// stopObserving stops telemetry's watch of the identity's expiry.
	stopObserving func()
}

type clientOptionFunc func(*clientConfig)

func (f clientOptionFunc) applyClient(c *clientConfig) { f(c) }

type sharedOption struct {
	client func(*clientConfig)
	server func(*serverConfig)
}

func (o sharedOption) applyClient(c *clientConfig) { o.client(c) }
func (o sharedOption) applyServer(c *serverConfig) { o.server(c) }

// WithIdentity turns on mutual TLS with the SVIDs and trust bundles of src.
// A client then verifies every server's SVID, and a server requires and
// verifies every client's. Without an identity, traffic is plaintext.
// A nil src is ignored.
func WithIdentity(src tlsid.Source) Option {
	return sharedOption{
		client: func(c *clientConfig) {
			if src != nil {
				c.identity = src
			}
		},
		server: func(c *serverConfig) {
			if src != nil {
				c.identity = src
			}
		},
	}
}

// WithAuthorizer sets which peers may be talked to: on a server, which
// clients may connect; on a client, which servers it accepts. The default
// admits peers of this process's own trust domain. A nil authorize is
// ignored.
func WithAuthorizer(authorize tlsid.Authorizer) Option {
	return sharedOption{
		client: func(c *clientConfig) {
			if authorize != nil {
				c.authorize = authorize
			}
		},
		server: func(c *serverConfig) {
			if authorize != nil {
				c.authorize = authorize
			}
		},
	}
}

// WithLogger sets the logger for mesh events. The default discards them.
// A nil logger is ignored.
func WithLogger(l *slog.Logger) Option {
	return sharedOption{
		client: func(c *clientConfig) {
			if l != nil {
				c.logger = l
			}
		},
		server: func(c *serverConfig) {
			if l != nil {
				c.logger = l
			}
		},
	}
}

// WithDiscovery sets where the client finds the instances of services.
// A client has none by default and fails every call until it is given one.
// A nil w is ignored.
func WithDiscovery(w discovery.Watcher) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if w != nil {
			c.watcher = w
		}
	})
}

// WithServerAuthorizer sets, per destination service, which server
// identities the client accepts, overriding [WithAuthorizer] for the
// services for which it returns a non-nil authorizer. A nil function is
// ignored.
func WithServerAuthorizer(authorize func(service string) tlsid.Authorizer) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if authorize != nil {
			c.serviceAuthorize = authorize
		}
	})
}

// WithBalancer sets the balancing policy, per destination service; the
// function is called once per service, when the client first calls it,
// and a nil result means round robin. The default is round robin for
// every service. A nil function is ignored.
func WithBalancer(policy func(service string) balancer.Policy) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if policy != nil {
			c.policy = policy
		}
	})
}
