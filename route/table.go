package route

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/weftmesh/weft/discovery"
)

// TotalWeight is what the weights of a route's backends sum to: 10000
// basis points, so a weight of 1 is 0.01% of the traffic.
const TotalWeight = 10000

// Table is a compiled config: immutable, safe for concurrent use, built by
// [Compile] and published by a [Source]. Everything reachable from it
// (rules, targets, destinations, policies) is read-only. The zero Table
// and a nil *Table route nothing.
type Table struct {
	version  string
	source   string
	services map[string]*service
	dests    []*Destination
	connect  map[string]time.Duration // connect timeouts, by service
	warnings []*FieldError
	config   []byte // the config, as canonical JSON
}

// service is the compiled table of one service.
type service struct {
	rules    []*Rule
	fallback *Rule
	// entries are the match entries of every rule in the order they are
	// tried, in one flat list for the match loop.
	entries []entry
}

// entry is a match entry of a rule.
type entry struct {
	matcher
	rule  *Rule
	index int // in the rule's entries; -1 for a rule without entries
}

// Version identifies the config the table was compiled from: the one given
// with [WithVersion], or a hash of the config's content, so equal configs
// have equal versions.
func (t *Table) Version() string { return t.version }

// Source names where the table came from ([WithSource]): "static", or
// "file:" and the path for a [File].
func (t *Table) Source() string { return t.source }

// Warnings lists the problems compilation found that did not refuse the
// config: shadowed routes, a per-try timeout not below the route's
// timeout, a mirror to a destination the route already sends to.
func (t *Table) Warnings() []*FieldError { return slices.Clone(t.warnings) }

// Services lists, sorted, the services the table routes.
func (t *Table) Services() []string {
	names := make([]string, 0, len(t.services))
	for n := range t.services {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Has reports whether the table routes service.
func (t *Table) Has(service string) bool {
	return t != nil && t.services[service] != nil
}

// ConnectTimeout returns the connect timeout that service's traffic
// policy sets (ConnectionPool.ConnectTimeout); zero when it sets none, or
// the table is nil. It is one map lookup: a client reads it when it
// dials, not per call.
func (t *Table) ConnectTimeout(service string) time.Duration {
	if t == nil {
		return 0
	}
	return t.connect[service]
}

// Rules returns the rules of service in the order they are tried, the
// implicit catch-all last; nil when the table does not route service.
func (t *Table) Rules(service string) []*Rule {
	s := t.services[service]
	if s == nil {
		return nil
	}
	return append(slices.Clone(s.rules), s.fallback)
}

// Destinations lists every destination the table can send a call to
// (catch-alls, backends, mirrors), each once, sorted by service then
// subset: the (service, subset) pairs a caller needs balancers for.
func (t *Table) Destinations() []*Destination { return slices.Clone(t.dests) }

// Config returns a copy of the config the table was compiled from.
func (t *Table) Config() *Config {
	cfg := &Config{}
	if len(t.config) > 0 {
		_ = json.Unmarshal(t.config, cfg) // it is our own encoding of a valid config
	}
	return cfg
}

// Rule is a compiled route of a service, or its implicit catch-all.
// Its fields are read-only.
type Rule struct {
	// Service is the service the rule routes.
	Service string
	// Name is the route's name, "routes[i]" when it has none, or
	// "default" for the catch-all.
	Name string
	// Index is the route's position in the service's routes, -1 for the
	// catch-all.
	Index int
	// Targets are the weighted backends; empty when the rule answers
	// itself.
	Targets []*Target
	// Redirect, when not nil, answers the request with a redirect; see
	// [Rule.Location].
	Redirect *Redirect
	// DirectResponse, when not nil, answers the request with a fixed
	// status and body.
	DirectResponse *DirectResponse
	// Authority, when not empty, replaces the request's Host (HTTP) or
	// :authority (gRPC).
	Authority string
	// Request and Response are the route's header changes; nil for none.
	// A target's own changes apply after them.
	Request, Response *HeaderRules
	// Timeout bounds the call, retries included; zero for none.
	Timeout time.Duration
	// Retry is the route's retry policy; nil means the chosen
	// destination's ([Policy.Retry]).
	Retry *RetryPolicy
	// Hedge, when not nil, hedges the calls of the route.
	Hedge *HedgePolicy
	// Fault, when not nil, injects faults into the calls of the route.
	Fault *FaultPolicy
	// Mirror, when not nil, mirrors the calls of the route.
	Mirror *MirrorPolicy

	matchers     []matcher
	cumulative   []uint32 // cumulative weights of Targets
	rewritePath  bool
	rewriteTo    string
	rewriteRegex *regexp.Regexp
	rewriteSubst string
}

// RetryFor returns the retry policy of a call the rule sends to target:
// the rule's own, else the destination's; nil for none.
func (r *Rule) RetryFor(t *Target) *RetryPolicy {
	if r.Retry != nil || t == nil {
		return r.Retry
	}
	return t.Destination.Policy.Retry
}

// Location returns the Location of the rule's redirect for a request to u:
// u with the scheme, authority and path the redirect sets. It returns ""
// when the rule has no redirect.
func (r *Rule) Location(u *url.URL) string {
	if r.Redirect == nil {
		return ""
	}
	v := *u
	v.User = nil
	if r.Redirect.Scheme != "" {
		v.Scheme = r.Redirect.Scheme
	}
	if r.Redirect.Authority != "" {
		v.Host = r.Redirect.Authority
	}
	if r.Redirect.Path != "" {
		v.Path, v.RawPath = r.Redirect.Path, ""
	}
	return v.String()
}

// Target is a weighted backend of a rule. Its fields are read-only.
type Target struct {
	// Destination is where the calls go.
	Destination *Destination
	// Weight is the target's share in basis points.
	Weight int
	// Request and Response are the backend's header changes, applied after
	// the rule's; nil for none.
	Request, Response *HeaderRules
}

// Destination is a service and subset with its traffic policy: what one
// balancer serves. Destinations are shared: every target of a table that
// sends to the same service and subset points to the same Destination.
// Its fields are read-only.
type Destination struct {
	// Index is the destination's position in [Table.Destinations], so a
	// caller can keep per-destination state of a table in a slice.
	Index int
	// Service is the service's name.
	Service string
	// Subset is the subset's name; empty for every endpoint.
	Subset string
	// Datacenter is where the endpoints are; empty for the caller's own.
	// Only failover targets name one.
	Datacenter string
	// Policy is the effective traffic policy: the subset's blocks over
	// the service's.
	Policy Policy
	// External is set when Service is an external service.
	External *External
	// Failover lists, in order, where a call goes when this destination
	// has no healthy endpoint: the first that has one takes it. Failover
	// targets' own failover lists are not followed.
	Failover []*Destination

	tags   []string
	meta   map[string]string
	target discovery.Target
	own    bool // target needs a watch of its own
}

// SameBalancing reports whether o, typically a destination of a newer
// table, selects the same endpoints as d and balances them alike: the
// same service, subset selector, datacenter, discovery target, load
// balancer and outlier detection. State kept for d, such as a
// balancer's load figures and ejections, then stays valid for o.
func (d *Destination) SameBalancing(o *Destination) bool {
	if d == o {
		return true
	}
	if d == nil || o == nil {
		return false
	}
	return d.Service == o.Service && d.Subset == o.Subset && d.Datacenter == o.Datacenter &&
		d.target == o.target && d.own == o.own &&
		slices.Equal(d.tags, o.tags) && maps.Equal(d.meta, o.meta) &&
		samePointee(d.Policy.LoadBalancer, o.Policy.LoadBalancer) &&
		samePointee(d.Policy.Outlier, o.Policy.Outlier)
}

// samePointee reports whether a and b are both nil or point at equal
// values.
func samePointee[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// String returns "service", "service/subset", and "@datacenter" after
// either for a destination in another datacenter.
func (d *Destination) String() string {
	s := d.Service
	if d.Subset != "" {
		s += "/" + d.Subset
	}
	if d.Datacenter != "" {
		s += "@" + d.Datacenter
	}
	return s
}

// Target returns the discovery target whose endpoints the destination
// balances over, and whether it needs a watch of its own
// (discovery.TargetWatcher): true for a destination in another
// datacenter or of a subset by Filter. When it is false the endpoints
// are those of a watch of the whole service that [Destination.Matches]
// selects.
func (d *Destination) Target() (discovery.Target, bool) { return d.target, d.own }

// Matches reports whether the endpoint belongs to the destination's
// subset: it carries all of the subset's tags and meta. Every endpoint
// matches a destination with no subset. Its signature is balancer.Match's,
// so balancer.Subset(d.Matches, policy) balances over the subset.
func (d *Destination) Matches(e *discovery.Endpoint) bool {
	for _, t := range d.tags {
		if !e.HasTag(t) {
			return false
		}
	}
	for k, v := range d.meta {
		if got, ok := e.Meta[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Policy is the traffic policy of a destination. A nil field leaves the
// caller's default in place. The pointed-to values are read-only copies.
type Policy struct {
	// LoadBalancer names the balancer policy.
	LoadBalancer *LoadBalancer
	// Outlier configures outlier detection.
	Outlier *OutlierDetection
	// Breaker configures the per-endpoint circuit breakers.
	Breaker *Breaker
	// Retry is the retry policy of routes that set none.
	Retry *RetryPolicy
	// ConnectionPool bounds the calls in flight to the destination.
	ConnectionPool *ConnectionPool
}

// External is a compiled [ExternalService].
type External struct {
	// Endpoints are the addresses, as discovery endpoints with the
	// address as ID.
	Endpoints []discovery.Endpoint
	// DNS is true when the hosts of Endpoints are names to resolve.
	DNS bool
	// ServerName is the name the server's certificate must carry; empty
	// means the endpoint's host.
	ServerName string
	// CAFile is the PEM file of the roots to trust; empty means the
	// system roots.
	CAFile string
}

// RetryPolicy is a compiled [Retry].
type RetryPolicy struct {
	// MaxAttempts is the most tries per call, the first included (the
	// config's attempts + 1).
	MaxAttempts int
	// PerTryTimeout bounds each try; zero for none.
	PerTryTimeout time.Duration
	// On says which outcomes are retried.
	On RetryOn
}

// RetryOn is a set of retry conditions.
type RetryOn struct {
	// ConnectFailure: the connection could not be made.
	ConnectFailure bool
	// RefusedStream: the server refused the stream (HTTP/2 REFUSED_STREAM).
	RefusedStream bool
	// Reset: the connection or stream was reset before an answer.
	Reset bool

	status [statusWords]uint64 // bit per HTTP status 0..639
	grpc   uint32              // bit per gRPC code
}

const statusWords = 10

// HTTPStatus reports whether a response with status code is retried.
func (o *RetryOn) HTTPStatus(code int) bool {
	return code >= 0 && code < 64*statusWords && o.status[code/64]&(1<<(code%64)) != 0
}

// GRPCCode reports whether a call that failed with c is retried.
func (o *RetryOn) GRPCCode(c codes.Code) bool { return c < 32 && o.grpc&(1<<c) != 0 }

func (o *RetryOn) setStatus(lo, hi int) {
	for c := lo; c <= hi; c++ {
		o.status[c/64] |= 1 << (c % 64)
	}
}

// HedgePolicy is a compiled [Hedge].
type HedgePolicy struct {
	// Delay before the hedge; zero means the caller's default.
	Delay time.Duration
}

// Fraction is a share of calls in parts per million.
type Fraction uint32

// Hit reports whether a call with the uniformly random number rnd falls in
// the share (rnd modulo a million below f). Zero never hits; a million
// always does. [FaultPolicy.Delays], [FaultPolicy.Aborts] and
// [MirrorPolicy.Mirrors] mix their number first.
func (f Fraction) Hit(rnd uint64) bool { return uint32(rnd%1_000_000) < uint32(f) }

// Percent returns f as a percentage.
func (f Fraction) Percent() float64 { return float64(f) / 10_000 }

// FaultPolicy is a compiled [Fault].
type FaultPolicy struct {
	// Delay is applied to the share DelayShare of the calls.
	Delay      time.Duration
	DelayShare Fraction
	// AbortShare of the calls fail with AbortHTTP (HTTP; zero when the
	// abort gives a gRPC code) or AbortGRPC (gRPC).
	AbortShare Fraction
	AbortHTTP  int
	AbortGRPC  codes.Code
	// MaxActive caps the faulted calls in flight; zero for no cap. See
	// [FaultPolicy.Start].
	MaxActive int

	active atomic.Int64 // faulted calls in flight
}

// Delays reports whether the call with the random number rnd is delayed.
// rnd may be the number the call's [Table.Match] took: the decisions mix
// it each in their own way, so they come out independent.
func (f *FaultPolicy) Delays(rnd uint64) bool { return f.DelayShare.Hit(mix(rnd ^ delaySalt)) }

// Aborts reports whether the call with the random number rnd is aborted,
// independently of [FaultPolicy.Delays] and of the backend chosen.
func (f *FaultPolicy) Aborts(rnd uint64) bool { return f.AbortShare.Hit(mix(rnd ^ abortSalt)) }

// Start admits one faulted call under MaxActive, and reports whether it
// may be faulted; a call refused runs unfaulted. Every admitted call must
// be ended by one call of [FaultPolicy.Done]. The count belongs to the
// table: calls on a table count against its own cap. Safe for concurrent
// use; it does not allocate.
func (f *FaultPolicy) Start() bool {
	if f.MaxActive <= 0 {
		return true
	}
	if f.active.Add(1) > int64(f.MaxActive) {
		f.active.Add(-1)
		return false
	}
	return true
}

// Done ends a faulted call admitted by [FaultPolicy.Start].
func (f *FaultPolicy) Done() {
	if f.MaxActive > 0 {
		f.active.Add(-1)
	}
}

// MirrorPolicy is a compiled [Mirror].
type MirrorPolicy struct {
	// Destination receives the copies.
	Destination *Destination
	// Share is the share of the route's calls copied.
	Share Fraction
}

// Mirrors reports whether the call with the random number rnd is
// mirrored, independently of the backend chosen and of faults.
func (m *MirrorPolicy) Mirrors(rnd uint64) bool { return m.Share.Hit(mix(rnd ^ mirrorSalt)) }

// Salts that make the decisions of one random number independent.
const (
	delaySalt  = 0x9e3779b97f4a7c15
	abortSalt  = 0xc2b2ae3d27d4eb4f
	mirrorSalt = 0x165667b19e3779f9
)

// mix is the finalizer of splitmix64: a bijection whose every output bit
// depends on every input bit.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// String returns the destination and share, as "payments/v2 25%".
func (m *MirrorPolicy) String() string {
	return fmt.Sprintf("%s %g%%", m.Destination, m.Share.Percent())
}
