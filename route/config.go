package route

// The declarative form of traffic management: what operators write, in Go
// values, YAML or JSON. Every field is optional unless its doc says
// otherwise; Compile checks the whole tree and turns it into a Table.

// Config is the traffic management of a set of services: what Istio's
// VirtualServices, DestinationRules and ServiceEntries say together.
// A service that is not in Services is called as it would be without a
// route table; the zero Config routes nothing. Configs are plain values:
// [Compile] copies what it keeps, so a Config may be changed or reused
// once compiled, but not while it is being compiled.
type Config struct {
	// Services maps a service name to its routes, subsets and policy.
	Services map[string]*Service `json:"services,omitempty" yaml:"services,omitempty"`
	// External maps a name to a service outside the mesh (Istio's
	// ServiceEntry), which route backends and mirrors may name. Its
	// names may not also be in Services.
	External map[string]*ExternalService `json:"external,omitempty" yaml:"external,omitempty"`
}

// Service is the traffic management of one service.
type Service struct {
	// Protocol is "http", "grpc", or empty for a service called with
	// both. Redirects, direct responses, method and query matches and
	// HTTP aborts are errors on a "grpc" service; gRPC aborts on an
	// "http" one.
	Protocol string `json:"protocol,omitempty" yaml:"protocol,omitempty"`
	// DefaultSubset is the subset of the implicit catch-all route and of
	// backends that name this service without a subset. Empty means
	// every endpoint.
	DefaultSubset string `json:"defaultSubset,omitempty" yaml:"defaultSubset,omitempty"`
	// Subsets maps a subset name to the endpoints it selects.
	Subsets map[string]*Subset `json:"subsets,omitempty" yaml:"subsets,omitempty"`
	// TrafficPolicy applies to every call to the service; a subset's own
	// policy overrides it block by block.
	TrafficPolicy *TrafficPolicy `json:"trafficPolicy,omitempty" yaml:"trafficPolicy,omitempty"`
	// Routes are tried in order; the first that matches a request takes
	// it. A request no route matches goes to DefaultSubset.
	Routes []*Route `json:"routes,omitempty" yaml:"routes,omitempty"`
	// Failover lists, in order, where a call to this service goes when
	// the destination a route chose for it has no healthy endpoint (no
	// passing instance, or every one ejected or behind an open breaker):
	// to the first failover target that has one. A subset's own Failover
	// replaces it for calls to that subset. Consul's service-resolver
	// Failover ("*" here, a subset's name on the subset).
	Failover []*Failover `json:"failover,omitempty" yaml:"failover,omitempty"`
}

// Failover is a failover target: a service, a subset of it and a
// datacenter.
type Failover struct {
	// Service is the target service; empty means the service (or the
	// subset's service) the failover belongs to. It may not be an
	// external service.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Subset is a subset of Service; empty means Service's default
	// subset.
	Subset string `json:"subset,omitempty" yaml:"subset,omitempty"`
	// Datacenter is the Consul datacenter of the target's instances;
	// empty means the caller's own. Endpoints of another datacenter come
	// from a discovery watch of their own, which needs a watcher that
	// watches targets (discovery.TargetWatcher, such as discovery.Consul).
	Datacenter string `json:"datacenter,omitempty" yaml:"datacenter,omitempty"`
}

// Subset selects the endpoints of a service that carry every one of Tags
// and every key/value of Meta, as balancer.MatchTags and
// balancer.MatchMeta do, and that Filter selects. At least one of them
// must be set.
type Subset struct {
	// Tags an endpoint must all carry (discovery.Endpoint.Tags).
	Tags []string `json:"tags,omitempty" yaml:"tags,omitempty"`
	// Meta key/values an endpoint must all have (discovery.Endpoint.Meta).
	Meta map[string]string `json:"meta,omitempty" yaml:"meta,omitempty"`
	// Filter is a Consul filter expression on the instance, such as
	// `Service.Meta.version != "1"`, which the agent evaluates: the
	// subset's endpoints then come from a discovery watch of their own
	// (discovery.Target), which needs a watcher that watches targets
	// (discovery.TargetWatcher, such as discovery.Consul). Tags and
	// Meta, which need no watch of their own, are the better choice where
	// they can say the same.
	Filter string `json:"filter,omitempty" yaml:"filter,omitempty"`
	// OnlyPassing, with Filter, keeps only instances whose checks all
	// pass; without it, instances whose checks warn are kept too, as in
	// Consul's resolver subsets.
	OnlyPassing bool `json:"onlyPassing,omitempty" yaml:"onlyPassing,omitempty"`
	// Failover replaces the service's Failover for calls to this subset.
	Failover []*Failover `json:"failover,omitempty" yaml:"failover,omitempty"`
	// TrafficPolicy overrides the service's, block by block, for calls
	// a route sends to this subset.
	TrafficPolicy *TrafficPolicy `json:"trafficPolicy,omitempty" yaml:"trafficPolicy,omitempty"`
}

// TrafficPolicy is how calls to a destination are balanced and guarded:
// DestinationRule's trafficPolicy. A nil block leaves the caller's
// default in place.
type TrafficPolicy struct {
	// LoadBalancer chooses the balancer policy.
	LoadBalancer *LoadBalancer `json:"loadBalancer,omitempty" yaml:"loadBalancer,omitempty"`
	// Outlier sets outlier detection (ejection of failing endpoints).
	Outlier *OutlierDetection `json:"outlierDetection,omitempty" yaml:"outlierDetection,omitempty"`
	// Breaker sets the circuit breaker of each endpoint.
	Breaker *Breaker `json:"breaker,omitempty" yaml:"breaker,omitempty"`
	// Retries is the retry policy of calls whose route sets none.
	Retries *Retry `json:"retries,omitempty" yaml:"retries,omitempty"`
	// ConnectionPool bounds the calls in flight to the destination.
	ConnectionPool *ConnectionPool `json:"connectionPool,omitempty" yaml:"connectionPool,omitempty"`
}

// ConnectionPool bounds the calls a client has in flight to one
// destination (a service, or a subset a route sends to), as the
// connectionPool of Istio's DestinationRule and Envoy's circuit-breaker
// thresholds do. A call over a bound is refused at once, before any
// endpoint is picked, so it counts against no endpoint. Zero
// MaxConnections and MaxRequests mean no bound; all fields are ≥ 0.
// ConnectTimeout bounds the client's connects to the service's
// endpoints.
type ConnectionPool struct {
	// ConnectTimeout bounds each TCP connect to an endpoint of the
	// service (tcp.connectTimeout; Envoy's connect_timeout), HTTP and
	// gRPC alike; the TLS handshake that follows has a bound of its own.
	// It is read when a connection is dialled, so a change applies to
	// the next connect, never to calls on open connections. A connection
	// to an endpoint serves every subset the endpoint belongs to, so
	// only the service's own traffic policy sets it: in a subset's policy
	// it is a warning. Zero: the client's default (10 s); when set, > 0.
	ConnectTimeout Duration `json:"connectTimeout,omitempty" yaml:"connectTimeout,omitempty"`

	// MaxConnections bounds the HTTP calls in flight to the destination:
	// each holds an HTTP/1.1 connection of its own, so this is
	// tcp.maxConnections. An HTTP call over it waits for a connection as
	// a pending request. gRPC calls share one HTTP/2 connection per
	// endpoint and are bounded by MaxRequests only.
	MaxConnections int `json:"maxConnections,omitempty" yaml:"maxConnections,omitempty"`
	// MaxPendingRequests is how many HTTP calls may wait for a
	// connection once MaxConnections are in flight
	// (http.http1MaxPendingRequests); a call beyond it is refused. A
	// pending call waits until a connection frees or its context ends.
	// Zero: none waits, unlike Istio's zero (Envoy's default of 1024).
	MaxPendingRequests int `json:"maxPendingRequests,omitempty" yaml:"maxPendingRequests,omitempty"`
	// MaxRequests bounds the calls in flight to the destination, HTTP
	// and gRPC, streams included (http.http2MaxRequests). A call over it
	// is refused at once, as Envoy overflows a request.
	MaxRequests int `json:"maxRequests,omitempty" yaml:"maxRequests,omitempty"`
}

// LoadBalancer names a balancer policy.
type LoadBalancer struct {
	// Policy is one of round_robin, weighted_round_robin, random,
	// weighted_random, least_request, peak_ewma, ring_hash, maglev.
	Policy string `json:"policy" yaml:"policy"`
	// HashHeader, HashCookie or HashQuery is the key of ring_hash and
	// maglev (exactly one of them, and only for those policies): a
	// header's first value, a cookie's value or a query parameter's
	// first value (Istio's consistentHash httpHeaderName, httpCookie.name
	// and httpQueryParameterName). For gRPC the header is the metadata
	// key; gRPC calls have no cookies and no query, so a gRPC call hashes
	// with HashCookie or HashQuery as an HTTP call without the cookie or
	// parameter does: to a random endpoint.
	HashHeader string `json:"hashHeader,omitempty" yaml:"hashHeader,omitempty"`
	HashCookie string `json:"hashCookie,omitempty" yaml:"hashCookie,omitempty"`
	HashQuery  string `json:"hashQuery,omitempty" yaml:"hashQuery,omitempty"`
}

// OutlierDetection ejects failing endpoints (balancer.Outlier). Zero
// fields mean the balancer's defaults.
type OutlierDetection struct {
	// ConsecutiveFailures ejects an endpoint after this many failures in
	// a row (balancer.WithConsecutiveFailures).
	ConsecutiveFailures int `json:"consecutiveFailures,omitempty" yaml:"consecutiveFailures,omitempty"`
	// Interval is how often success rates are compared
	// (balancer.WithInterval).
	Interval Duration `json:"interval,omitempty" yaml:"interval,omitempty"`
	// BaseEjectionTime and MaxEjectionTime bound ejections
	// (balancer.WithEjectionTime).
	BaseEjectionTime Duration `json:"baseEjectionTime,omitempty" yaml:"baseEjectionTime,omitempty"`
	MaxEjectionTime  Duration `json:"maxEjectionTime,omitempty" yaml:"maxEjectionTime,omitempty"`
	// MaxEjectedPercent is the most endpoints ejected at once, 0–100.
	MaxEjectedPercent float64 `json:"maxEjectedPercent,omitempty" yaml:"maxEjectedPercent,omitempty"`
}

// Breaker is the circuit breaker of each endpoint (breaker.Settings).
// Zero fields mean the breaker's defaults.
type Breaker struct {
	// ConsecutiveFailures trips the breaker after this many failures in a
	// row.
	ConsecutiveFailures uint32 `json:"consecutiveFailures,omitempty" yaml:"consecutiveFailures,omitempty"`
	// FailureRatio trips it when this share of the window's calls failed:
	// in [0, 1], or above 1 to turn the ratio off.
	FailureRatio float64 `json:"failureRatio,omitempty" yaml:"failureRatio,omitempty"`
	// MinRequests is how many calls the window needs for the ratio.
	MinRequests uint32 `json:"minRequests,omitempty" yaml:"minRequests,omitempty"`
	// Window is the sliding window calls are counted over.
	Window Duration `json:"window,omitempty" yaml:"window,omitempty"`
	// OpenTimeout is how long the breaker stays open before probes.
	OpenTimeout Duration `json:"openTimeout,omitempty" yaml:"openTimeout,omitempty"`
	// HalfOpenProbes is how many probes a half-open breaker admits.
	HalfOpenProbes uint32 `json:"halfOpenProbes,omitempty" yaml:"halfOpenProbes,omitempty"`
}

// Route sends the requests that match it to weighted backends, or answers
// them itself with a redirect or a direct response.
type Route struct {
	// Name labels the route in tables, spans and the admin page.
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
	// Match entries are ORed; the fields of one entry are ANDed. No entry
	// matches every request.
	Match []*Match `json:"match,omitempty" yaml:"match,omitempty"`
	// Backends share the route's traffic by weight. At most one of
	// Backends, Redirect and DirectResponse; none sends the traffic to
	// the service's default subset.
	Backends       []*Backend      `json:"backends,omitempty" yaml:"backends,omitempty"`
	Redirect       *Redirect       `json:"redirect,omitempty" yaml:"redirect,omitempty"`
	DirectResponse *DirectResponse `json:"directResponse,omitempty" yaml:"directResponse,omitempty"`
	// Rewrite changes the path or authority before the request is sent.
	Rewrite *Rewrite `json:"rewrite,omitempty" yaml:"rewrite,omitempty"`
	// Headers are changed on every request and response of the route.
	Headers *Headers `json:"headers,omitempty" yaml:"headers,omitempty"`
	// Timeout bounds the whole call, retries included. Zero: none.
	Timeout Duration `json:"timeout,omitempty" yaml:"timeout,omitempty"`
	// Retries replaces the destination's retry policy for this route.
	Retries *Retry `json:"retries,omitempty" yaml:"retries,omitempty"`
	// Hedge sends a second try of a slow call, within the chosen backend.
	Hedge *Hedge `json:"hedge,omitempty" yaml:"hedge,omitempty"`
	// Fault injects delays and aborts.
	Fault *Fault `json:"fault,omitempty" yaml:"fault,omitempty"`
	// Mirror copies calls to another destination.
	Mirror *Mirror `json:"mirror,omitempty" yaml:"mirror,omitempty"`
}

// Match is one match entry; every field that is set must match.
type Match struct {
	// Path matches the normalized path.
	Path *PathMatch `json:"path,omitempty" yaml:"path,omitempty"`
	// Methods matches any of the HTTP methods; GET also matches HEAD.
	// gRPC calls have no method and never match a method list.
	Methods []string `json:"methods,omitempty" yaml:"methods,omitempty"`
	// Headers maps a header (gRPC: metadata key), in any case, to how its
	// first value must match.
	Headers map[string]*StringMatch `json:"headers,omitempty" yaml:"headers,omitempty"`
	// Query maps a query parameter to how its first value must match.
	Query map[string]*StringMatch `json:"query,omitempty" yaml:"query,omitempty"`
}

// PathMatch matches the normalized path (gRPC: "/pkg.Service/Method").
// Exactly one of Exact, Prefix and Regex; Regex is RE2 and must match the
// whole path.
type PathMatch struct {
	Exact  string `json:"exact,omitempty" yaml:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty" yaml:"prefix,omitempty"`
	Regex  string `json:"regex,omitempty" yaml:"regex,omitempty"`
	// IgnoreCase compares letters in either case.
	IgnoreCase bool `json:"ignoreCase,omitempty" yaml:"ignoreCase,omitempty"`
}

// StringMatch matches a header or query value. Exactly one of Exact,
// Prefix, Suffix, Regex (RE2, whole value) and Present. Invert negates
// the result: an inverted match of an absent value matches, except that
// an absent value never matches a non-inverted one.
type StringMatch struct {
	Exact  string `json:"exact,omitempty" yaml:"exact,omitempty"`
	Prefix string `json:"prefix,omitempty" yaml:"prefix,omitempty"`
	Suffix string `json:"suffix,omitempty" yaml:"suffix,omitempty"`
	Regex  string `json:"regex,omitempty" yaml:"regex,omitempty"`
	// Present matches any value, the empty one included.
	Present bool `json:"present,omitempty" yaml:"present,omitempty"`
	// IgnoreCase compares letters in either case.
	IgnoreCase bool `json:"ignoreCase,omitempty" yaml:"ignoreCase,omitempty"`
	// Invert negates the match.
	Invert bool `json:"invert,omitempty" yaml:"invert,omitempty"`
}

// Backend is a weighted destination of a route.
type Backend struct {
	// Service is the destination service, a service of the mesh or an
	// External one. Empty means the route's own service.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Subset names a subset of Service; empty means Service's default
	// subset.
	Subset string `json:"subset,omitempty" yaml:"subset,omitempty"`
	// Weight is the backend's share in basis points (1 = 0.01%). The
	// weights of a route sum to 10000; a lone backend may leave it 0.
	Weight int `json:"weight,omitempty" yaml:"weight,omitempty"`
	// Headers are changed on the requests and responses of this backend,
	// after the route's.
	Headers *Headers `json:"headers,omitempty" yaml:"headers,omitempty"`
}

// Redirect answers an HTTP request with a redirect. Each field that is set
// replaces that part of the request's URL. Not for gRPC.
type Redirect struct {
	Scheme    string `json:"scheme,omitempty" yaml:"scheme,omitempty"`
	Authority string `json:"authority,omitempty" yaml:"authority,omitempty"`
	Path      string `json:"path,omitempty" yaml:"path,omitempty"`
	// Code is 301, 302, 303, 307 or 308; zero means 301.
	Code int `json:"code,omitempty" yaml:"code,omitempty"`
}

// DirectResponse answers an HTTP request with a fixed status and body.
// Not for gRPC.
type DirectResponse struct {
	// Status is the response's status, 200–599.
	Status int `json:"status" yaml:"status"`
	// Body is the response's body.
	Body string `json:"body,omitempty" yaml:"body,omitempty"`
}

// Rewrite changes a request before it is sent. At most one of Path and
// Regex.
type Rewrite struct {
	// Path replaces the part of the path the match entry matched: the
	// prefix of a prefix match, the whole path of an exact one. Every
	// match entry of the route must then match the path by exact or
	// prefix.
	Path string `json:"path,omitempty" yaml:"path,omitempty"`
	// Regex replaces every match of Pattern (RE2) in the path with
	// Substitution, which may use $1-style group references.
	Regex *RegexRewrite `json:"regex,omitempty" yaml:"regex,omitempty"`
	// Authority replaces the request's Host (HTTP) or :authority (gRPC).
	Authority string `json:"authority,omitempty" yaml:"authority,omitempty"`
}

// RegexRewrite is a regular-expression path rewrite.
type RegexRewrite struct {
	// Pattern is an RE2 expression, matched anywhere in the path.
	Pattern string `json:"pattern" yaml:"pattern"`
	// Substitution replaces each match; $1 or ${name} insert groups.
	Substitution string `json:"substitution" yaml:"substitution"`
}

// Headers changes request and response headers (gRPC: metadata).
type Headers struct {
	// Request changes what is sent.
	Request *HeaderOps `json:"request,omitempty" yaml:"request,omitempty"`
	// Response changes what the caller receives.
	Response *HeaderOps `json:"response,omitempty" yaml:"response,omitempty"`
}

// HeaderOps are applied in the order Remove, Set, Add.
type HeaderOps struct {
	// Set replaces every value of a header with one.
	Set map[string]string `json:"set,omitempty" yaml:"set,omitempty"`
	// Add appends a value to a header.
	Add map[string]string `json:"add,omitempty" yaml:"add,omitempty"`
	// Remove deletes headers.
	Remove []string `json:"remove,omitempty" yaml:"remove,omitempty"`
}

// Retry is a retry policy. Retries stay within the backend the route
// chose.
type Retry struct {
	// Attempts is the number of retries after the first try, 0–10, as
	// in Istio. Zero turns retries off.
	Attempts int `json:"attempts" yaml:"attempts"`
	// PerTryTimeout bounds each try. Zero: only the route's timeout.
	PerTryTimeout Duration `json:"perTryTimeout,omitempty" yaml:"perTryTimeout,omitempty"`
	// RetryOn lists the conditions to retry on: connect-failure,
	// refused-stream, reset, 5xx, gateway-error (502, 503, 504),
	// retriable-4xx (409), an HTTP status ("503"), or a gRPC code by name
	// ("unavailable", "RESOURCE_EXHAUSTED", "deadline-exceeded"). Empty
	// means connect-failure, refused-stream, unavailable and cancelled.
	RetryOn []string `json:"retryOn,omitempty" yaml:"retryOn,omitempty"`
}

// Hedge sends a second try when the first has not answered in Delay.
type Hedge struct {
	// Delay before the hedge; zero means the caller's default (the
	// observed 95th percentile latency).
	Delay Duration `json:"delay,omitempty" yaml:"delay,omitempty"`
}

// Fault injects delays and aborts into a share of a route's calls. A
// faulted call is never retried nor counted by breakers or outlier
// detection.
type Fault struct {
	Delay *FaultDelay `json:"delay,omitempty" yaml:"delay,omitempty"`
	Abort *FaultAbort `json:"abort,omitempty" yaml:"abort,omitempty"`
	// MaxActive caps the faulted calls in flight at once; zero: no cap.
	MaxActive int `json:"maxActive,omitempty" yaml:"maxActive,omitempty"`
}

// FaultDelay delays Percent% of the calls by Fixed before they are sent.
type FaultDelay struct {
	// Fixed is the delay, positive.
	Fixed Duration `json:"fixed" yaml:"fixed"`
	// Percent is the share of calls delayed, 0–100.
	Percent float64 `json:"percent" yaml:"percent"`
}

// FaultAbort fails Percent% of the calls without sending them, with an
// HTTP status (200–599) or a gRPC code by name or number: exactly one of
// HTTPStatus and GRPCStatus.
type FaultAbort struct {
	// HTTPStatus is the status of the aborted calls.
	HTTPStatus int `json:"httpStatus,omitempty" yaml:"httpStatus,omitempty"`
	// GRPCStatus is the code of the aborted calls ("UNAVAILABLE", "14").
	GRPCStatus string `json:"grpcStatus,omitempty" yaml:"grpcStatus,omitempty"`
	// Percent is the share of calls aborted, 0–100.
	Percent float64 `json:"percent" yaml:"percent"`
}

// Mirror sends a copy of Percent% of the route's requests to another
// destination, asynchronously; its answers are dropped.
type Mirror struct {
	// Service is the destination service; empty means the route's own.
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	// Subset is a subset of Service; empty means its default subset.
	Subset string `json:"subset,omitempty" yaml:"subset,omitempty"`
	// Percent is the share of calls mirrored, 0–100.
	Percent float64 `json:"percent" yaml:"percent"`
}

// ExternalService is a service outside the mesh, reached over TLS with
// its own server name and CA instead of mesh mutual TLS.
type ExternalService struct {
	// Endpoints are host:port addresses: IP addresses for "static"
	// resolution, DNS names (or IPs) for "dns".
	Endpoints []string `json:"endpoints" yaml:"endpoints"`
	// Resolution is "static" (the default) or "dns".
	Resolution string `json:"resolution,omitempty" yaml:"resolution,omitempty"`
	// TLS is how the service's server is verified; nil means plain
	// TLS with the system roots and the endpoint's host as server name.
	TLS *ExternalTLS `json:"tls,omitempty" yaml:"tls,omitempty"`
}

// ExternalTLS verifies an external service's server certificate.
type ExternalTLS struct {
	// ServerName is the name the certificate must carry.
	ServerName string `json:"serverName,omitempty" yaml:"serverName,omitempty"`
	// CAFile is a PEM file of the roots to trust; empty means the system
	// roots.
	CAFile string `json:"caFile,omitempty" yaml:"caFile,omitempty"`
}
