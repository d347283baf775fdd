package calltel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The mesh's own attribute keys, added to the semantic-convention ones;
// package telemetry exports and documents each.
const (
	ServiceKey       = attribute.Key("weft.service")
	EndpointKey      = attribute.Key("weft.endpoint")
	PolicyKey        = attribute.Key("weft.balancer.policy")
	AttemptKey       = attribute.Key("weft.attempt")
	RetryKey         = attribute.Key("weft.retry")
	HedgeKey         = attribute.Key("weft.hedge")
	BreakerStateKey  = attribute.Key("weft.breaker.state")
	PeerIDKey        = attribute.Key("weft.peer.spiffe_id")
	AuthzDecisionKey = attribute.Key("weft.authorization.decision")
	EndpointStateKey = attribute.Key("weft.endpoint.state")
	RejectReasonKey  = attribute.Key("weft.reject.reason")
	SideKey          = attribute.Key("weft.side")
	RouteSourceKey   = attribute.Key("weft.route.source")
	SubsetKey        = attribute.Key("weft.subset")
	BreakerSetKey    = attribute.Key("weft.breaker.set")
)

// other is the value the semantic conventions use for anything outside a
// known set (methods, routes, error types).
const other = "_OTHER"

// httpMethods are the HTTP methods of RFC 9110 and RFC 5789, the only ones
// used as attribute values; index 0 is "_OTHER".
var httpMethods = [...]string{other, http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace, http.MethodPatch}

// methodIndex returns the index in httpMethods of m, 0 if m is unknown.
func methodIndex(m string) uint8 {
	switch m {
	case "", http.MethodGet:
		return 1
	case http.MethodHead:
		return 2
	case http.MethodPost:
		return 3
	case http.MethodPut:
		return 4
	case http.MethodDelete:
		return 5
	case http.MethodConnect:
		return 6
	case http.MethodOptions:
		return 7
	case http.MethodTrace:
		return 8
	case http.MethodPatch:
		return 9
	}
	return 0
}

// grpcCodes are the gRPC status codes as the semantic conventions spell
// them (rpc.response.status_code).
var grpcCodes = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

func grpcCodeName(c codes.Code) string {
	if int(c) < len(grpcCodes) {
		return grpcCodes[c]
	}
	return other
}

// grpcCode returns the status code of err, as gRPC reports it.
func grpcCode(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := status.FromError(err); ok {
		return s.Code()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	}
	return codes.Unknown
}

// HandshakeError is a TLS handshake that failed, however it failed (an
// alert from the peer, a certificate check, an authorizer's refusal):
// mesh wraps the errors of its client handshakes in it, and it is
// recorded as error.type "tls" (unless the handshake ran out of time or
// was cancelled).
type HandshakeError struct{ Err error }

func (e *HandshakeError) Error() string { return "tls handshake: " + e.Err.Error() }

// Unwrap returns the handshake's error.
func (e *HandshakeError) Unwrap() error { return e.Err }

// errorType classifies a transport error into a small fixed set, the
// error.type attribute. It never looks at the error's text.
func errorType(err error) string {
	var (
		netErr  net.Error
		opErr   *net.OpError
		recErr  tls.RecordHeaderError
		alert   tls.AlertError
		certErr *tls.CertificateVerificationError
		unkAuth x509.UnknownAuthorityError
		hsErr   *HandshakeError
	)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.As(err, &hsErr), errors.As(err, &certErr), errors.As(err, &unkAuth), errors.As(err, &alert), errors.As(err, &recErr):
		return "tls"
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		// crypto/tls reports an alert from the peer (it refused the
		// handshake or our certificate) as a "remote error".
		return "tls"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.As(err, &opErr):
		return "connection"
	}
	return other
}

// statusString returns the decimal form of an HTTP status code, without
// allocating for the usual ones.
func statusString(code int) string {
	if code >= 100 && code < 600 {
		return statusStrings[code-100]
	}
	return strconv.Itoa(code)
}

var statusStrings = func() (s [500]string) {
	for i := range s {
		s[i] = strconv.Itoa(i + 100)
	}
	return s
}()

// secretPatterns match the secret-bearing parts of an error text, applied
// in this order so that an earlier match cannot hide a later secret: PEM
// private keys, "Key: value" headers of credential-like keys (to the end
// of the line), key=value parameters, bearer and basic credentials, URL
// query strings.
var secretPatterns = []*regexp.Regexp{
	regexp.MustCompile(`-----BEGIN[^-]*PRIVATE KEY-----[^-]*(-----END[^-]*PRIVATE KEY-----)?`),
	regexp.MustCompile(`(?i)[\w.-]*(token|secret|password|passwd|api[_-]?key|authorization|cookie)[\w.-]*"?\s*:\s*"?[^\r\n"]*`),
	regexp.MustCompile(`(?i)[\w.-]*(token|secret|password|passwd|api[_-]?key|authorization|cookie)[\w.-]*\s*=\s*((bearer|basic|token)\s+)*[^\s"',&]+`),
	regexp.MustCompile(`(?i)\b(bearer|basic|token)\s+((bearer|basic|token)\s+)*[^\s"',]+`),
	regexp.MustCompile(`\?[^\s"']*`),
}

// Redact is package telemetry's Redact: the text of err with anything
// that may carry a secret replaced by "REDACTED".
func Redact(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	for _, p := range secretPatterns {
		s = p.ReplaceAllString(s, "REDACTED")
	}
	return s
}

// boundedSet keeps up to max distinct strings; further strings are
// reported as "_OTHER". Lookups of kept strings take no lock.
type boundedSet struct {
	max  int
	mu   sync.Mutex
	seen atomic.Pointer[map[string]string]
}

func newBoundedSet(max int) *boundedSet {
	b := &boundedSet{max: max}
	m := map[string]string{}
	b.seen.Store(&m)
	return b
}

// get returns s if it is kept (or could be kept), else "_OTHER".
func (b *boundedSet) get(s string) string {
	if v, ok := (*b.seen.Load())[s]; ok {
		return v
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := *b.seen.Load()
	if v, ok := old[s]; ok {
		return v
	}
	if len(old) >= b.max {
		return other
	}
	next := make(map[string]string, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[s] = s
	b.seen.Store(&next)
	return s
}

// cowMap is a copy-on-write map: lock-free, allocation-free reads, for
// the few values (precomputed attribute sets) that are built once and
// read on every call.
//
// With a limit above zero, values beyond limit are built on every get
// instead of kept, so keys that churn (endpoints) cannot grow it without
// bound.
type cowMap[K comparable, V any] struct {
	limit int
	mu    sync.Mutex
	m     atomic.Pointer[map[K]V]
}

func (c *cowMap[K, V]) get(k K, build func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var old map[K]V
	if m := c.m.Load(); m != nil {
		old = *m
		if v, ok := old[k]; ok {
			return v
		}
	}
	v := build()
	if c.limit > 0 && len(old) >= c.limit {
		return v
	}
	next := make(map[K]V, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[k] = v
	c.m.Store(&next)
	return v
}

// routeName identifies the span name of a method and a route
// ("GET /users/{id}").
type routeName struct {
	method uint8
	route  string
}

// attrBuf holds the attributes of a recording span until they are given
// to it at once. The SDK copies them, so the buffer goes back to
// attrBufs for the next span instead of being allocated per span.
type attrBuf [16]attribute.KeyValue

var attrBufs = sync.Pool{New: func() any { return new(attrBuf) }}

func getAttrBuf() *attrBuf { return attrBufs.Get().(*attrBuf) }

// put clears b (its strings are the span's) and returns it to attrBufs;
// it returns nil, for the holder to forget b.
func (b *attrBuf) put() *attrBuf {
	clear(b[:])
	attrBufs.Put(b)
	return nil
}

// semconv keys used here, named once.
var (
	keyHTTPMethod     = semconv.HTTPRequestMethodKey
	keyHTTPMethodOrig = semconv.HTTPRequestMethodOriginalKey
	keyHTTPStatus     = semconv.HTTPResponseStatusCodeKey
	keyHTTPRoute      = semconv.HTTPRouteKey
	keyHTTPResend     = semconv.HTTPRequestResendCountKey
	keyURLTemplate    = semconv.URLTemplateKey
	keyURLScheme      = semconv.URLSchemeKey
	keyURLPath        = semconv.URLPathKey
	keyURLFull        = semconv.URLFullKey
	keyServerAddr     = semconv.ServerAddressKey
	keyServerPort     = semconv.ServerPortKey
	keyPeerAddr       = semconv.NetworkPeerAddressKey
	keyErrorType      = semconv.ErrorTypeKey
	keyRPCSystem      = semconv.RPCSystemNameKey
	keyRPCMethod      = semconv.RPCMethodKey
	keyRPCMethodOrig  = semconv.RPCMethodOriginalKey
	keyRPCStatus      = semconv.RPCResponseStatusCodeKey
)

// rpcSystemGRPC is rpc.system.name="grpc".
var rpcSystemGRPC = keyRPCSystem.String("grpc")

// headerCarrier is [propagation.HeaderCarrier] without the key
// canonicalization on every Get and Set for the keys of the default
// propagators (traceparent, tracestate, baggage).
type headerCarrier http.Header

func canonicalKey(key string) string {
	switch key {
	case "traceparent":
		return "Traceparent"
	case "tracestate":
		return "Tracestate"
	case "baggage":
		return "Baggage"
	}
	return http.CanonicalHeaderKey(key)
}

func (c headerCarrier) Get(key string) string {
	if v := c[canonicalKey(key)]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[canonicalKey(key)] = []string{value} }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
