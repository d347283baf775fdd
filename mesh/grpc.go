package mesh

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/attributes"
	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/balancer"
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

// setEndpoints takes in a new endpoint set of a cluster, by its key — the dialled
// one, or another that routes send the connection's calls to — and
// passes the union of every cluster's set to the connection's resolver,
// when grpc-go has built one. Each cluster calls it one update at a
// time; pushMu keeps the unions in the order their sets came.
func (gc *grpcConn) setEndpoints(key string, eps []discovery.Endpoint) {
	gc.pushMu.Lock()
	defer gc.pushMu.Unlock()
	gc.mu.Lock()
	if gc.sets == nil {
		gc.sets = make(map[string][]discovery.Endpoint)
	}
	gc.sets[key] = eps
	r := gc.resolver
	n := 0
	for _, set := range gc.sets {
		n += len(set)
	}
	// One endpoint per address: a cluster of a discovery target may hold
	// instances of another cluster of the connection (a subset of the
	// dialled service by filter), whose one SubConn then serves the keys
	// of both.
	type shared struct {
		e    *discovery.Endpoint
		keys []string
	}
	byAddr := make(map[string]*shared, n)
	order := make([]*shared, 0, n)
	for k, set := range gc.sets {
		prefix := gc.keyPrefix(k)
		for i := range set {
			e := &set[i]
			sh := byAddr[e.Addr]
			if sh == nil {
				sh = &shared{e: e}
				byAddr[e.Addr] = sh
				order = append(order, sh)
			}
			sh.keys = append(sh.keys, prefix+e.ID)
		}
	}
	state := resolver.State{Endpoints: make([]resolver.Endpoint, 0, len(order)), Attributes: attributes.New(grpcConnKey{}, gc)}
	for _, sh := range order {
		state.Endpoints = append(state.Endpoints, resolver.Endpoint{
			Addresses:  []resolver.Address{{Addr: sh.e.Addr, Attributes: expectedIdentity(sh.e)}},
			Attributes: attributes.New(endpointIDKey{}, endpointKeys(sh.keys)),
		})
	}
	gc.mu.Unlock()
	if r == nil {
		return
	}
	state.ServiceConfig = r.sc
	_ = r.cc.UpdateState(state)
}

// keyPrefix is what the connection's keys of the endpoints of the
// cluster with key start with: nothing for the dialled service, whose
// keys are the endpoint IDs, and "key/" for another service or a target.
func (gc *grpcConn) keyPrefix(key string) string {
	if key == gc.cl.key {
		return ""
	}
	return key + "/"
}

// grpcConnKey finds the grpcConn of a resolver state.
type grpcConnKey struct{}

// endpointKeys are the connection's keys of one resolver endpoint: its
// discovery ID with the key prefix of each cluster that holds it.
type endpointKeys []string

// Equal lets grpc-go compare attributes holding keys.
func (k endpointKeys) Equal(o any) bool {
	ok, is := o.(endpointKeys)
	return is && slices.Equal(k, ok)
}

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
	gc := r.gc
	gc.mu.Lock()
	if gc.resolver == r {
		gc.resolver = nil
	}
	peers := gc.peers
	gc.peers = nil
	for k := range peers {
		delete(gc.sets, k)
	}
	gc.mu.Unlock()
	for _, p := range peers {
		p.unsubscribe()
	}
}

// grpcBalancerBuilder builds weft's gRPC balancer.
type grpcBalancerBuilder struct{}

func (grpcBalancerBuilder) Name() string { return GRPCBalancerName }

func (grpcBalancerBuilder) Build(cc grpcbalancer.ClientConn, opts grpcbalancer.BuildOptions) grpcbalancer.Balancer {
	b := &grpcBalancer{ClientConn: cc}
	b.Balancer = endpointsharding.NewBalancer(b, opts, grpcbalancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

// grpcBalancer is weft's gRPC load balancer, written for weft's call
// engine. It is a parent of grpc-go's endpoint sharding, as grpc-go's own
// round robin is: one pick_first child, with its SubConn, per endpoint of
// the service, reconnected when it goes idle. It publishes which
// endpoints are ready — to the engine, which picks among them with the
// service's policy, and to grpc-go as a picker that routes each attempt
// to the endpoint the engine chose. It holds no balancing policy of its
// own and never touches the service's balancer, which discovery alone
// feeds.
type grpcBalancer struct {
	grpcbalancer.ClientConn // the channel; UpdateState is intercepted
	grpcbalancer.Balancer   // endpoint sharding
	gc                      atomic.Pointer[grpcConn]
}

func (b *grpcBalancer) UpdateClientConnState(s grpcbalancer.ClientConnState) error {
	gc, _ := s.ResolverState.Attributes.Value(grpcConnKey{}).(*grpcConn)
	if gc == nil {
		return fmt.Errorf("mesh: weft's gRPC balancer serves connections of DialGRPC only: %w", grpcbalancer.ErrBadResolverState)
	}
	b.gc.Store(gc)
	return b.Balancer.UpdateClientConnState(s)
}

// UpdateState takes the state of the endpoint children and publishes it:
// a picker over the ready ones to grpc-go, the readiness to the engine.
func (b *grpcBalancer) UpdateState(state grpcbalancer.State) {
	ready := make(map[string]grpcbalancer.Picker)
	r := &readiness{ready: make(map[string]bool), failed: make(map[string]bool)}
	for _, child := range endpointsharding.ChildStatesFromPicker(state.Picker) {
		keys, _ := child.Endpoint.Attributes.Value(endpointIDKey{}).(endpointKeys)
		switch child.State.ConnectivityState {
		case connectivity.Ready:
			for _, id := range keys {
				ready[id] = child.State.Picker
				r.ready[id] = true
			}
		case connectivity.Idle, connectivity.Connecting:
			r.connecting = true
		case connectivity.TransientFailure:
			for _, id := range keys {
				r.failed[id] = true
			}
			if _, err := child.State.Picker.Pick(grpcbalancer.PickInfo{}); err != nil {
				r.err = err
			}
		}
	}
	b.ClientConn.UpdateState(grpcbalancer.State{ConnectivityState: state.ConnectivityState, Picker: &grpcPicker{ready: ready}})
	if gc := b.gc.Load(); gc != nil {
		gc.setReadiness(r)
	}
}

// Close closes the children; the connection is idle (or closed) and
// calls must wake it.
func (b *grpcBalancer) Close() {
	b.Balancer.Close()
	if gc := b.gc.Load(); gc != nil {
		gc.setReadiness(&readiness{idle: true})
	}
}

// grpcPicker routes each attempt to the ready SubConn of the endpoint
// the engine chose for it. It is immutable.
type grpcPicker struct {
	ready map[string]grpcbalancer.Picker // the pickers of the ready children, by endpoint ID
}

func (p *grpcPicker) Pick(info grpcbalancer.PickInfo) (grpcbalancer.PickResult, error) {
	var key string
	switch v := info.Ctx.Value(endpointKey{}).(type) {
	case *balancer.Endpoint:
		key = v.ID
	case peerEndpointKey:
		key = string(v)
	}
	if child, ok := p.ready[key]; ok {
		return child.Pick(info)
	}
	return grpcbalancer.PickResult{}, status.Error(codes.Unavailable, notReadyMessage)
}

// GRPCServerOptions returns the options that put a gRPC server in the
// mesh: with an identity, TLS 1.3 credentials that require and verify a
// client SVID (the caller's ID is then available through [PeerID]); a
// bound on concurrent streams per connection; a bound on the streams a
// client may reset ([WithStreamResetLimit]); and keepalive enforcement
// against ping floods.
//
// Telemetry, authorization and admission are chained interceptors
// (grpc.ChainUnaryInterceptor, grpc.ChainStreamInterceptor), run in the
// order of the options. Add the application's own interceptors with the
// same options after these, so they run only for calls weft admitted:
// grpc-go runs an interceptor given with grpc.UnaryInterceptor or
// grpc.StreamInterceptor before every chained one, and so before weft's
// checks. grpc-go decodes a unary call's request message before any
// interceptor runs.
func GRPCServerOptions(opts ...ServerOption) ([]grpc.ServerOption, error) {
	cfg, err := newServerConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("mesh: gRPC server options: %w", err)
	}
	out := []grpc.ServerOption{
		grpc.MaxConcurrentStreams(DefaultMaxConcurrentStreams),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
	var creds credentials.TransportCredentials // nil: plaintext
	if cfg.identity != nil {
		tlsConfig, err := tlsid.ServerConfig(cfg.identity, cfg.authorize)
		if err != nil {
			return nil, fmt.Errorf("mesh: gRPC server options: %w", err)
		}
		creds = credentials.NewTLS(tlsConfig)
	}
	out = append(out, grpc.Creds(resetLimitCredentials(creds, cfg.maxResets)))
	out = append(out, telemetryGRPCServerOptions(&cfg)...)
	out = append(out, accessGRPCOptions(&cfg)...)
	out = append(out, protectGRPCOptions(&cfg)...)
	return out, nil
}
