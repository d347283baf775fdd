package mesh

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// GRPCBalancerName is the name under which weft's gRPC load balancer is
// registered with grpc-go, the one registration grpc-go requires to be
// global. [Client.DialGRPC] selects it; nothing else needs the name.
const GRPCBalancerName = "weft"

// grpcScheme is the resolver scheme of [Client.DialGRPC] targets. The
// resolver is passed to each connection, never registered globally.
const grpcScheme = "weft"

func init() {
	grpcbalancer.Register(base.NewBalancerBuilder(GRPCBalancerName, grpcPickerBuilder{}, base.Config{}))
}

// DialGRPC returns a gRPC client connection to service. Instances come
// from the client's discovery, each call is balanced by the client's
// policy for service, and connections use mutual TLS when the client has
// an identity. opts are applied after weft's own, so they may override
// them. As with [grpc.NewClient], no connection is made until the first
// call. Close the connection when done; closing the client does not.
func (c *Client) DialGRPC(service string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	if service == "" {
		return nil, errors.New("mesh: dial gRPC: empty service name")
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	if c.cfg.watcher == nil {
		return nil, ErrNoDiscovery
	}
	creds := insecure.NewCredentials()
	tlsConfig, err := c.tlsConfig(service)
	if err != nil {
		return nil, err
	}
	if tlsConfig != nil {
		creds = credentials.NewTLS(tlsConfig)
	}
	var policy balancer.Policy
	if c.cfg.policy != nil {
		policy = c.cfg.policy(service)
	}
	gc := &grpcCluster{service: service, guard: newGuard(service, &c.cfg.resilience), tel: c.destination(service, policy)}
	gc.balancer = balancer.New(policy, ejectionHook(c.cfg.telemetry, service, &gc.balancer)...)
	all := append([]grpc.DialOption{
		grpc.WithResolvers(&grpcResolverBuilder{watcher: c.cfg.watcher, cluster: gc}),
		grpc.WithChainUnaryInterceptor(gc.unaryChain()...),
		gc.streamChain(),
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"` + GRPCBalancerName + `":{}}]}`),
		grpc.WithTransportCredentials(creds),
	}, opts...)
	cc, err := grpc.NewClient(grpcScheme+":///"+service, all...)
	if err != nil {
		return nil, fmt.Errorf("mesh: dial gRPC %q: %w", service, err)
	}
	return cc, nil
}

// grpcCluster is the weft state of one gRPC client connection: its
// balancer and the current endpoints by address.
type grpcCluster struct {
	service  string
	balancer *balancer.Balancer
	guard    *guard                 // breakers, budget, rate limit, retry and hedge policies
	tel      *telemetry.Destination // nil: no telemetry (telemetry.go)

	mu     sync.Mutex
	byAddr map[string]discovery.Endpoint
}

type clusterKey struct{}

func (gc *grpcCluster) endpoint(addr string) discovery.Endpoint {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	if e, ok := gc.byAddr[addr]; ok {
		return e
	}
	return discovery.Endpoint{ID: addr, Addr: addr}
}

// grpcResolverBuilder resolves weft:///<service> targets through a
// discovery watcher.
type grpcResolverBuilder struct {
	watcher discovery.Watcher
	cluster *grpcCluster
}

func (b *grpcResolverBuilder) Scheme() string { return grpcScheme }

func (b *grpcResolverBuilder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	service := target.Endpoint()
	gc := b.cluster
	stop, err := b.watcher.Watch(service, func(u discovery.Update) {
		observeUpdate(gc.tel.Telemetry(), service, u, gc.balancer)
		byAddr := make(map[string]discovery.Endpoint, len(u.Endpoints))
		addrs := make([]resolver.Address, 0, len(u.Endpoints))
		for _, e := range u.Endpoints {
			byAddr[e.Addr] = e
			addrs = append(addrs, resolver.Address{
				Addr:               e.Addr,
				BalancerAttributes: resolverAttributes(gc),
			})
		}
		gc.mu.Lock()
		gc.byAddr = byAddr
		gc.mu.Unlock()
		if gc.guard.breakers != nil {
			gc.guard.breakers.Update(u.Endpoints)
		}
		if len(addrs) == 0 {
			cc.ReportError(fmt.Errorf("mesh: service %q has no endpoints: %w", service, balancer.ErrNoEndpoints))
			return
		}
		_ = cc.UpdateState(resolver.State{Addresses: addrs})
	})
	if err != nil {
		return nil, fmt.Errorf("mesh: resolve %q: %w", service, err)
	}
	return &grpcResolver{stop: stop}, nil
}

type grpcResolver struct{ stop func() }

func (r *grpcResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (r *grpcResolver) Close()                                { r.stop() }

// grpcPickerBuilder builds gRPC pickers over the weft balancer of the
// connection, found through the ready addresses' attributes.
type grpcPickerBuilder struct{}

func (grpcPickerBuilder) Build(info base.PickerBuildInfo) grpcbalancer.Picker {
	var gc *grpcCluster
	for _, sci := range info.ReadySCs {
		gc, _ = sci.Address.BalancerAttributes.Value(clusterKey{}).(*grpcCluster)
		break
	}
	if gc == nil {
		return base.NewErrPicker(grpcbalancer.ErrNoSubConnAvailable)
	}
	eps := make([]discovery.Endpoint, 0, len(info.ReadySCs))
	byID := make(map[string]grpcbalancer.SubConn, len(info.ReadySCs))
	for sc, sci := range info.ReadySCs {
		e := gc.endpoint(sci.Address.Addr)
		eps = append(eps, e)
		byID[e.ID] = sc
	}
	gc.balancer.Update(eps)
	return &grpcPicker{balancer: gc.balancer, subConns: byID, guard: gc.guard}
}

type grpcPicker struct {
	guard    *guard
	balancer *balancer.Balancer
	subConns map[string]grpcbalancer.SubConn
}

func (p *grpcPicker) Pick(info grpcbalancer.PickInfo) (grpcbalancer.PickResult, error) {
	if res, err, ok := p.pinned(info); ok {
		return res, err
	}
	start := time.Now()
	ep, err := p.pickUnpinned(info)
	if err != nil {
		return grpcbalancer.PickResult{}, status.Error(codes.Unavailable, err.Error())
	}
	sc, ok := p.subConns[ep.ID]
	if !ok {
		// A newer picker is being installed; gRPC retries the pick with it.
		ep.Done(balancer.Outcome{Result: balancer.Dropped})
		return grpcbalancer.PickResult{}, grpcbalancer.ErrNoSubConnAvailable
	}
	return grpcbalancer.PickResult{
		SubConn: sc,
		Done: func(di grpcbalancer.DoneInfo) {
			r := p.guard.classifyGRPC(info.Ctx, di.Err)
			if br := p.guard.breakers.Get(ep.ID); br != nil {
				br.Record(r)
			}
			ep.Done(balancer.Outcome{Latency: time.Since(start), Result: balancerResult(r)})
		},
	}, nil
}

// GRPCServerOptions returns the options that put a gRPC server in the
// mesh: with an identity, TLS 1.3 credentials that require and verify a
// client SVID (the caller's ID is then available through [PeerID]); a
// bound on concurrent streams per connection; and keepalive enforcement
// against ping floods.
func GRPCServerOptions(opts ...ServerOption) ([]grpc.ServerOption, error) {
	cfg, err := newServerConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("mesh: gRPC server options: %w", err)
	}
	out := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(DefaultMaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	if cfg.identity != nil {
		tlsConfig, err := tlsid.ServerConfig(cfg.identity, cfg.authorize)
		if err != nil {
			return nil, fmt.Errorf("mesh: gRPC server options: %w", err)
		}
		out = append(out, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	out = append(out, telemetryGRPCServerOptions(&cfg)...)
	out = append(out, accessGRPCOptions(&cfg)...)
	out = append(out, protectGRPCOptions(&cfg)...)
	return out, nil
}

func resolverAttributes(gc *grpcCluster) *attributes.Attributes {
	return attributes.New(clusterKey{}, gc)
}
