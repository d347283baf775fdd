package telemetry

import "github.com/weftmesh/weft/internal/calltel"

// The mesh's own attribute keys, added to the semantic-convention ones.
const (
	// ServiceKey is the destination service of a client call (the name
	// given to discovery).
	ServiceKey = calltel.ServiceKey
	// EndpointKey is the ID of the endpoint an attempt was sent to.
	EndpointKey = calltel.EndpointKey
	// PolicyKey is the balancing policy of the destination service.
	PolicyKey = calltel.PolicyKey
	// AttemptKey is the number of an attempt within its call, from 1.
	AttemptKey = calltel.AttemptKey
	// RetryKey is true on attempts that retry an earlier one.
	RetryKey = calltel.RetryKey
	// HedgeKey is true on attempts sent as hedges, alongside an earlier
	// attempt still in flight.
	HedgeKey = calltel.HedgeKey
	// BreakerStateKey is the circuit breaker state of the endpoint when an
	// attempt was admitted ("closed", "half-open", "open").
	BreakerStateKey = calltel.BreakerStateKey
	// PeerIDKey is the verified SPIFFE ID of the caller, on server spans.
	PeerIDKey = calltel.PeerIDKey
	// AuthzDecisionKey is the authorization decision on the caller
	// ("allow" or "deny").
	AuthzDecisionKey = calltel.AuthzDecisionKey
	// EndpointStateKey is "known" or "ejected" on weft.endpoints.
	EndpointStateKey = calltel.EndpointStateKey
	// RejectReasonKey is why a request was refused: one of the
	// [RejectReason] values.
	RejectReasonKey = calltel.RejectReasonKey
	// SideKey is "client" or "server".
	SideKey = calltel.SideKey
	// RouteSourceKey names the source of a refused route update on
	// weft.route.rejections ("static", "file:/etc/weft/routes.yaml").
	RouteSourceKey = calltel.RouteSourceKey
	// SubsetKey names the route subset of a destination's own breakers
	// on their state changes (empty for a destination of every endpoint).
	SubsetKey = calltel.SubsetKey
	// BreakerSetKey is "destination" on the state changes of a route
	// destination's own breakers (its traffic policy's breaker block).
	BreakerSetKey = calltel.BreakerSetKey
)

// Redact returns the text of err with anything that may carry a secret
// (URL query strings, bearer and basic credentials, token=, key= and
// Authorization: values, PEM private keys) replaced by "REDACTED". Weft
// passes every error text through it before it reaches a span or a log.
func Redact(err error) string { return calltel.Redact(err) }
