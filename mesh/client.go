package mesh

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// ErrClosed is returned by calls on a closed [Client].
var ErrClosed = errors.New("mesh: client closed")

// ErrNoDiscovery is returned by calls on a [Client] built without
// [WithDiscovery].
var ErrNoDiscovery = errors.New("mesh: no discovery configured")

// Client sends requests to services by name. It resolves a service
// through discovery, picks an endpoint with the service's balancer and
// talks to it over mutual TLS when an identity is configured.
//
// A Client is an [http.RoundTripper]: the host of a request's URL is the
// service name (http://payments/charge calls service "payments"). Use
// [Client.HTTPClient] for an [*http.Client] and [Client.DialGRPC] for a
// gRPC connection.
//
// A Client is safe for concurrent use. Close it to stop its discovery
// watches and close idle connections.
type Client struct {
	cfg clientConfig

	mu       sync.Mutex // serialises cluster creation and Close
	clusters atomic.Pointer[map[string]*cluster]
	closed   bool

	mirrors   chan struct{}   // a slot per mirrored call in flight (routing.go)
	mirroring sync.WaitGroup  // mirrored calls in flight
	externals externals       // transports of external route backends (routing_external.go)
	failovers warmedFailovers // route destinations whose failover targets HTTP calls resolved (failover.go)
}

// NewClient returns a client configured by opts.
func NewClient(opts ...ClientOption) (*Client, error) {
	c := &Client{mirrors: make(chan struct{}, maxMirrors)}
	for _, o := range opts {
		if o != nil {
			o.applyClient(&c.cfg)
		}
	}
	if c.cfg.logger == nil {
		c.cfg.logger = slog.New(slog.DiscardHandler)
	}
	if c.cfg.requireIdentities && c.cfg.identity == nil {
		return nil, errors.New("mesh: new client: required server identities need WithIdentity")
	}
	if c.cfg.identity != nil && c.cfg.authorize == nil {
		a, err := sameTrustDomain(c.cfg.identity)
		if err != nil {
			return nil, fmt.Errorf("mesh: new client: %w", err)
		}
		c.cfg.authorize = a
	}
	c.cfg.stopObserving = observeIdentity(c.cfg.telemetry, c.cfg.identity)
	empty := map[string]*cluster{}
	c.clusters.Store(&empty)
	return c, nil
}

// sameTrustDomain authorizes peers of the trust domain of src's SVID.
func sameTrustDomain(src tlsid.Source) (tlsid.Authorizer, error) {
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return tlsid.AuthorizeMemberOf(svid.ID.TrustDomain()), nil
}

// HTTPClient returns an [*http.Client] whose transport is c.
func (c *Client) HTTPClient() *http.Client {
	return &http.Client{Transport: c}
}

// cluster is the client's state for one destination service, shared by
// its HTTP requests and its gRPC connections: one balancer fed by one
// discovery watch, one set of breakers, one budget and rate limit.
type cluster struct {
	service   string
	key       string // in the client's clusters: the service, or its discovery target's String
	balancer  *balancer.Balancer
	transport *http.Transport
	scheme    string
	tlsConfig *tls.Config   // nil: plaintext
	naming    *naming       // expected server identities (naming.go)
	ready     chan struct{} // closed on the first update
	readyOnce sync.Once
	status    atomic.Pointer[discovery.Update]
	stop      func()
	guard     *guard               // breakers, budget, rate limit, retry and hedge policies
	tel       *calltel.Destination // nil: no telemetry (telemetry.go)

	subMu sync.Mutex // guards subs
	subs  map[*grpcConn]struct{}

	newPolicy func() balancer.Policy // a policy for one more balancer (a subset's)
	subsets   subsets                // balancers of the subsets routes send to (routing.go)
	pools     pools                  // connection-pool limits of its destinations (pool.go)
}

// update takes in a discovery update: the endpoints (the last good set
// when u.Err is set) go to the breakers, the balancer and every gRPC
// connection to the service.
func (cl *cluster) update(u discovery.Update) {
	if cl.guard.breakers != nil {
		cl.guard.breakers.Update(u.Endpoints)
	}
	cl.balancer.Update(u.Endpoints)
	if cl.naming.update(u.Endpoints) {
		cl.transport.CloseIdleConnections() // verified against an old expected identity
	}
	cl.updateSubsets(u.Endpoints)
	observeUpdate(cl.tel.Telemetry(), cl.service, u, cl.balancer)
	cl.status.Store(&u)
	// The connections are told outside the lock: grpc-go may close a
	// resolver (which unsubscribes) while an update is under way.
	cl.subMu.Lock()
	subs := make([]*grpcConn, 0, len(cl.subs))
	for gc := range cl.subs {
		subs = append(subs, gc)
	}
	cl.subMu.Unlock()
	for _, gc := range subs {
		gc.setEndpoints(cl.key, u.Endpoints)
	}
	cl.readyOnce.Do(func() { close(cl.ready) })
}

// subscribe hands gc the cluster's endpoints now, when it has any, and
// on every change until unsubscribed.
func (cl *cluster) subscribe(gc *grpcConn) (unsubscribe func()) {
	cl.subMu.Lock()
	defer cl.subMu.Unlock()
	if cl.subs == nil {
		cl.subs = make(map[*grpcConn]struct{})
	}
	cl.subs[gc] = struct{}{}
	if u := cl.status.Load(); u != nil {
		gc.setEndpoints(cl.key, u.Endpoints)
	}
	return func() {
		cl.subMu.Lock()
		delete(cl.subs, gc)
		cl.subMu.Unlock()
	}
}

// cluster returns the state of service, creating it on first use.
func (c *Client) cluster(service string) (*cluster, error) {
	return c.clusterOf(service, service, nil)
}

// ErrTargetUnsupported is returned (wrapped) by a call that a route sends
// to a destination whose endpoints need a discovery watch of their own —
// in another datacenter, or of a subset by a Consul filter — when the
// client's watcher ([WithDiscovery]) does not watch targets
// ([discovery.TargetWatcher]).
var ErrTargetUnsupported = errors.New("mesh: the discovery watcher does not watch targets")

// destCluster returns the cluster of a route's destination: the
// service's, or, when the destination's endpoints need a watch of their
// own (route.Destination.Target), the target's, keyed by the target.
func (c *Client) destCluster(dest *route.Destination) (*cluster, error) {
	tg, own := dest.Target()
	if !own {
		return c.cluster(dest.Service)
	}
	return c.clusterOf(dest.Service, tg.String(), &tg)
}

// destKey is the key of dest's cluster ([Client.destCluster]).
func destKey(dest *route.Destination) string {
	if tg, own := dest.Target(); own {
		return tg.String()
	}
	return dest.Service
}

// clusterOf returns the cluster of key — service, or target when not nil
// — creating it on first use.
func (c *Client) clusterOf(service, key string, target *discovery.Target) (*cluster, error) {
	if cl := (*c.clusters.Load())[key]; cl != nil {
		return cl, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	old := *c.clusters.Load()
	if cl := old[key]; cl != nil {
		return cl, nil
	}
	if c.cfg.watcher == nil {
		return nil, ErrNoDiscovery
	}
	watch := c.cfg.watcher.Watch
	if target != nil {
		tw, ok := c.cfg.watcher.(discovery.TargetWatcher)
		if !ok {
			return nil, fmt.Errorf("%w: %s needs a watch of its own, and %T watches whole services only", ErrTargetUnsupported, key, c.cfg.watcher)
		}
		watch = func(_ string, fn func(discovery.Update)) (func(), error) { return tw.WatchTarget(*target, fn) }
	}
	cl, err := c.newCluster(service, key, watch)
	if errors.Is(err, discovery.ErrNoTargets) {
		return nil, fmt.Errorf("%w: %w", ErrTargetUnsupported, err)
	}
	if err != nil {
		return nil, err
	}
	next := make(map[string]*cluster, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[key] = cl
	c.clusters.Store(&next)
	return cl, nil
}

// newCluster builds the cluster of service under key, fed by watch.
func (c *Client) newCluster(service, key string, watch func(string, func(discovery.Update)) (func(), error)) (*cluster, error) {
	var policy balancer.Policy
	if c.cfg.policy != nil {
		policy = c.cfg.policy(service)
	}
	cl := &cluster{
		newPolicy: func() balancer.Policy {
			if c.cfg.policy != nil {
				return c.cfg.policy(service)
			}
			return nil
		},
		service: service,
		key:     key,
		ready:   make(chan struct{}),
		scheme:  "http",
		guard:   newGuard(service, &c.cfg.resilience, c.cfg.clock),
		tel:     c.destination(service, policy),
		naming:  newNaming(service, c.cfg.requireIdentities, c.cfg.logger),
	}
	cl.balancer = balancer.New(policy, ejectionHook(c.cfg.telemetry, service, &cl.balancer)...)
	tlsConfig, err := c.tlsConfig(service)
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		cl.scheme = "https"
		cl.tlsConfig = tlsConfig
	}
	cl.transport = &http.Transport{
		Proxy:                 nil,
		TLSClientConfig:       tlsConfig,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DialContext:           c.dialer(service),
	}
	if tlsConfig != nil {
		cl.transport.DialTLSContext = cl.naming.dialTLS(tlsConfig, cl.transport.DialContext) // secure naming
	}
	stop, err := watch(service, cl.update)
	if err != nil {
		return nil, fmt.Errorf("mesh: watch %q: %w", key, err)
	}
	cl.stop = stop
	c.observeCluster(cl)
	return cl, nil
}

// tlsConfig returns the client TLS config for service, nil without an
// identity.
func (c *Client) tlsConfig(service string) (*tls.Config, error) {
	if c.cfg.identity == nil {
		return nil, nil
	}
	authorize := c.cfg.authorize
	if c.cfg.serviceAuthorize != nil {
		if a := c.cfg.serviceAuthorize(service); a != nil {
			authorize = a
		}
	}
	cfg, err := tlsid.ClientConfig(c.cfg.identity, observeAuthorizer(c.cfg.telemetry, telemetry.Client, authorize))
	if err != nil {
		return nil, fmt.Errorf("mesh: %q: %w", service, err)
	}
	return cfg, nil
}

func closeBody(r *http.Request) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
}

// Close stops the client's discovery watches and closes its idle
// connections, once its mirrored calls (see [WithRoutes]) have ended.
// Calls after Close fail with [ErrClosed].
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.cfg.stopObserving()
	clusters := *c.clusters.Load()
	empty := map[string]*cluster{}
	c.clusters.Store(&empty)
	c.mu.Unlock()
	c.mirroring.Wait()
	c.externals.close()
	for _, cl := range clusters {
		cl.stop()
		cl.transport.CloseIdleConnections()
	}
	return nil
}

var _ io.Closer = (*Client)(nil)
