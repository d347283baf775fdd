package telemetry

import (
	"context"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/internal/calltel"
)

// The recorders below are how the rest of the mesh reports its state and
// events: mesh calls them from its discovery, balancer, breaker, limiter
// and identity hooks. Each one is a no-op on a nil *Telemetry. Events go
// to the span in ctx (when it is recording) as span events, and to the
// logger of [WithLogger] as structured records. Error texts pass through
// [Redact] first.

// RejectReason says why a request was refused before it was sent or
// served: one of the constants below; any other value is recorded as
// "_OTHER".
type RejectReason = calltel.RejectReason

// The reasons a request can be refused.
const (
	// RateLimited: a rate limit had no token for it.
	RateLimited = calltel.RateLimited
	// ConcurrencyLimited: too many requests were in flight.
	ConcurrencyLimited = calltel.ConcurrencyLimited
	// Shed: load shedding dropped it.
	Shed = calltel.Shed
	// CircuitOpen: every eligible endpoint's circuit breaker was open.
	CircuitOpen = calltel.CircuitOpen
)

// Side says whether an event happened on the client or the server side
// of a call: [Client] or [Server].
type Side = calltel.Side

// The sides of a call.
const (
	Client = calltel.Client
	Server = calltel.Server
)

// EndpointCounts records how many endpoints of service are known and how
// many of them are ejected (weft.endpoints).
func (t *Telemetry) EndpointCounts(service string, known, ejected int) {
	t.recorder().EndpointCounts(service, known, ejected)
}

// Ejected records that outlier detection ejected endpoint of service for
// d (weft.endpoint.ejections, event "weft.endpoint.ejected").
func (t *Telemetry) Ejected(ctx context.Context, service, endpoint string, d time.Duration) {
	t.recorder().Ejected(ctx, service, endpoint, d)
}

// Restored records that an ejected endpoint of service is back in
// rotation (event "weft.endpoint.restored").
func (t *Telemetry) Restored(ctx context.Context, service, endpoint string) {
	t.recorder().Restored(ctx, service, endpoint)
}

// BreakerChanged records a circuit breaker state change of endpoint of
// service, from one of "closed", "half-open", "open" to another
// (weft.breaker.transitions by state entered, event
// "weft.breaker.state_change").
func (t *Telemetry) BreakerChanged(ctx context.Context, service, endpoint, from, to string) {
	t.recorder().BreakerChanged(ctx, service, endpoint, from, to)
}

// RetryBudgetExhausted records a retry of a call to service that was not
// made because the retry budget was spent (weft.retry.budget_exhausted,
// event "weft.retry.budget_exhausted" on the call's span).
func (t *Telemetry) RetryBudgetExhausted(ctx context.Context, service string) {
	t.recorder().RetryBudgetExhausted(ctx, service)
}

// Rejected records a request refused on side for reason
// (weft.request.rejections). service is the destination service on the
// client side; on the server side it may be "" (not recorded).
func (t *Telemetry) Rejected(ctx context.Context, side Side, service string, reason RejectReason) {
	t.recorder().Rejected(ctx, side, service, reason)
}

// AuthorizationDenied records that authorization refused peer (a SPIFFE
// ID, or "" when the peer presented none) on side
// (weft.authorization.denials, event "weft.authorization.denied"). The
// peer's ID is logged and put on the span, never on the metric.
func (t *Telemetry) AuthorizationDenied(ctx context.Context, side Side, peer string, err error) {
	t.recorder().AuthorizationDenied(ctx, side, peer, err)
}

// CertificateRotated records the X.509-SVID now in use for id and its
// expiry (weft.certificate.expiry_timestamp, event "weft.certificate.rotated").
// Only the ID and the expiry are recorded, never key material.
func (t *Telemetry) CertificateRotated(ctx context.Context, id string, notAfter time.Time) {
	t.recorder().CertificateRotated(ctx, id, notAfter)
}

// ObserveSVIDs makes weft.certificate.expiry_timestamp report the expiry of the
// SVID src holds each time metrics are collected, and logs a
// "weft.certificate.rotated" event when it has changed since the last
// collection. stop ends the observation. A nil t or src is ignored.
func (t *Telemetry) ObserveSVIDs(src x509svid.Source) (stop func()) {
	return t.recorder().ObserveSVIDs(src)
}

// DiscoveryError records an error discovery reported for service
// (weft.discovery.errors, event "weft.discovery.error"), its text
// redacted.
func (t *Telemetry) DiscoveryError(ctx context.Context, service string, err error) {
	t.recorder().DiscoveryError(ctx, service, err)
}

// RouteRejected records an update of route tables (package route) that
// source refused, its table left as it was (weft.route.rejections by
// weft.route.source, event "weft.route.rejected" with the reason
// redacted). mesh.ReportRouteRejections calls it.
func (t *Telemetry) RouteRejected(ctx context.Context, source string, err error) {
	t.recorder().RouteRejected(ctx, source, err)
}
