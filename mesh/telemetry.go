package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"unicode"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/calltel"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// WithTelemetry records the calls of a client or server with t: spans and
// RED metrics for every HTTP request and gRPC call (a call span with one
// child span per attempt on clients, a server span continuing the
// caller's trace on servers), and mesh events — breaker state changes,
// outlier ejections (with an [balancer.Outlier] policy), discovery
// errors, endpoint counts, rate-limit and shed rejections,
// authorization denials, certificate expiry — as metrics, span events and
// log records (see package telemetry). Without it nothing is recorded and
// the call path allocates nothing for telemetry. A nil t is ignored.
func WithTelemetry(t *telemetry.Telemetry) Option {
	return sharedOption{
		client: func(c *clientConfig) {
			if t != nil {
				c.telemetry = t
			}
		},
		server: func(c *serverConfig) {
			if t != nil {
				c.telemetry = t
			}
		},
	}
}

// destination returns the telemetry of calls to service, nil without
// telemetry. Calls have a span of their own, above their attempts' spans,
// when the client may retry or hedge them.
func (c *Client) destination(service string, policy balancer.Policy) *calltel.Destination {
	rc := &c.cfg.resilience
	return calltel.Of(c.cfg.telemetry).Destination(service, policyName(policy), rc.retry != nil || rc.hedge != nil)
}

// policyName is the name of a balancing policy as recorded in
// weft.balancer.policy: the type name in snake case ("round_robin") of
// the policy that picks, inside any wrappers (Outlier, Subset,
// ZoneAware) that only narrow its choice.
func policyName(p balancer.Policy) string {
	for {
		w, ok := p.(interface{ Unwrap() balancer.Policy })
		if !ok || w.Unwrap() == nil {
			break
		}
		p = w.Unwrap()
	}
	if p == nil {
		return "round_robin"
	}
	name := fmt.Sprintf("%T", p)
	if i := strings.LastIndexByte(name, '.'); i >= 0 {
		name = name[i+1:]
	}
	var b strings.Builder
	for i, r := range name {
		if unicode.IsUpper(r) {
			if i > 0 {
				b.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// observeCluster subscribes the telemetry of cl's destination to its
// breakers' state changes, until cl is stopped.
func (c *Client) observeCluster(cl *cluster) {
	t := c.cfg.telemetry
	if t == nil || cl.guard == nil || cl.guard.breakers == nil {
		return
	}
	cancel := cl.guard.breakers.Subscribe(func(sc breaker.StateChange) {
		t.BreakerChanged(context.Background(), sc.Service, sc.Name, sc.From.String(), sc.To.String())
	})
	stop := cl.stop
	cl.stop = func() {
		cancel()
		stop()
	}
}

// observeUpdate records a discovery update of service: the endpoint
// counts (ejected ones as b knows them), or the error.
func observeUpdate(t *calltel.Telemetry, service string, u discovery.Update, b *balancer.Balancer) {
	if t == nil {
		return
	}
	if u.Err != nil {
		t.DiscoveryError(context.Background(), service, u.Err)
		return
	}
	t.EndpointCounts(service, len(u.Endpoints), ejectedCount(b))
}

// ejectionHook returns the balancer options that record the outlier
// ejections of service with t — the event, and the endpoint counts as
// they stand — reading the balancer through b when one happens; none
// without telemetry.
func ejectionHook(t *telemetry.Telemetry, service string, b **balancer.Balancer) []balancer.Option {
	if t == nil {
		return nil
	}
	return []balancer.Option{balancer.WithEjectionHook(func(e balancer.Ejection) {
		t.Ejected(context.Background(), service, e.ID, e.Duration)
		t.EndpointCounts(service, len((*b).Endpoints()), ejectedCount(*b))
	})}
}

// ejectedCount counts the endpoints of b that outlier detection has
// ejected now.
func ejectedCount(b *balancer.Balancer) int {
	n := 0
	for _, e := range b.Endpoints() {
		if e.Load.Ejected() {
			n++
		}
	}
	return n
}

// observeAuthorizer returns authorize, counting and logging the peers it
// refuses on side; authorize itself without telemetry.
func observeAuthorizer(t *telemetry.Telemetry, side telemetry.Side, authorize tlsid.Authorizer) tlsid.Authorizer {
	if t == nil || authorize == nil {
		return authorize
	}
	return func(id spiffeid.ID) error {
		err := authorize(id)
		if err != nil {
			t.AuthorizationDenied(context.Background(), side, id.String(), err)
		}
		return err
	}
}

// observeIdentity reports the expiry of src's SVIDs through t until
// the returned stop is called.
func observeIdentity(t *telemetry.Telemetry, src tlsid.Source) (stop func()) {
	if t == nil || src == nil {
		return func() {}
	}
	return t.ObserveSVIDs(src)
}

// observeRejection records a call the client refused to make.
func observeRejection(d *calltel.Destination, ctx context.Context, err error) {
	if err == nil {
		return
	}
	t := d.Telemetry()
	switch {
	case errors.Is(err, ErrRateLimited):
		t.Rejected(ctx, telemetry.Client, d.Service(), telemetry.RateLimited)
	case errors.Is(err, ErrCircuitOpen):
		t.Rejected(ctx, telemetry.Client, d.Service(), telemetry.CircuitOpen)
	case errors.Is(err, ErrOverflow):
		t.Rejected(ctx, telemetry.Client, d.Service(), telemetry.ConcurrencyLimited)
	}
}

// startAttempt starts the telemetry of an attempt of call to ep — the
// endpoint and the state of its breaker in set (the call's) recorded on
// the attempt's span — or
// returns nil without telemetry. r is the attempt's HTTP request, nil
// for gRPC. The context returned carries the attempt's span.
func (cl *cluster) startAttempt(call *calltel.Call, ctx context.Context, r *http.Request, ep *balancer.Endpoint, set *breaker.Set) (context.Context, *calltel.Attempt) {
	if call == nil {
		return ctx, nil
	}
	ctx, att := call.StartAttempt(ctx, r)
	att.SetEndpoint(ep.ID, ep.Addr)
	if s := breakerState(set, ep); s != "" {
		att.SetBreakerState(s)
	}
	return ctx, att
}

// telemetryGRPCServerOptions returns the interceptors that record served
// gRPC calls, none without telemetry. They come first, so calls refused
// by access policies or limits are recorded too.
func telemetryGRPCServerOptions(c *serverConfig) []grpc.ServerOption {
	t := c.telemetry
	if t == nil {
		return nil
	}
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor(PeerID)),
		grpc.ChainStreamInterceptor(t.StreamServerInterceptor(PeerID)),
	}
}
