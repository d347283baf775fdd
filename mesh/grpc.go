package mesh

import (
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/tlsid"
)

// GRPCBalancerName is the name under which weft's gRPC load balancer is
// registered with grpc-go, the one registration grpc-go requires to be
// global. [Client.DialGRPC] selects it; nothing else needs the name.
const GRPCBalancerName = "weft"

func init() {
	grpcbalancer.Register(grpcBalancerBuilder{})
}

// The resolver of a DialGRPC connection hands grpc-go the endpoints of
// the service's cluster — the same set the HTTP path balances over — and
// weft's service config; grpcConn is its builder.

func (gc *grpcConn) Scheme() string { return grpcScheme }

// Build starts feeding cc the cluster's endpoints.
func (gc *grpcConn) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	sc := cc.ParseServiceConfig(weftServiceConfig)
	if sc.Err != nil {
		return nil, fmt.Errorf("mesh: gRPC service config: %w", sc.Err)
	}
	r := &grpcResolver{gc: gc, cc: cc, sc: sc}
	gc.mu.Lock()
	gc.resolver = r
	gc.mu.Unlock()
	r.unsubscribe = gc.cl.subscribe(gc)
	return r, nil
}

// setEndpoints passes a new endpoint set to the connection's resolver,
// when grpc-go has built one. The cluster calls it, one update at a time.
func (gc *grpcConn) setEndpoints(eps []discovery.Endpoint) {
	gc.mu.Lock()
	r := gc.resolver
	gc.mu.Unlock()
	if r == nil {
		return
	}
	state := resolver.State{
		Endpoints:     make([]resolver.Endpoint, len(eps)),
		ServiceConfig: r.sc,
		Attributes:    attributes.New(grpcConnKey{}, gc),
	}
	for i, e := range eps {
		state.Endpoints[i] = resolver.Endpoint{
			Addresses:  []resolver.Address{{Addr: e.Addr}},
			Attributes: attributes.New(endpointIDKey{}, e.ID),
		}
	}
	_ = r.cc.UpdateState(state)
}

// grpcConnKey finds the grpcConn of a resolver state.
type grpcConnKey struct{}

// endpointIDKey is the attribute of a resolver endpoint that holds its
// discovery ID.
type endpointIDKey struct{}

type grpcResolver struct {
	gc          *grpcConn
	cc          resolver.ClientConn
	sc          *serviceconfig.ParseResult
	unsubscribe func()
}

func (r *grpcResolver) ResolveNow(resolver.ResolveNowOptions) {}

func (r *grpcResolver) Close() {
	r.unsubscribe()
	r.gc.mu.Lock()
	if r.gc.resolver == r {
		r.gc.resolver = nil
	}
	r.gc.mu.Unlock()
}

// grpcBalancerBuilder builds weft's gRPC balancer.
type grpcBalancerBuilder struct{}

func (grpcBalancerBuilder) Name() string { return GRPCBalancerName }

func (grpcBalancerBuilder) Build(cc grpcbalancer.ClientConn, _ grpcbalancer.BuildOptions) grpcbalancer.Balancer {
	return &grpcBalancer{cc: cc, subConns: make(map[string]*subConn)}
}

// grpcBalancer is weft's gRPC load balancer, written for weft's call
// engine: it keeps one SubConn per endpoint of the service, reconnects
// those that go idle, and publishes which endpoints are ready — to the
// engine, which picks among them, and to grpc-go as a picker that routes
// each attempt to the SubConn of the endpoint the engine chose. It holds
// no balancing policy of its own and never touches the service's
// balancer, which discovery alone feeds.
//
// grpc-go calls its methods, and the SubConns' state listeners, one at a
// time.
type grpcBalancer struct {
	cc       grpcbalancer.ClientConn
	gc       *grpcConn
	subConns map[string]*subConn // by endpoint ID
	err      error               // the last resolver or connection error
}

type subConn struct {
	sc    grpcbalancer.SubConn
	addr  string
	state connectivity.State
}

func (b *grpcBalancer) UpdateClientConnState(s grpcbalancer.ClientConnState) error {
	gc, _ := s.ResolverState.Attributes.Value(grpcConnKey{}).(*grpcConn)
	if gc == nil {
		return fmt.Errorf("mesh: weft's gRPC balancer serves connections of DialGRPC only: %w", grpcbalancer.ErrBadResolverState)
	}
	b.gc = gc
	want := make(map[string]string, len(s.ResolverState.Endpoints))
	for _, e := range s.ResolverState.Endpoints {
		id, _ := e.Attributes.Value(endpointIDKey{}).(string)
		if len(e.Addresses) > 0 && id != "" {
			want[id] = e.Addresses[0].Addr
		}
	}
	for id, c := range b.subConns {
		if addr, ok := want[id]; !ok || addr != c.addr {
			c.sc.Shutdown()
			delete(b.subConns, id)
		}
	}
	for id, addr := range want {
		if _, ok := b.subConns[id]; ok {
			continue
		}
		c := &subConn{addr: addr, state: connectivity.Idle}
		sc, err := b.cc.NewSubConn([]resolver.Address{{Addr: addr}}, grpcbalancer.NewSubConnOptions{
			StateListener: func(st grpcbalancer.SubConnState) { b.subConnState(id, c, st) },
		})
		if err != nil {
			b.err = err
			continue
		}
		c.sc = sc
		b.subConns[id] = c
		sc.Connect()
	}
	b.publish()
	return nil
}

func (b *grpcBalancer) subConnState(id string, c *subConn, st grpcbalancer.SubConnState) {
	if b.subConns[id] != c {
		return // shut down since
	}
	c.state = st.ConnectivityState
	switch c.state {
	case connectivity.Idle:
		c.sc.Connect()
	case connectivity.TransientFailure:
		b.err = st.ConnectionError
	}
	b.publish()
}

// publish gives grpc-go a new picker and the engine the new readiness.
func (b *grpcBalancer) publish() {
	ready := make(map[string]grpcbalancer.SubConn)
	r := &readiness{ready: make(map[string]bool), err: b.err}
	for id, c := range b.subConns {
		switch c.state {
		case connectivity.Ready:
			ready[id] = c.sc
			r.ready[id] = true
		case connectivity.Idle, connectivity.Connecting:
			r.connecting = true
		}
	}
	state := connectivity.TransientFailure
	switch {
	case len(ready) > 0:
		state = connectivity.Ready
	case r.connecting:
		state = connectivity.Connecting
	}
	b.cc.UpdateState(grpcbalancer.State{ConnectivityState: state, Picker: &grpcPicker{ready: ready}})
	if b.gc != nil {
		b.gc.setReadiness(r)
	}
}

func (b *grpcBalancer) ResolverError(err error) {
	b.err = err
	if len(b.subConns) == 0 {
		b.publish()
	}
}

// UpdateSubConnState is not used: each SubConn has a state listener.
func (b *grpcBalancer) UpdateSubConnState(grpcbalancer.SubConn, grpcbalancer.SubConnState) {}

func (b *grpcBalancer) ExitIdle() {
	for _, c := range b.subConns {
		if c.state == connectivity.Idle {
			c.sc.Connect()
		}
	}
}

// Close shuts the SubConns down; the connection is idle (or closed) and
// calls must wake it.
func (b *grpcBalancer) Close() {
	for _, c := range b.subConns {
		c.sc.Shutdown()
	}
	b.subConns = nil
	if b.gc != nil {
		b.gc.setReadiness(&readiness{idle: true})
	}
}

// grpcPicker routes each attempt to the ready SubConn of the endpoint
// the engine chose for it. It is immutable.
type grpcPicker struct {
	ready map[string]grpcbalancer.SubConn
}

func (p *grpcPicker) Pick(info grpcbalancer.PickInfo) (grpcbalancer.PickResult, error) {
	id, _ := info.Ctx.Value(endpointKey{}).(string)
	if sc, ok := p.ready[id]; ok {
		return grpcbalancer.PickResult{SubConn: sc}, nil
	}
	return grpcbalancer.PickResult{}, status.Error(codes.Unavailable, notReadyMessage)
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
