package calltel

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// The recorders below are how the rest of the mesh reports its state and
// events: mesh calls them from its discovery, balancer, breaker, limiter
// and identity hooks. Each one is a no-op on a nil *Telemetry. Events go
// to the span in ctx (when it is recording) as span events, and to the
// logger of Config.Logger as structured records. Error texts pass through
// [Redact] first.

// RejectReason says why a request was refused before it was sent or
// served.
type RejectReason string

// The reasons a request can be refused.
const (
	// RateLimited: a rate limit had no token for it.
	RateLimited RejectReason = "rate_limit"
	// ConcurrencyLimited: too many requests were in flight.
	ConcurrencyLimited RejectReason = "concurrency_limit"
	// Shed: load shedding dropped it.
	Shed RejectReason = "shed"
	// CircuitOpen: every eligible endpoint's circuit breaker was open.
	CircuitOpen RejectReason = "circuit_open"
)

func (r RejectReason) bounded() string {
	switch r {
	case RateLimited, ConcurrencyLimited, Shed, CircuitOpen:
		return string(r)
	}
	return other
}

// Side says whether an event happened on the client or the server side
// of a call.
type Side string

// The sides of a call.
const (
	Client Side = "client"
	Server Side = "server"
)

func (s Side) bounded() string {
	if s == Client || s == Server {
		return string(s)
	}
	return other
}

// event adds a span event to the recording span of ctx, if any, and logs
// the same facts at level.
func (t *Telemetry) event(ctx context.Context, level slog.Level, name string, attrs ...attribute.KeyValue) {
	if ctx == nil {
		ctx = context.Background()
	}
	spanEvent(ctx, name, attrs)
	if !t.log.Enabled(ctx, level) {
		return
	}
	args := make([]slog.Attr, 0, len(attrs))
	for _, kv := range attrs {
		args = append(args, slog.Any(string(kv.Key), kv.Value.AsInterface()))
	}
	t.log.LogAttrs(ctx, level, name, args...)
}

// spanEvent adds a span event to the recording span of ctx, if any.
func spanEvent(ctx context.Context, name string, attrs []attribute.KeyValue) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(name, trace.WithAttributes(attrs...))
	}
}

func set(kv ...attribute.KeyValue) metric.MeasurementOption {
	return metric.WithAttributeSet(attribute.NewSet(kv...))
}

// EndpointCounts records how many endpoints of service are known and how
// many of them are ejected (weft.endpoints).
func (t *Telemetry) EndpointCounts(service string, known, ejected int) {
	if t == nil {
		return
	}
	ctx := context.Background()
	t.inst.endpoints.Record(ctx, int64(known), set(ServiceKey.String(service), EndpointStateKey.String("known")))
	t.inst.endpoints.Record(ctx, int64(ejected), set(ServiceKey.String(service), EndpointStateKey.String("ejected")))
}

// Ejected records that outlier detection ejected endpoint of service for
// d (weft.endpoint.ejections, event "weft.endpoint.ejected").
func (t *Telemetry) Ejected(ctx context.Context, service, endpoint string, d time.Duration) {
	if t == nil {
		return
	}
	t.inst.ejections.Add(context.Background(), 1, set(ServiceKey.String(service)))
	t.event(ctx, slog.LevelWarn, "weft.endpoint.ejected", ServiceKey.String(service), EndpointKey.String(endpoint),
		attribute.Float64("weft.ejection.seconds", d.Seconds()))
}

// Restored records that an ejected endpoint of service is back in
// rotation (event "weft.endpoint.restored").
func (t *Telemetry) Restored(ctx context.Context, service, endpoint string) {
	if t == nil {
		return
	}
	t.event(ctx, slog.LevelInfo, "weft.endpoint.restored", ServiceKey.String(service), EndpointKey.String(endpoint))
}

// BreakerChanged records a circuit breaker state change of endpoint of
// service, from one of "closed", "half-open", "open" to another
// (weft.breaker.transitions by state entered, event
// "weft.breaker.state_change").
func (t *Telemetry) BreakerChanged(ctx context.Context, service, endpoint, from, to string) {
	t.breakerChanged(ctx, service, endpoint, from, to, nil)
}

// DestinationBreakerChanged is [Telemetry.BreakerChanged] for a breaker
// of a route destination's own set (its traffic policy's breaker block):
// the metric and the event carry weft.subset (empty for the destination
// of every endpoint), and the event weft.breaker.set "destination".
func (t *Telemetry) DestinationBreakerChanged(ctx context.Context, service, subset, endpoint, from, to string) {
	t.breakerChanged(ctx, service, endpoint, from, to, []attribute.KeyValue{SubsetKey.String(subset), BreakerSetKey.String("destination")})
}

func (t *Telemetry) breakerChanged(ctx context.Context, service, endpoint, from, to string, extra []attribute.KeyValue) {
	if t == nil {
		return
	}
	to = breakerState(to)
	if len(extra) == 0 {
		t.inst.breakerChanges.Add(context.Background(), 1, set(ServiceKey.String(service), BreakerStateKey.String(to)))
	} else {
		t.inst.breakerChanges.Add(context.Background(), 1, set(ServiceKey.String(service), BreakerStateKey.String(to), extra[0]))
	}
	level := slog.LevelInfo
	if to == "open" {
		level = slog.LevelWarn
	}
	attrs := append([]attribute.KeyValue{ServiceKey.String(service), EndpointKey.String(endpoint),
		attribute.String("weft.breaker.from", breakerState(from)), BreakerStateKey.String(to)}, extra...)
	t.event(ctx, level, "weft.breaker.state_change", attrs...)
}

// RetryBudgetExhausted records a retry of a call to service that was not
// made because the retry budget was spent (weft.retry.budget_exhausted,
// event "weft.retry.budget_exhausted" on the call's span).
func (t *Telemetry) RetryBudgetExhausted(ctx context.Context, service string) {
	if t == nil {
		return
	}
	t.inst.retryExhausted.Add(context.Background(), 1, set(ServiceKey.String(service)))
	t.event(ctx, slog.LevelDebug, "weft.retry.budget_exhausted", ServiceKey.String(service))
}

// Rejected records a request refused on side for reason
// (weft.request.rejections). service is the destination service on the
// client side; on the server side it may be "" (not recorded).
func (t *Telemetry) Rejected(ctx context.Context, side Side, service string, reason RejectReason) {
	if t == nil {
		return
	}
	var buf [3]attribute.KeyValue
	kv := append(buf[:0], SideKey.String(side.bounded()), RejectReasonKey.String(reason.bounded()))
	if service != "" {
		kv = append(kv, ServiceKey.String(service))
	}
	t.inst.rejections.Add(context.Background(), 1, set(kv...))
	t.event(ctx, slog.LevelDebug, "weft.request.rejected", kv...)
}

// AuthorizationDenied records that authorization refused peer (a SPIFFE
// ID, or "" when the peer presented none) on side
// (weft.authorization.denials, event "weft.authorization.denied"). The
// peer's ID is logged and put on the span, never on the metric.
func (t *Telemetry) AuthorizationDenied(ctx context.Context, side Side, peer string, err error) {
	t.denied(ctx, side, peer, err, true)
}

// AuthorizationDeniedLogged is [Telemetry.AuthorizationDenied] for a
// caller that logs the denial itself (mesh's access policies do): the
// metric and the span event, no log record, so that a denial is logged
// once.
func (t *Telemetry) AuthorizationDeniedLogged(ctx context.Context, side Side, peer string, err error) {
	t.denied(ctx, side, peer, err, false)
}

func (t *Telemetry) denied(ctx context.Context, side Side, peer string, err error, log bool) {
	if t == nil {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	t.inst.authzDenials.Add(context.Background(), 1, set(SideKey.String(side.bounded())))
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(AuthzDecisionKey.String("deny"))
	}
	attrs := []attribute.KeyValue{SideKey.String(side.bounded()), PeerIDKey.String(peer),
		AuthzDecisionKey.String("deny"), attribute.String("error.message", Redact(err))}
	if !log {
		spanEvent(ctx, "weft.authorization.denied", attrs)
		return
	}
	t.event(ctx, slog.LevelWarn, "weft.authorization.denied", attrs...)
}

// CertificateRotated records the X.509-SVID now in use for id and its
// expiry (weft.certificate.expiry_timestamp, event "weft.certificate.rotated").
// Only the ID and the expiry are recorded, never key material.
func (t *Telemetry) CertificateRotated(ctx context.Context, id string, notAfter time.Time) {
	if t == nil {
		return
	}
	t.certs.mu.Lock()
	t.certs.set(id, notAfter.Unix())
	t.certs.mu.Unlock()
	t.rotated(ctx, id, notAfter)
}

func (t *Telemetry) rotated(ctx context.Context, id string, notAfter time.Time) {
	t.event(ctx, slog.LevelInfo, "weft.certificate.rotated", attribute.String("weft.spiffe_id", id),
		attribute.String("weft.certificate.not_after", notAfter.UTC().Format(time.RFC3339)))
}

// ObserveSVIDs makes weft.certificate.expiry_timestamp report the expiry of the
// SVID src holds each time metrics are collected, and logs a
// "weft.certificate.rotated" event when it has changed since the last
// collection. stop ends the observation. A nil t or src is ignored.
func (t *Telemetry) ObserveSVIDs(src x509svid.Source) (stop func()) {
	if t == nil || src == nil {
		return func() {}
	}
	t.certs.mu.Lock()
	defer t.certs.mu.Unlock()
	o := &svidObserver{src: src}
	t.certs.sources = append(t.certs.sources, o)
	return func() {
		t.certs.mu.Lock()
		defer t.certs.mu.Unlock()
		t.certs.sources = slices.DeleteFunc(t.certs.sources, func(x *svidObserver) bool { return x == o })
	}
}

type svidObserver struct {
	src  x509svid.Source
	last int64
}

// certificates is the expiry of every SVID t knows of, by SPIFFE ID.
type certificates struct {
	mu      sync.Mutex
	sources []*svidObserver
	expiry  map[string]int64
}

func (c *certificates) set(id string, unix int64) {
	if c.expiry == nil {
		c.expiry = make(map[string]int64)
	}
	c.expiry[id] = unix
}

func (c *certificates) observe(t *Telemetry) metric.Callback {
	return func(_ context.Context, o metric.Observer) error {
		type rotation struct {
			id       string
			notAfter time.Time
		}
		var rotations []rotation
		c.mu.Lock()
		for _, s := range c.sources {
			svid, err := s.src.GetX509SVID()
			if err != nil || len(svid.Certificates) == 0 {
				continue
			}
			na := svid.Certificates[0].NotAfter
			if s.last != 0 && s.last != na.Unix() {
				rotations = append(rotations, rotation{svid.ID.String(), na})
			}
			s.last = na.Unix()
			c.set(svid.ID.String(), na.Unix())
		}
		for id, unix := range c.expiry {
			o.ObserveInt64(t.inst.certExpiry, unix, metric.WithAttributes(attribute.String("weft.spiffe_id", id)))
		}
		c.mu.Unlock()
		for _, r := range rotations {
			t.rotated(context.Background(), r.id, r.notAfter)
		}
		return nil
	}
}

// DiscoveryError records an error discovery reported for service
// (weft.discovery.errors, event "weft.discovery.error"), its text
// redacted.
func (t *Telemetry) DiscoveryError(ctx context.Context, service string, err error) {
	if t == nil || err == nil {
		return
	}
	t.inst.discoveryErrs.Add(context.Background(), 1, set(ServiceKey.String(service)))
	t.event(ctx, slog.LevelWarn, "weft.discovery.error", ServiceKey.String(service), attribute.String("error.message", Redact(err)))
}

// RouteRejected records an update of route tables that source refused
// (weft.route.rejections, event "weft.route.rejected"), its reason
// redacted.
func (t *Telemetry) RouteRejected(ctx context.Context, source string, err error) {
	if t == nil {
		return
	}
	t.inst.routeRejects.Add(context.Background(), 1, set(RouteSourceKey.String(source)))
	t.event(ctx, slog.LevelWarn, "weft.route.rejected", RouteSourceKey.String(source), attribute.String("error.message", Redact(err)))
}
