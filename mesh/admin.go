package mesh

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"path"
	"reflect"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/tlsid"
)

// AdminOption configures the handler of [Client.AdminHandler].
type AdminOption interface{ applyAdmin(*adminConfig) }

type adminConfig struct {
	authorize tlsid.Authorizer // nil: loopback callers only
	servers   []*Server
}

type adminOptionFunc func(*adminConfig)

func (f adminOptionFunc) applyAdmin(c *adminConfig) { f(c) }

// WithAdminAuthorizer lets the admin handler answer the callers that
// authorize allows, identified by the SPIFFE ID of their mutual-TLS
// certificate: serve the handler with a [Server] built with
// [WithIdentity] (or a TLS server whose standard verification,
// tls.RequireAndVerifyClientCert, verified the client's chain). Every
// other caller, loopback and plaintext ones included, gets 403
// Forbidden. A nil authorize is ignored.
func WithAdminAuthorizer(authorize tlsid.Authorizer) AdminOption {
	return adminOptionFunc(func(c *adminConfig) {
		if authorize != nil {
			c.authorize = authorize
		}
	})
}

// WithAdminServers adds servers to what the admin handler shows: their
// identities and authorizers appear under /identity and /config. Nil
// servers are ignored.
func WithAdminServers(servers ...*Server) AdminOption {
	return adminOptionFunc(func(c *adminConfig) {
		for _, s := range servers {
			if s != nil {
				c.servers = append(c.servers, s)
			}
		}
	})
}

// AdminHandler returns an [http.Handler] that shows what c is doing, for
// operators: JSON documents and a live dashboard page. weft never serves
// it on its own; mount it where you like, under a prefix with
// [http.StripPrefix]. It serves:
//
//   - / and /ui: the dashboard page, self-contained (no outside assets),
//     which polls /clusters every second;
//   - /clusters: every service the client has called and, per endpoint,
//     its address, zone, weight, subsets, health, breaker and ejection
//     state, calls in flight, latency EWMA and recent success rate
//     ([AdminClusters]);
//   - /routes: the route table per service, its source and version, and
//     the last update refused and why ([AdminRoutes]);
//   - /identity: the client's SVID, the trust bundles and the authorizers
//     in force ([AdminIdentity]);
//   - /config: the effective configuration, secrets redacted;
//   - /explain?service=S&method=M&path=P&header=k:v&protocol=grpc: where
//     such a call would go and why ([AdminExplain]).
//
// Access: without [WithAdminAuthorizer] the handler answers only
// callers connected from a loopback address and refuses every other one
// with 403, so mounting it on a non-loopback listener without an
// authorizer exposes nothing. With an authorizer it answers only
// callers whose mutual-TLS identity the authorizer allows.
//
// The handler only reads the client's state: it makes no pick, sends
// no call and changes no load, breaker or ejection. It is safe for
// concurrent use and works after c is closed (showing no services).
func (c *Client) AdminHandler(opts ...AdminOption) http.Handler {
	a := &admin{c: c}
	for _, o := range opts {
		if o != nil {
			o.applyAdmin(&a.cfg)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.page)
	mux.HandleFunc("GET /ui", a.page)
	mux.HandleFunc("GET /clusters", serveJSON(a.clusters))
	mux.HandleFunc("GET /routes", serveJSON(a.routes))
	mux.HandleFunc("GET /identity", serveJSON(a.identity))
	mux.HandleFunc("GET /config", serveJSON(a.config))
	mux.HandleFunc("GET /explain", func(w http.ResponseWriter, r *http.Request) {
		ex, err := a.explain(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		writeJSON(w, ex)
	})
	return a.guard(mux)
}

// admin serves a client's admin handler.
type admin struct {
	c   *Client
	cfg adminConfig
}

// ErrAdminForbidden is the cause of a 403 answer of the admin handler.
var ErrAdminForbidden = errors.New("mesh: admin: caller not allowed")

// guard refuses the callers the admin handler must not answer.
func (a *admin) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.allowed(r); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// allowed reports why r's caller may not be answered, nil when it may.
func (a *admin) allowed(r *http.Request) error {
	if a.cfg.authorize == nil {
		if !loopbackAddr(r.RemoteAddr) {
			return fmt.Errorf("%w: %s is not a loopback address and no admin authorizer is set", ErrAdminForbidden, r.RemoteAddr)
		}
		return nil
	}
	id, err := adminPeer(r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrAdminForbidden, err)
	}
	if err := a.cfg.authorize(id); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrAdminForbidden, id, err)
	}
	return nil
}

// adminPeer returns the verified SPIFFE ID of r's caller: the one a
// [Server] found, or the leaf of a chain the TLS server verified.
func adminPeer(r *http.Request) (spiffeid.ID, error) {
	if id, err := PeerID(r.Context()); err == nil {
		return id, nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		return x509svid.IDFromCert(r.TLS.VerifiedChains[0][0])
	}
	return spiffeid.ID{}, tlsid.ErrNoPeerID
}

// loopbackAddr reports whether addr (host:port) is a loopback address.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

func serveJSON[T any](fn func() T) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, fn()) }
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// AdminClusters is the /clusters document of [Client.AdminHandler].
type AdminClusters struct {
	// At is when the document was made.
	At time.Time `json:"at"`
	// Services are the services the client has called, sorted by name.
	Services []AdminService `json:"services"`
}

// AdminService is the state of one service of [AdminClusters].
type AdminService struct {
	Service string `json:"service"`
	// Target is set for the endpoints of a route destination that have a
	// discovery watch of their own (another datacenter, a subset by a
	// Consul filter): the discovery target, as discovery.Target.String
	// gives it.
	Target string `json:"target,omitempty"`
	// Ready: discovery has answered for the service.
	Ready bool `json:"ready"`
	// DiscoveryError is discovery's last error (redacted), empty when it
	// answers; the endpoints are then the last good set.
	DiscoveryError string `json:"discoveryError,omitempty"`
	// HeldSince is set while discovery holds the last non-empty set in
	// place of an empty one.
	HeldSince *time.Time `json:"heldSince,omitempty"`
	// ServiceBreaker is the state of the service-wide breaker, empty
	// without one.
	ServiceBreaker string `json:"serviceBreaker,omitempty"`
	// BreakerWindow is the breakers' counting window, in seconds; 0
	// without breakers.
	BreakerWindow float64         `json:"breakerWindowSeconds,omitempty"`
	Endpoints     []AdminEndpoint `json:"endpoints"`
}

// AdminEndpoint is the state of one endpoint of an [AdminService].
type AdminEndpoint struct {
	ID       string   `json:"id"`
	Addr     string   `json:"addr"`
	Zone     string   `json:"zone,omitempty"`
	Weight   uint32   `json:"weight"`
	Tags     []string `json:"tags,omitempty"`
	Identity string   `json:"identity,omitempty"`
	// Subsets are the route table's subsets of the service that hold the
	// endpoint.
	Subsets []string `json:"subsets,omitempty"`
	// Health sums the rest up: "healthy" (discovery lists it and nothing
	// rules it out), "ejected", "breaker-open" or "breaker-half-open".
	Health string `json:"health"`
	// Breaker is the state ("closed", "open", "half-open") of the
	// endpoint's breaker in the client's set ([WithCircuitBreaker]),
	// empty without one.
	Breaker string `json:"breaker,omitempty"`
	// DestinationBreakers are the endpoint's breakers in the sets of
	// route destinations with a breaker block of their own, which their
	// calls go through in place of the client's, by subset. An open one
	// makes Health "breaker-open" too.
	DestinationBreakers []AdminDestinationBreaker `json:"destinationBreakers,omitempty"`
	// Ejected: outlier detection has the endpoint ejected;
	// EjectedForSeconds is the time left.
	Ejected           bool    `json:"ejected"`
	EjectedForSeconds float64 `json:"ejectedForSeconds,omitempty"`
	// InFlight counts calls in flight, when the balancer policy counts
	// them (least-request, peak EWMA).
	InFlight int64 `json:"inFlight"`
	// LatencyMillis is the peak latency EWMA, when the policy tracks it
	// (peak EWMA); null otherwise.
	LatencyMillis *float64 `json:"latencyMillis"`
	// ConsecutiveFailures is counted while outlier detection or a breaker
	// watches the endpoint.
	ConsecutiveFailures int64 `json:"consecutiveFailures"`
	// Requests, SuccessRate and Throughput (calls per second) are over
	// the breaker's window, or since outlier detection's last sweep
	// without breakers; SuccessRate and Throughput are null when nothing
	// was counted or nothing counts.
	Requests    uint64   `json:"requests"`
	SuccessRate *float64 `json:"successRate"`
	Throughput  *float64 `json:"throughput"`
}

// AdminDestinationBreaker is an endpoint's breaker in the set of a route
// destination whose traffic policy has a breaker block.
type AdminDestinationBreaker struct {
	// Subset is the destination's subset, empty for the destination of
	// every endpoint.
	Subset string `json:"subset"`
	// State is "closed", "open" or "half-open".
	State string `json:"state"`
}

func (a *admin) clusters() AdminClusters {
	c := a.c
	doc := AdminClusters{At: time.Now().UTC(), Services: []AdminService{}}
	var table *route.Table
	if c.cfg.routes != nil {
		table = c.cfg.routes.Table()
	}
	var window time.Duration
	if s := c.cfg.resilience.breakers; s != nil {
		window = s.Window
		if window <= 0 {
			window = breaker.DefaultWindow
		}
	}
	for _, name := range clusterNames(c) {
		cl := (*c.clusters.Load())[name]
		if cl == nil {
			continue
		}
		doc.Services = append(doc.Services, cl.adminState(table, window))
	}
	return doc
}

// clusterNames lists, sorted, the services c has clusters for.
func clusterNames(c *Client) []string {
	m := *c.clusters.Load()
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (cl *cluster) adminState(table *route.Table, window time.Duration) AdminService {
	s := AdminService{Service: cl.service, Endpoints: []AdminEndpoint{}, BreakerWindow: window.Seconds()}
	if cl.key != cl.service {
		s.Target = cl.key
	}
	u := cl.status.Load()
	if u == nil {
		return s
	}
	s.Ready = true
	if u.Err != nil {
		s.DiscoveryError = redactText(u.Err.Error())
	}
	if !u.HeldSince.IsZero() {
		t := u.HeldSince.UTC()
		s.HeldSince = &t
	}
	if sb := cl.guard.breakers.Service(); sb != nil {
		s.ServiceBreaker = sb.State().String()
	}
	loads := cl.loads()
	var dests []*route.Destination
	if table == nil {
		table = &route.Table{}
	}
	for _, d := range table.Destinations() {
		if d.Service == cl.service && d.Subset != "" && d.External == nil && destKey(d) == cl.key {
			dests = append(dests, d)
		}
	}
	var sets []*destBreakers
	for _, sb := range cl.builtSubsets() {
		if sb.brk != nil {
			sets = append(sets, sb.brk)
		}
	}
	slices.SortFunc(sets, func(a, b *destBreakers) int { return strings.Compare(a.subset, b.subset) })
	for i := range u.Endpoints {
		e := cl.adminEndpoint(&u.Endpoints[i], loads[u.Endpoints[i].ID], dests, window)
		destinationBreakers(&e, sets)
		s.Endpoints = append(s.Endpoints, e)
	}
	return s
}

// destinationBreakers adds to e the states of its breakers in sets, the
// breakers of route destinations.
func destinationBreakers(e *AdminEndpoint, sets []*destBreakers) {
	for _, d := range sets {
		b := d.set.Get(e.ID)
		if b == nil {
			continue
		}
		st := b.State()
		e.DestinationBreakers = append(e.DestinationBreakers, AdminDestinationBreaker{Subset: d.subset, State: st.String()})
		switch {
		case st == breaker.Open:
			e.Health = "breaker-open"
		case st == breaker.HalfOpen && e.Health == "healthy":
			e.Health = "breaker-half-open"
		}
	}
}

// loads returns, by endpoint ID, the loads of the endpoints in the
// service's balancer and in its subsets' (routes send calls through
// those): in-flight calls, latency and ejection are per balancer.
func (cl *cluster) loads() map[string][]*balancer.Load {
	m := map[string][]*balancer.Load{}
	add := func(b *balancer.Balancer) {
		for _, e := range b.Endpoints() {
			m[e.ID] = append(m[e.ID], e.Load)
		}
	}
	add(cl.balancer)
	for _, sb := range cl.builtSubsets() {
		add(sb.bal)
	}
	return m
}

// builtSubsets returns a copy of the subsets' balancers built so far,
// by subset name.
func (cl *cluster) builtSubsets() map[string]*subsetBalancer {
	cl.subsets.mu.Lock()
	defer cl.subsets.mu.Unlock()
	return maps.Clone(cl.subsets.m)
}

// builtBreakers returns the breakers calls to dest go through: the
// destination's own when its policy has a breaker block (nil while no
// call has built them), else the client's. Like [cluster.builtBalancer]
// it builds nothing.
func (cl *cluster) builtBreakers(dest *route.Destination) *breaker.Set {
	if dest.Policy.Breaker == nil {
		return cl.guard.breakers
	}
	sb := cl.builtSubsets()[dest.Subset]
	if sb == nil || sb.dest != dest || sb.brk == nil {
		return nil
	}
	return sb.brk.set
}

// builtBalancer returns the balancer that picks for dest: the service's
// for no subset, the subset's when a call has built it, else nil. Unlike
// [cluster.subsetBalancer] it builds nothing.
func (cl *cluster) builtBalancer(dest *route.Destination) *balancer.Balancer {
	if dest.Subset == "" {
		return cl.balancer
	}
	sb := cl.builtSubsets()[dest.Subset]
	if sb == nil || sb.dest != dest {
		return nil
	}
	return sb.bal
}

func (cl *cluster) adminEndpoint(ep *discovery.Endpoint, loads []*balancer.Load, dests []*route.Destination, window time.Duration) AdminEndpoint {
	e := AdminEndpoint{ID: ep.ID, Addr: ep.Addr, Zone: ep.Zone, Weight: ep.EffectiveWeight(), Tags: ep.Tags, Health: "healthy"}
	if !ep.Identity.IsZero() {
		e.Identity = ep.Identity.String()
	}
	for _, d := range dests {
		if d.Matches(ep) && !slices.Contains(e.Subsets, d.Subset) {
			e.Subsets = append(e.Subsets, d.Subset)
		}
	}
	var requests, successes, failures int64
	for _, load := range loads {
		e.InFlight += load.InFlight()
		if lat, ok := load.Latency(); ok {
			ms := float64(lat) / float64(time.Millisecond)
			if e.LatencyMillis == nil || ms > *e.LatencyMillis {
				e.LatencyMillis = &ms
			}
		}
		if load.Ejected() {
			e.Ejected, e.Health = true, "ejected"
			e.EjectedForSeconds = max(e.EjectedForSeconds, load.EjectedFor().Seconds())
		}
		e.ConsecutiveFailures = max(e.ConsecutiveFailures, load.ConsecutiveFailures())
		s, f := load.Outcomes()
		successes, failures = successes+s, failures+f
	}
	requests = successes + failures
	var perSecond time.Duration // the span Requests were counted over; 0: unknown
	if b := cl.guard.breakers.Get(ep.ID); b != nil {
		st := b.State()
		e.Breaker = st.String()
		switch st {
		case breaker.Open:
			e.Health = "breaker-open"
		case breaker.HalfOpen:
			if e.Health == "healthy" {
				e.Health = "breaker-half-open"
			}
		}
		n := b.Counts()
		requests, successes, failures = int64(n.Requests), int64(n.Successes), int64(n.Failures)
		e.ConsecutiveFailures = max(e.ConsecutiveFailures, int64(n.ConsecutiveFailures))
		if st == breaker.Closed {
			perSecond = window
		}
	}
	e.Requests = uint64(requests)
	if successes+failures > 0 {
		r := float64(successes) / float64(successes+failures)
		e.SuccessRate = &r
	}
	if perSecond > 0 {
		t := float64(requests) / perSecond.Seconds()
		e.Throughput = &t
	}
	return e
}

// AdminRoutes is the /routes document of [Client.AdminHandler].
type AdminRoutes struct {
	// Enabled: the client routes by a table ([WithRoutes]).
	Enabled bool   `json:"enabled"`
	Source  string `json:"source,omitempty"`
	Version string `json:"version,omitempty"`
	// Updated is when the current table was published.
	Updated *time.Time `json:"updated,omitempty"`
	// Rejected counts the updates the source refused.
	Rejected uint64 `json:"rejected"`
	// LastRejection is the most recent refused update, nil when none.
	LastRejection *AdminRejection `json:"lastRejection,omitempty"`
	// Warnings are the problems that did not refuse the table.
	Warnings []string            `json:"warnings,omitempty"`
	Services []AdminRouteService `json:"services"`
}

// AdminRejection is a route update a source refused.
type AdminRejection struct {
	Source string    `json:"source"`
	At     time.Time `json:"at"`
	// Error says why, redacted.
	Error string `json:"error"`
}

// AdminRouteService is the compiled table of one service.
type AdminRouteService struct {
	Service string      `json:"service"`
	Rules   []AdminRule `json:"rules"`
	// Config is the service's part of the route config, secrets
	// redacted.
	Config any `json:"config,omitempty"`
}

// AdminRule is one compiled route.
type AdminRule struct {
	Name    string        `json:"name"`
	Index   int           `json:"index"`
	Targets []AdminTarget `json:"targets,omitempty"`
	// Answer is "redirect" or "direct response" for a rule that answers
	// itself.
	Answer        string  `json:"answer,omitempty"`
	Authority     string  `json:"authority,omitempty"`
	TimeoutMillis float64 `json:"timeoutMillis,omitempty"`
	RetryAttempts int     `json:"retryAttempts,omitempty"`
	Hedge         bool    `json:"hedge,omitempty"`
	Fault         bool    `json:"fault,omitempty"`
	Mirror        string  `json:"mirror,omitempty"`
}

// AdminTarget is a weighted backend of a rule.
type AdminTarget struct {
	Service  string `json:"service"`
	Subset   string `json:"subset,omitempty"`
	External bool   `json:"external,omitempty"`
	// Weight is in basis points of [route.TotalWeight].
	Weight int `json:"weight"`
}

func (a *admin) routes() AdminRoutes {
	doc := AdminRoutes{Services: []AdminRouteService{}}
	src := a.c.cfg.routes
	if src == nil {
		return doc
	}
	st := src.Status()
	t := st.Table
	if t == nil {
		t = src.Table()
	}
	doc.Enabled, doc.Source, doc.Version, doc.Rejected = true, t.Source(), t.Version(), st.Rejected
	if !st.Updated.IsZero() {
		u := st.Updated.UTC()
		doc.Updated = &u
	}
	if r := st.LastRejection; r != nil {
		doc.LastRejection = &AdminRejection{Source: r.Source, At: r.At.UTC(), Error: redactText(fmt.Sprint(r.Err))}
	}
	for _, w := range t.Warnings() {
		doc.Warnings = append(doc.Warnings, redactText(w.Error()))
	}
	cfg := t.Config()
	for _, name := range t.Services() {
		rs := AdminRouteService{Service: name, Rules: []AdminRule{}}
		for _, r := range t.Rules(name) {
			rs.Rules = append(rs.Rules, adminRule(r))
		}
		if s := cfg.Services[name]; s != nil {
			rs.Config = redactedValue(s)
		}
		doc.Services = append(doc.Services, rs)
	}
	return doc
}

func adminRule(r *route.Rule) AdminRule {
	ar := AdminRule{Name: r.Name, Index: r.Index, Authority: r.Authority, Hedge: r.Hedge != nil, Fault: r.Fault != nil}
	for _, t := range r.Targets {
		ar.Targets = append(ar.Targets, adminTarget(t))
	}
	switch {
	case r.Redirect != nil:
		ar.Answer = "redirect"
	case r.DirectResponse != nil:
		ar.Answer = "direct response"
	}
	if r.Timeout > 0 {
		ar.TimeoutMillis = float64(r.Timeout) / float64(time.Millisecond)
	}
	if r.Retry != nil {
		ar.RetryAttempts = r.Retry.MaxAttempts
	}
	if r.Mirror != nil && r.Mirror.Destination != nil {
		ar.Mirror = r.Mirror.Destination.String()
	}
	return ar
}

func adminTarget(t *route.Target) AdminTarget {
	return AdminTarget{Service: t.Destination.Service, Subset: t.Destination.Subset, External: t.Destination.External != nil, Weight: t.Weight}
}

// AdminIdentity is the /identity document of [Client.AdminHandler].
type AdminIdentity struct {
	// SVID is the client's own SVID; nil without an identity (plaintext).
	SVID *AdminSVID `json:"svid"`
	// Bundles are the trust bundles the client verifies peers with: its
	// own trust domain's, those of the endpoints' expected identities,
	// and every one of a source that lists its bundles.
	Bundles []AdminBundle `json:"bundles"`
	// Authorizers are the authorizers in force, by role.
	Authorizers []AdminAuthorizer `json:"authorizers"`
	// RequireIdentities: [WithRequiredIdentities] is on.
	RequireIdentities bool `json:"requireIdentities"`
	// Servers are the servers given with [WithAdminServers].
	Servers []AdminServer `json:"servers,omitempty"`
}

// AdminSVID describes an X.509 SVID.
type AdminSVID struct {
	ID        string    `json:"id"`
	Serial    string    `json:"serial"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	// ExpiresInSeconds is the time left until NotAfter.
	ExpiresInSeconds float64 `json:"expiresInSeconds"`
	// Error is why the SVID could not be read, when it could not.
	Error string `json:"error,omitempty"`
}

// AdminBundle is one trust domain's bundle.
type AdminBundle struct {
	TrustDomain string `json:"trustDomain"`
	// Authorities are the SHA-256 fingerprints of its X.509
	// authorities, hex.
	Authorities []string `json:"authorities"`
	Error       string   `json:"error,omitempty"`
}

// AdminAuthorizer names an authorizer in force: its role ("client:
// servers accepted", "client: servers of <service>", "admin: callers")
// and the function's name.
type AdminAuthorizer struct {
	Role string `json:"role"`
	Name string `json:"name"`
}

// AdminServer is what the admin handler shows of a [Server].
type AdminServer struct {
	SVID         *AdminSVID `json:"svid"`
	Authorizer   string     `json:"authorizer,omitempty"`
	AccessPolicy bool       `json:"accessPolicy"`
	AccessAudit  bool       `json:"accessAudit"`
}

func (a *admin) identity() AdminIdentity {
	c := a.c
	doc := AdminIdentity{Bundles: []AdminBundle{}, RequireIdentities: c.cfg.requireIdentities}
	doc.SVID = adminSVID(c.cfg.identity)
	doc.Bundles = adminBundles(c.cfg.identity, endpointDomains(c))
	if c.cfg.identity != nil {
		doc.Authorizers = append(doc.Authorizers, AdminAuthorizer{Role: "client: servers accepted", Name: funcName(c.cfg.authorize)})
		if c.cfg.serviceAuthorize != nil {
			for _, name := range clusterNames(c) {
				if az := c.cfg.serviceAuthorize(name); az != nil {
					doc.Authorizers = append(doc.Authorizers, AdminAuthorizer{Role: "client: servers of " + name, Name: funcName(az)})
				}
			}
		}
	}
	if a.cfg.authorize != nil {
		doc.Authorizers = append(doc.Authorizers, AdminAuthorizer{Role: "admin: callers", Name: funcName(a.cfg.authorize)})
	} else {
		doc.Authorizers = append(doc.Authorizers, AdminAuthorizer{Role: "admin: callers", Name: "loopback only"})
	}
	for _, s := range a.cfg.servers {
		as := AdminServer{SVID: adminSVID(s.cfg.identity)}
		if s.cfg.identity != nil {
			as.Authorizer = "same trust domain (default)"
			if s.cfg.authorize != nil {
				as.Authorizer = funcName(s.cfg.authorize)
			}
		}
		if ac := s.cfg.access; ac != nil {
			as.AccessPolicy, as.AccessAudit = len(ac.enforce) > 0, len(ac.audit) > 0
		}
		doc.Servers = append(doc.Servers, as)
	}
	return doc
}

// adminSVID describes src's SVID, nil for a nil src.
func adminSVID(src tlsid.Source) *AdminSVID {
	if src == nil {
		return nil
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return &AdminSVID{Error: redactText(err.Error())}
	}
	s := &AdminSVID{ID: svid.ID.String()}
	if len(svid.Certificates) > 0 {
		leaf := svid.Certificates[0]
		s.Serial = leaf.SerialNumber.Text(16)
		s.NotBefore, s.NotAfter = leaf.NotBefore.UTC(), leaf.NotAfter.UTC()
		s.ExpiresInSeconds = time.Until(leaf.NotAfter).Seconds()
	}
	return s
}

// endpointDomains lists the trust domains of the identities c's
// endpoints must present.
func endpointDomains(c *Client) []spiffeid.TrustDomain {
	var tds []spiffeid.TrustDomain
	for _, cl := range *c.clusters.Load() {
		if u := cl.status.Load(); u != nil {
			for i := range u.Endpoints {
				if id := u.Endpoints[i].Identity; !id.IsZero() {
					tds = append(tds, id.TrustDomain())
				}
			}
		}
	}
	return tds
}

// adminBundles describes the bundles of src for its own trust domain,
// extra and, when src lists its bundles, every one it has.
func adminBundles(src tlsid.Source, extra []spiffeid.TrustDomain) []AdminBundle {
	out := []AdminBundle{}
	if src == nil {
		return out
	}
	tds := slices.Clone(extra)
	if svid, err := src.GetX509SVID(); err == nil {
		tds = append(tds, svid.ID.TrustDomain())
	}
	if l, ok := src.(interface{ Bundles() *x509bundle.Set }); ok && l.Bundles() != nil {
		for _, b := range l.Bundles().Bundles() {
			tds = append(tds, b.TrustDomain())
		}
	}
	seen := map[spiffeid.TrustDomain]bool{}
	for _, td := range tds {
		if seen[td] {
			continue
		}
		seen[td] = true
		ab := AdminBundle{TrustDomain: td.String(), Authorities: []string{}}
		b, err := src.GetX509BundleForTrustDomain(td)
		if err != nil {
			ab.Error = redactText(err.Error())
		} else {
			for _, cert := range b.X509Authorities() {
				sum := sha256.Sum256(cert.Raw)
				ab.Authorities = append(ab.Authorities, hex.EncodeToString(sum[:]))
			}
		}
		out = append(out, ab)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].TrustDomain < out[j].TrustDomain })
	return out
}

// funcName names fn by its function: the package directory of its
// source and the function ("tlsid.AuthorizeMemberOf" for the closure
// AuthorizeMemberOf returns, even when inlined elsewhere); "none" for
// nil.
func funcName(fn any) string {
	v := reflect.ValueOf(fn)
	if !v.IsValid() || v.Kind() != reflect.Func || v.IsNil() {
		return "none"
	}
	f := runtime.FuncForPC(v.Pointer())
	if f == nil {
		return "unknown"
	}
	name := f.Name()
	for {
		i := strings.LastIndex(name, ".func")
		if i < 0 || strings.ContainsAny(name[i+5:], "./") {
			break
		}
		name = name[:i]
	}
	name = name[strings.LastIndex(name, ".")+1:]
	file, _ := f.FileLine(v.Pointer())
	if dir := path.Base(path.Dir(file)); dir != "." && dir != "/" {
		name = dir + "." + name
	}
	return name
}
