package route

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/weftmesh/weft/discovery"
)

// Validate checks cfg as [Compile] does, without building a table. It
// returns the warnings, and a [*ValidationError] listing every error with
// the path of its field when cfg is invalid.
func Validate(cfg *Config) (warnings []*FieldError, err error) {
	c := newCompiler(cfg)
	c.run()
	return c.warns, c.err()
}

// Compile checks cfg and compiles it into a table. When cfg is invalid it
// returns a [*ValidationError] listing every problem with the path of its
// field, and no table. The table does not share memory with cfg, which the
// caller may change afterwards. It reads [WithVersion] and [WithSource].
func Compile(cfg *Config, opts ...Option) (*Table, error) {
	o := newOptions(opts)
	c := newCompiler(cfg)
	c.run()
	if err := c.err(); err != nil {
		return nil, err
	}
	enc, err := json.Marshal(cfg)
	if err != nil { // Validate refuses what JSON cannot encode (NaN)
		return nil, fmt.Errorf("route: encoding the config: %w", err)
	}
	t := &Table{
		version:  o.version,
		source:   o.source,
		services: c.services,
		warnings: append(c.warns, o.warnings...),
		config:   enc,
	}
	if t.version == "" {
		sum := sha256.Sum256(enc)
		t.version = hex.EncodeToString(sum[:8])
	}
	for n, s := range cfg.Services {
		if s != nil && s.TrafficPolicy != nil && s.TrafficPolicy.ConnectionPool != nil && s.TrafficPolicy.ConnectionPool.ConnectTimeout > 0 {
			if t.connect == nil {
				t.connect = map[string]time.Duration{}
			}
			t.connect[n] = time.Duration(s.TrafficPolicy.ConnectionPool.ConnectTimeout)
		}
	}
	for _, d := range c.dests {
		t.dests = append(t.dests, d)
	}
	sort.Slice(t.dests, func(i, j int) bool {
		a, b := t.dests[i], t.dests[j]
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Subset != b.Subset {
			return a.Subset < b.Subset
		}
		return a.Datacenter < b.Datacenter
	})
	for i, d := range t.dests {
		d.Index = i
	}
	return t, nil
}

// compiler checks a config and builds its table in one pass, so that
// what it accepts is exactly what it can build.
type compiler struct {
	cfg      *Config
	errs     []*FieldError
	warns    []*FieldError
	services map[string]*service
	dests    map[[3]string]*Destination // by service, subset, datacenter
	retries  map[*Retry]*RetryPolicy
}

func newCompiler(cfg *Config) *compiler {
	if cfg == nil {
		cfg = &Config{}
	}
	return &compiler{
		cfg:      cfg,
		services: map[string]*service{},
		dests:    map[[3]string]*Destination{},
		retries:  map[*Retry]*RetryPolicy{},
	}
}

func (c *compiler) errorf(path, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *compiler) wrapErr(path string, err error) {
	c.errs = append(c.errs, &FieldError{Path: path, Message: err.Error(), Err: err})
}

func (c *compiler) warnf(path, format string, args ...any) {
	c.warns = append(c.warns, &FieldError{Path: path, Message: fmt.Sprintf(format, args...)})
}

func (c *compiler) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	return &ValidationError{Errors: c.errs, Warnings: c.warns}
}

// name renders a map key of services, subsets and external services: .key
// when it is a plain name, ["key"] otherwise.
func name(k string) string {
	if k != "" && validName(k) {
		return "." + k
	}
	return key(k)
}

// key renders any other map key: ["key"].
func key(k string) string { return "[" + strconv.Quote(k) + "]" }

func index(i int) string { return "[" + strconv.Itoa(i) + "]" }

// validName: a service, subset or external service name, as Consul
// allows them.
func validName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

func (c *compiler) run() {
	for _, n := range sortedKeys(c.cfg.External) {
		c.checkExternal("external"+name(n), n, c.cfg.External[n])
	}
	for _, n := range sortedKeys(c.cfg.Services) {
		c.checkService("services"+name(n), n, c.svc(n))
	}
	for _, n := range sortedKeys(c.cfg.Services) {
		c.compileRoutes("services"+name(n), n, c.svc(n))
	}
}

// svc returns the config of service n; a null entry is an empty one.
func (c *compiler) svc(n string) *Service {
	if s := c.cfg.Services[n]; s != nil {
		return s
	}
	return &Service{}
}

func (c *compiler) checkExternal(path, n string, e *ExternalService) {
	if !validName(n) {
		c.errorf(path, "%q is not a valid service name (letters, digits, '-', '_', '.')", n)
	}
	if _, ok := c.cfg.Services[n]; ok {
		c.errorf(path, "%q is also in services: a name is either a mesh service or an external one", n)
	}
	if e == nil {
		c.errorf(path, "empty: an external service needs endpoints")
		return
	}
	dns := false
	switch e.Resolution {
	case "", "static":
	case "dns":
		dns = true
	default:
		c.errorf(path+".resolution", "%q: must be static or dns", e.Resolution)
	}
	if len(e.Endpoints) == 0 {
		c.errorf(path+".endpoints", "empty: an external service needs at least one host:port")
	}
	for i, a := range e.Endpoints {
		p := path + ".endpoints" + index(i)
		if err := discovery.ValidateAddr(a); err != nil {
			c.errorf(p, "%q is not a host:port address", a)
			continue
		}
		host, _, _ := net.SplitHostPort(a)
		if !dns && net.ParseIP(host) == nil {
			c.errorf(p, "%q: static resolution needs an IP address; set resolution: dns for a name", a)
		}
	}
	if e.TLS != nil && e.TLS.ServerName != "" && strings.ContainsAny(e.TLS.ServerName, " /:@") {
		c.errorf(path+".tls.serverName", "%q is not a DNS name", e.TLS.ServerName)
	}
}

func (c *compiler) checkService(path, n string, s *Service) {
	if !validName(n) {
		c.errorf(path, "%q is not a valid service name (letters, digits, '-', '_', '.')", n)
	}
	switch s.Protocol {
	case "", "http", "grpc":
	default:
		c.errorf(path+".protocol", "%q: must be http, grpc or empty (both)", s.Protocol)
	}
	c.checkPolicy(path+".trafficPolicy", s.TrafficPolicy, false)
	for _, sn := range sortedKeys(s.Subsets) {
		p := path + ".subsets" + name(sn)
		sub := s.Subsets[sn]
		if !validName(sn) {
			c.errorf(p, "%q is not a valid subset name (letters, digits, '-', '_', '.')", sn)
		}
		if sub == nil || len(sub.Tags) == 0 && len(sub.Meta) == 0 && strings.TrimSpace(sub.Filter) == "" {
			c.errorf(p, "selects every endpoint: a subset needs tags, meta or a filter")
			continue
		}
		if sub.OnlyPassing && sub.Filter == "" {
			c.warnf(p+".onlyPassing", "applies to a subset by filter only: the service's watch decides which instances are healthy")
		}
		c.checkFailover(p+".failover", n, sn, sub.Failover)
		for i, t := range sub.Tags {
			if t == "" {
				c.errorf(p+".tags"+index(i), "empty tag")
			}
		}
		for _, k := range sortedKeys(sub.Meta) {
			if k == "" {
				c.errorf(p+".meta"+key(k), "empty meta key")
			}
		}
		c.checkPolicy(p+".trafficPolicy", sub.TrafficPolicy, true)
	}
	if s.DefaultSubset != "" && s.Subsets[s.DefaultSubset] == nil {
		c.errorf(path+".defaultSubset", "unknown subset %q%s", s.DefaultSubset, known(s.Subsets))
	}
	c.checkFailover(path+".failover", n, "", s.Failover)
}

// checkFailover checks the failover list of service n (of its subset
// sub, when not empty).
func (c *compiler) checkFailover(path, n, sub string, fs []*Failover) {
	seen := map[[3]string]bool{}
	for i, f := range fs {
		p := path + index(i)
		if f == nil {
			c.errorf(p, "empty failover target")
			continue
		}
		svc := cmp.Or(f.Service, n)
		if _, ext := c.cfg.External[svc]; ext {
			c.errorf(p+".service", "external service %q cannot be a failover target", svc)
			continue
		}
		if !validName(svc) {
			c.errorf(p+".service", "%q is not a valid service name", svc)
			continue
		}
		if f.Datacenter != "" && !validName(f.Datacenter) {
			c.errorf(p+".datacenter", "%q is not a valid datacenter name (letters, digits, '-', '_', '.')", f.Datacenter)
			continue
		}
		s, declared := c.cfg.Services[svc]
		subset := f.Subset
		switch {
		case subset != "" && !declared:
			c.errorf(p+".subset", "unknown subset %q: service %q is not in services, so it has no subsets", subset, svc)
			continue
		case subset != "" && (s == nil || s.Subsets[subset] == nil):
			var subs map[string]*Subset
			if s != nil {
				subs = s.Subsets
			}
			c.errorf(p+".subset", "unknown subset %q of %q%s", subset, svc, known(subs))
			continue
		case subset == "" && s != nil:
			subset = s.DefaultSubset
		}
		k := [3]string{svc, subset, f.Datacenter}
		if svc == n && subset == sub && f.Datacenter == "" {
			c.errorf(p, "fails over to itself")
			continue
		}
		if seen[k] {
			c.warnf(p, "named twice: only its first place counts")
		}
		seen[k] = true
	}
}

// known lists the subsets there are, for an unknown-subset message.
func known(subsets map[string]*Subset) string {
	if len(subsets) == 0 {
		return " (the service has no subsets)"
	}
	return " (subsets: " + strings.Join(sortedKeys(subsets), ", ") + ")"
}

var lbPolicies = map[string]bool{
	"round_robin": false, "weighted_round_robin": false, "random": false, "weighted_random": false,
	"least_request": false, "peak_ewma": false, "ring_hash": true, "maglev": true,
}

func (c *compiler) checkPolicy(path string, tp *TrafficPolicy, subset bool) {
	if tp == nil {
		return
	}
	if lb := tp.LoadBalancer; lb != nil {
		p := path + ".loadBalancer"
		hashed, ok := lbPolicies[lb.Policy]
		keys := 0
		if lb.HashHeader != "" {
			keys++
			c.headerName(p+".hashHeader", lb.HashHeader)
		}
		if lb.HashCookie != "" {
			keys++
		}
		if lb.HashQuery != "" {
			keys++
		}
		switch {
		case !ok:
			c.errorf(p+".policy", "unknown policy %q: one of round_robin, weighted_round_robin, random, weighted_random, least_request, peak_ewma, ring_hash, maglev", lb.Policy)
		case hashed && keys != 1:
			c.errorf(p, "%s needs exactly one of hashHeader, hashCookie and hashQuery", lb.Policy)
		case !hashed && keys != 0:
			c.errorf(p, "hashHeader, hashCookie and hashQuery are only for ring_hash and maglev, not %s", lb.Policy)
		}
	}
	if o := tp.Outlier; o != nil {
		p := path + ".outlierDetection"
		if o.ConsecutiveFailures < 0 {
			c.errorf(p+".consecutiveFailures", "%d is negative", o.ConsecutiveFailures)
		}
		c.nonNegative(p+".interval", o.Interval)
		c.nonNegative(p+".baseEjectionTime", o.BaseEjectionTime)
		c.nonNegative(p+".maxEjectionTime", o.MaxEjectionTime)
		c.percent(p+".maxEjectedPercent", o.MaxEjectedPercent)
	}
	if b := tp.Breaker; b != nil {
		p := path + ".breaker"
		if math.IsNaN(b.FailureRatio) || math.IsInf(b.FailureRatio, 0) || b.FailureRatio < 0 {
			c.errorf(p+".failureRatio", "%v: must be in [0, 1], or above 1 to turn the ratio off", b.FailureRatio)
		}
		c.nonNegative(p+".window", b.Window)
		c.nonNegative(p+".openTimeout", b.OpenTimeout)
	}
	if cp := tp.ConnectionPool; cp != nil {
		p := path + ".connectionPool"
		for _, f := range []struct {
			name string
			v    int
		}{{"maxConnections", cp.MaxConnections}, {"maxPendingRequests", cp.MaxPendingRequests}, {"maxRequests", cp.MaxRequests}} {
			if f.v < 0 {
				c.errorf(p+"."+f.name, "%d is negative", f.v)
			}
		}
		if cp.MaxPendingRequests > 0 && cp.MaxConnections == 0 {
			c.warnf(p+".maxPendingRequests", "no call is ever pending without maxConnections")
		}
		switch {
		case cp.ConnectTimeout < 0:
			c.errorf(p+".connectTimeout", "%v is negative", cp.ConnectTimeout)
		case cp.ConnectTimeout > 0 && subset:
			c.warnf(p+".connectTimeout", "not applied: a connection to an endpoint serves every subset it belongs to; set it in the service's trafficPolicy")
		}
	}
	c.compileRetry(path+".retries", tp.Retries, 0)
}

func (c *compiler) nonNegative(path string, d Duration) {
	if d < 0 {
		c.errorf(path, "%v is negative", d)
	}
}

// percent checks a percentage and returns it as a Fraction.
func (c *compiler) percent(path string, p float64) Fraction {
	if math.IsNaN(p) || p < 0 || p > 100 {
		c.errorf(path, "%v is outside 0–100", p)
		return 0
	}
	return Fraction(math.Round(p * 10_000))
}

// destination resolves a backend, mirror or catch-all to its shared
// Destination; nil when it names an unknown subset.
func (c *compiler) destination(path, svcName, subset string) *Destination {
	if ext, ok := c.cfg.External[svcName]; ok {
		if subset != "" {
			c.errorf(path+".subset", "external service %q has no subsets", svcName)
			return nil
		}
		if ext == nil {
			ext = &ExternalService{}
		}
		return c.dest(svcName, "", "", nil, ext)
	}
	if !validName(svcName) {
		c.errorf(path+".service", "%q is not a valid service name", svcName)
		return nil
	}
	s, declared := c.cfg.Services[svcName]
	if !declared {
		if subset != "" {
			c.errorf(path+".subset", "unknown subset %q: service %q is not in services, so it has no subsets", subset, svcName)
			return nil
		}
		return c.dest(svcName, "", "", nil, nil)
	}
	if s == nil {
		s = &Service{}
	}
	explicit := subset != ""
	if !explicit {
		subset = s.DefaultSubset
	}
	if subset == "" {
		return c.dest(svcName, "", "", s, nil)
	}
	sub, ok := s.Subsets[subset]
	switch {
	case !ok && explicit:
		c.errorf(path+".subset", "unknown subset %q of %q%s", subset, svcName, known(s.Subsets))
		return nil
	case !ok || sub == nil: // reported at defaultSubset or at the subset
		return nil
	}
	return c.dest(svcName, subset, "", s, nil)
}

// dest returns the shared Destination of (svcName, subset, dc), building
// it on first use, with its failover targets.
func (c *compiler) dest(svcName, subset, dc string, s *Service, ext *ExternalService) *Destination {
	k := [3]string{svcName, subset, dc}
	if d := c.dests[k]; d != nil {
		return d
	}
	d := &Destination{Service: svcName, Subset: subset, Datacenter: dc}
	d.target = discovery.Target{Service: svcName, Datacenter: dc, OnlyPassing: true}
	d.own = dc != ""
	c.dests[k] = d // before its failover targets, which may lead back to it
	if ext != nil {
		d.External = compileExternal(ext)
		return d
	}
	if s == nil {
		return d
	}
	failover := s.Failover
	var sub *Subset
	if subset != "" {
		sub = s.Subsets[subset]
		d.tags = append([]string(nil), sub.Tags...)
		d.meta = make(map[string]string, len(sub.Meta))
		for k, v := range sub.Meta {
			d.meta[k] = v
		}
		if sub.Filter != "" {
			d.target.Filter, d.target.OnlyPassing, d.own = sub.Filter, sub.OnlyPassing, true
		}
		if sub.Failover != nil {
			failover = sub.Failover
		}
	}
	d.Policy = c.mergePolicy(s.TrafficPolicy, sub)
	if dc != "" {
		return d // a failover target: its own list is not followed
	}
	seen := map[*Destination]bool{d: true}
	for _, f := range failover {
		if fd := c.failoverDest(svcName, f); fd != nil && !seen[fd] {
			seen[fd] = true
			d.Failover = append(d.Failover, fd)
		}
	}
	return d
}

// failoverDest returns the destination of failover target f of a
// service's destination; nil when f is invalid, which checkFailover
// reports.
func (c *compiler) failoverDest(svcName string, f *Failover) *Destination {
	if f == nil {
		return nil
	}
	svc := cmp.Or(f.Service, svcName)
	if _, ext := c.cfg.External[svc]; ext || !validName(svc) || f.Datacenter != "" && !validName(f.Datacenter) {
		return nil
	}
	s := c.cfg.Services[svc]
	subset := f.Subset
	if subset == "" && s != nil {
		subset = s.DefaultSubset
	}
	if subset != "" && (s == nil || s.Subsets[subset] == nil) {
		return nil
	}
	return c.dest(svc, subset, f.Datacenter, s, nil)
}

// mergePolicy overlays the subset's policy blocks on the service's, with
// copies of the blocks so the table shares nothing with the config.
func (c *compiler) mergePolicy(base *TrafficPolicy, sub *Subset) Policy {
	var p Policy
	apply := func(tp *TrafficPolicy) {
		if tp == nil {
			return
		}
		if tp.LoadBalancer != nil {
			v := *tp.LoadBalancer
			p.LoadBalancer = &v
		}
		if tp.Outlier != nil {
			v := *tp.Outlier
			p.Outlier = &v
		}
		if tp.Breaker != nil {
			v := *tp.Breaker
			p.Breaker = &v
		}
		if tp.Retries != nil {
			p.Retry = c.retries[tp.Retries]
		}
		if tp.ConnectionPool != nil {
			v := *tp.ConnectionPool
			p.ConnectionPool = &v
		}
	}
	apply(base)
	if sub != nil {
		apply(sub.TrafficPolicy)
	}
	return p
}

func compileExternal(e *ExternalService) *External {
	x := &External{DNS: e.Resolution == "dns"}
	for _, a := range e.Endpoints {
		x.Endpoints = append(x.Endpoints, discovery.Endpoint{ID: a, Addr: a})
	}
	if e.TLS != nil {
		x.ServerName, x.CAFile = e.TLS.ServerName, e.TLS.CAFile
	}
	return x
}

func (c *compiler) compileRoutes(path, n string, s *Service) {
	st := &service{}
	grpc := s.Protocol == "grpc"
	catchAll := -1 // index of the first route that matches every request
	var seen []seenEntry
	for i, r := range s.Routes {
		p := path + ".routes" + index(i)
		if r == nil {
			c.errorf(p, "empty route")
			continue
		}
		rule := c.compileRoute(p, n, i, r, grpc)
		if catchAll >= 0 {
			c.warnf(p, "never matches: routes[%d] before it matches every request", catchAll)
		} else {
			seen = c.shadowed(p, i, r, seen)
		}
		if len(r.Match) == 0 || matchesAll(r) {
			if catchAll < 0 {
				catchAll = i
			}
		}
		st.rules = append(st.rules, rule)
		if len(rule.matchers) == 0 {
			st.entries = append(st.entries, entry{matcher{path: strMatcher{kind: strAny}}, rule, -1})
		}
		for j, m := range rule.matchers {
			st.entries = append(st.entries, entry{m, rule, j})
		}
	}
	fallback := &Rule{Service: n, Name: "default", Index: -1}
	if d := c.destination(path+".defaultSubset", n, ""); d != nil {
		fallback.Targets = []*Target{{Destination: d, Weight: TotalWeight}}
		fallback.cumulative = []uint32{TotalWeight}
	}
	st.fallback = fallback
	c.services[n] = st
}

// matchesAll reports whether a route has a match entry that matches every
// request.
func matchesAll(r *Route) bool {
	for _, m := range r.Match {
		if m != nil && m.Path == nil && len(m.Methods) == 0 && len(m.Headers) == 0 && len(m.Query) == 0 {
			return true
		}
		if m != nil && m.Path != nil && m.Path.Prefix == "/" && m.Path.Exact == "" && m.Path.Regex == "" &&
			len(m.Methods) == 0 && len(m.Headers) == 0 && len(m.Query) == 0 {
			return true
		}
	}
	return false
}

type seenEntry struct {
	route, entry int
	m            *Match
}

// shadowed warns of the match entries of route i that an entry of an
// earlier route matches whenever they do: the same entry, or a path
// prefix alone that covers their path.
func (c *compiler) shadowed(path string, i int, r *Route, seen []seenEntry) []seenEntry {
	for j, m := range r.Match {
		if m == nil {
			continue
		}
		for _, s := range seen {
			switch {
			case reflect.DeepEqual(s.m, m):
				c.warnf(path+".match"+index(j), "never matches: routes[%d].match[%d] is the same", s.route, s.entry)
			case covers(s.m, m):
				c.warnf(path+".match"+index(j), "never matches: routes[%d].match[%d] matches the prefix %q first", s.route, s.entry, s.m.Path.Prefix)
			default:
				continue
			}
			break
		}
		seen = append(seen, seenEntry{i, j, m})
	}
	return seen
}

// covers reports whether a, an entry with only a case-sensitive path
// prefix, matches every request b does.
func covers(a, b *Match) bool {
	if a.Path == nil || a.Path.Prefix == "" || a.Path.IgnoreCase || len(a.Methods)+len(a.Headers)+len(a.Query) > 0 ||
		b.Path == nil || b.Path.Regex != "" {
		return false
	}
	p := b.Path.Prefix + b.Path.Exact
	if b.Path.IgnoreCase {
		p = strings.ToLower(p)
		if p != strings.ToUpper(p) { // letters may match in another case
			return false
		}
	}
	return strings.HasPrefix(p, a.Path.Prefix)
}

func (c *compiler) compileRoute(path, svcName string, i int, r *Route, grpc bool) *Rule {
	rule := &Rule{Service: svcName, Name: r.Name, Index: i}
	if rule.Name == "" {
		rule.Name = "routes" + index(i)
	}
	for j, m := range r.Match {
		p := path + ".match" + index(j)
		if m == nil {
			c.errorf(p, "empty match entry: leave match out to match every request")
			continue
		}
		rule.matchers = append(rule.matchers, c.compileMatch(p, m, grpc))
	}
	actions := 0
	for _, set := range []bool{len(r.Backends) > 0, r.Redirect != nil, r.DirectResponse != nil} {
		if set {
			actions++
		}
	}
	if actions > 1 {
		c.errorf(path, "only one of backends, redirect and directResponse")
	}
	switch {
	case r.Redirect != nil:
		rule.Redirect = c.compileRedirect(path+".redirect", r.Redirect, grpc)
	case r.DirectResponse != nil:
		rule.DirectResponse = c.compileDirect(path+".directResponse", r.DirectResponse, grpc)
	default:
		c.compileBackends(path, svcName, r.Backends, rule)
	}
	answers := r.Redirect != nil || r.DirectResponse != nil
	c.compileRewrite(path+".rewrite", r, rule, answers)
	if r.Headers != nil {
		rule.Request = c.compileHeaders(path+".headers.request", r.Headers.Request)
		rule.Response = c.compileHeaders(path+".headers.response", r.Headers.Response)
	}
	c.nonNegative(path+".timeout", r.Timeout)
	rule.Timeout = r.Timeout.Std()
	rule.Retry = c.compileRetry(path+".retries", r.Retries, r.Timeout)
	if r.Hedge != nil {
		c.nonNegative(path+".hedge.delay", r.Hedge.Delay)
		rule.Hedge = &HedgePolicy{Delay: r.Hedge.Delay.Std()}
	}
	rule.Fault = c.compileFault(path+".fault", r.Fault, grpc)
	if m := r.Mirror; m != nil {
		p := path + ".mirror"
		share := c.percent(p+".percent", m.Percent)
		if share == 0 && m.Percent == 0 {
			c.warnf(p+".percent", "0: nothing is mirrored")
		}
		svc := m.Service
		if svc == "" {
			svc = svcName
		}
		if d := c.destination(p, svc, m.Subset); d != nil {
			rule.Mirror = &MirrorPolicy{Destination: d, Share: share}
			for _, t := range rule.Targets {
				if t.Destination == d {
					c.warnf(p, "mirrors to %s, where the route already sends its calls", d)
					break
				}
			}
		}
	}
	return rule
}

func (c *compiler) compileMatch(path string, m *Match, grpc bool) matcher {
	mt := matcher{path: strMatcher{kind: strAny}}
	if pm := m.Path; pm != nil {
		if sm := c.compilePath(path+".path", pm); sm != nil {
			mt.path = *sm
		}
	}
	if len(m.Methods) > 0 && grpc {
		c.errorf(path+".methods", "gRPC calls have no method: match the path \"/pkg.Service/Method\" instead")
	}
	for k, meth := range m.Methods {
		if meth == "" || !validToken(meth) {
			c.errorf(path+".methods"+index(k), "%q is not an HTTP method", meth)
			continue
		}
		if up := strings.ToUpper(meth); up != meth && standardMethods[up] {
			c.warnf(path+".methods"+index(k), "methods are case-sensitive: %q does not match %s", meth, up)
		}
		mt.methods = append(mt.methods, meth)
		if meth == http.MethodGet {
			mt.methods = append(mt.methods, http.MethodHead)
		}
	}
	for _, h := range sortedKeys(m.Headers) {
		p := path + ".headers" + key(h)
		sm := c.compileString(p, m.Headers[h])
		if c.headerName(p, h) && sm != nil {
			n := newHeaderName(h)
			mt.headers = append(mt.headers, headerMatcher{lower: n.lower, canon: n.canon, strMatcher: *sm})
		}
	}
	if len(m.Query) > 0 && grpc {
		c.errorf(path+".query", "gRPC calls have no query")
	}
	for _, q := range sortedKeys(m.Query) {
		p := path + ".query" + key(q)
		if q == "" {
			c.errorf(p, "empty query parameter name")
		}
		if sm := c.compileString(p, m.Query[q]); sm != nil {
			mt.query = append(mt.query, queryMatcher{name: q, strMatcher: *sm})
		}
	}
	return mt
}

var standardMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true, http.MethodPatch: true,
	http.MethodDelete: true, http.MethodConnect: true, http.MethodOptions: true, http.MethodTrace: true,
}

// validToken: an HTTP method is a token (RFC 9110 §9.1).
func validToken(s string) bool {
	for _, r := range s {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
}

func (c *compiler) compilePath(path string, pm *PathMatch) *strMatcher {
	kinds := []struct {
		field string
		value string
		kind  strKind
	}{{"exact", pm.Exact, strExact}, {"prefix", pm.Prefix, strPrefix}, {"regex", pm.Regex, strRegex}}
	m := &strMatcher{fold: pm.IgnoreCase}
	set := 0
	for _, k := range kinds {
		if k.value == "" {
			continue
		}
		set++
		m.kind, m.value = k.kind, k.value
		if k.kind != strRegex && !strings.HasPrefix(k.value, "/") {
			c.errorf(path+"."+k.field, "%q does not start with /", k.value)
		}
		if k.kind == strRegex {
			m.re = c.compileRegex(path+".regex", k.value, pm.IgnoreCase)
		}
	}
	switch {
	case set == 0:
		c.errorf(path, "one of exact, prefix and regex is required")
		return nil
	case set > 1:
		c.errorf(path, "only one of exact, prefix and regex")
		return nil
	case m.kind == strRegex && m.re == nil:
		return nil
	}
	return m
}

func (c *compiler) compileString(path string, sm *StringMatch) *strMatcher {
	if sm == nil {
		c.errorf(path, "empty: one of exact, prefix, suffix, regex and present is required")
		return nil
	}
	m := &strMatcher{fold: sm.IgnoreCase, invert: sm.Invert}
	set := 0
	for _, k := range []struct {
		value string
		kind  strKind
	}{{sm.Exact, strExact}, {sm.Prefix, strPrefix}, {sm.Suffix, strSuffix}, {sm.Regex, strRegex}} {
		if k.value != "" {
			set++
			m.kind, m.value = k.kind, k.value
		}
	}
	if sm.Present {
		set++
		m.kind = strPresent
	}
	switch {
	case set == 0:
		c.errorf(path, "one of exact, prefix, suffix, regex and present is required")
		return nil
	case set > 1:
		c.errorf(path, "only one of exact, prefix, suffix, regex and present")
		return nil
	case m.kind == strRegex:
		if m.re = c.compileRegex(path+".regex", m.value, sm.IgnoreCase); m.re == nil {
			return nil
		}
	}
	return m
}

// maxRegexLen bounds a pattern; RE2 runs in linear time, but a huge
// program still costs memory on every table.
const maxRegexLen = 4096

// compileRegex compiles an RE2 pattern that must match a whole value.
func (c *compiler) compileRegex(path, pattern string, fold bool) *regexp.Regexp {
	if len(pattern) > maxRegexLen {
		c.errorf(path, "pattern of %d bytes, more than the limit of %d", len(pattern), maxRegexLen)
		return nil
	}
	if _, err := regexp.Compile(pattern); err != nil {
		c.wrapErr(path, err) // the error of the pattern as written
		return nil
	}
	full := "^(?:" + pattern + ")$"
	if fold {
		full = "(?i)" + full
	}
	re, err := regexp.Compile(full)
	if err != nil {
		c.wrapErr(path, err)
		return nil
	}
	return re
}

var redirectCodes = map[int]bool{0: true, 301: true, 302: true, 303: true, 307: true, 308: true}

func (c *compiler) compileRedirect(path string, r *Redirect, grpc bool) *Redirect {
	if grpc {
		c.errorf(path, "a gRPC service cannot redirect")
	}
	if !redirectCodes[r.Code] {
		c.errorf(path+".code", "%d: must be 301, 302, 303, 307 or 308", r.Code)
	}
	if r.Scheme != "" && r.Scheme != "http" && r.Scheme != "https" {
		c.errorf(path+".scheme", "%q: must be http or https", r.Scheme)
	}
	if r.Path != "" && !strings.HasPrefix(r.Path, "/") {
		c.errorf(path+".path", "%q does not start with /", r.Path)
	}
	if r.Authority != "" && !validAuthority(r.Authority) {
		c.errorf(path+".authority", "%q is not a host or host:port", r.Authority)
	}
	if r.Scheme == "" && r.Authority == "" && r.Path == "" {
		c.errorf(path, "sets none of scheme, authority and path: it would redirect to itself")
	}
	v := *r
	if v.Code == 0 {
		v.Code = http.StatusMovedPermanently
	}
	return &v
}

// validAuthority: a host or host:port, with nothing of a path, query,
// user or control character in it.
func validAuthority(a string) bool {
	if a == "" || strings.ContainsAny(a, "/?#@\\\"") {
		return false
	}
	for _, r := range a {
		if r <= ' ' || r >= 0x7f {
			return false
		}
	}
	return true
}

func (c *compiler) compileDirect(path string, d *DirectResponse, grpc bool) *DirectResponse {
	if grpc {
		c.errorf(path, "a gRPC service cannot answer with a direct response")
	}
	if d.Status < 200 || d.Status > 599 {
		c.errorf(path+".status", "%d: must be 200–599", d.Status)
	}
	v := *d
	return &v
}

func (c *compiler) compileBackends(path, svcName string, bs []*Backend, rule *Rule) {
	if len(bs) == 0 { // the route only sets policy: the default subset
		if d := c.destination(path, svcName, ""); d != nil {
			rule.Targets = []*Target{{Destination: d, Weight: TotalWeight}}
			rule.cumulative = []uint32{TotalWeight}
		}
		return
	}
	sum := 0
	ok := true
	for i, b := range bs {
		p := path + ".backends" + index(i)
		if b == nil {
			c.errorf(p, "empty backend")
			ok = false
			continue
		}
		w := b.Weight
		if len(bs) == 1 && w == 0 {
			w = TotalWeight
		}
		if w < 0 || w > TotalWeight {
			c.errorf(p+".weight", "%d is outside 0–10000 (basis points: 10000 is 100%%)", b.Weight)
			ok = false
		} else {
			sum += w
		}
		svc := b.Service
		if svc == "" {
			svc = svcName
		}
		d := c.destination(p, svc, b.Subset)
		t := &Target{Destination: d, Weight: w}
		if b.Headers != nil {
			t.Request = c.compileHeaders(p+".headers.request", b.Headers.Request)
			t.Response = c.compileHeaders(p+".headers.response", b.Headers.Response)
		}
		rule.Targets = append(rule.Targets, t)
		rule.cumulative = append(rule.cumulative, uint32(sum))
	}
	if ok && sum != TotalWeight {
		c.errorf(path+".backends", "weights sum to %d, not 10000 (basis points: 10000 is 100%%)", sum)
	}
}

func (c *compiler) compileRewrite(path string, r *Route, rule *Rule, answers bool) {
	rw := r.Rewrite
	if rw == nil {
		return
	}
	if answers {
		c.errorf(path, "a route that answers itself (redirect, directResponse) sends nothing to rewrite")
	}
	if rw.Path != "" && rw.Regex != nil {
		c.errorf(path, "only one of path and regex")
	}
	if rw.Authority != "" {
		if !validAuthority(rw.Authority) {
			c.errorf(path+".authority", "%q is not a host or host:port", rw.Authority)
		}
		rule.Authority = rw.Authority
	}
	if rw.Regex != nil {
		if rw.Regex.Pattern == "" {
			c.errorf(path+".regex.pattern", "empty pattern")
		} else if re, err := regexp.Compile(rw.Regex.Pattern); err != nil {
			c.wrapErr(path+".regex.pattern", err)
		} else {
			rule.rewriteRegex, rule.rewriteSubst = re, rw.Regex.Substitution
		}
	}
	if rw.Path == "" {
		return
	}
	if !strings.HasPrefix(rw.Path, "/") {
		c.errorf(path+".path", "%q does not start with /", rw.Path)
	}
	if len(r.Match) == 0 {
		c.errorf(path+".path", "a path rewrite needs a path match: the route has no match entries")
	}
	for j, m := range r.Match {
		if m == nil || m.Path == nil || m.Path.Regex != "" || m.Path.Exact == "" && m.Path.Prefix == "" {
			c.errorf(path+".path", "a path rewrite needs every match entry to match the path by exact or prefix; match[%d] does not", j)
			break
		}
	}
	rule.rewritePath, rule.rewriteTo = true, rw.Path
}

// compileRetry checks and compiles a retry policy, once per config value;
// timeout is the route's, to warn of a per-try timeout that never fires.
func (c *compiler) compileRetry(path string, r *Retry, timeout Duration) *RetryPolicy {
	if r == nil {
		return nil
	}
	if p, ok := c.retries[r]; ok {
		return p
	}
	p := &RetryPolicy{MaxAttempts: r.Attempts + 1, PerTryTimeout: r.PerTryTimeout.Std()}
	if r.Attempts < 0 || r.Attempts > 10 {
		c.errorf(path+".attempts", "%d is outside 0–10", r.Attempts)
	}
	c.nonNegative(path+".perTryTimeout", r.PerTryTimeout)
	if timeout > 0 && r.PerTryTimeout >= timeout {
		c.warnf(path+".perTryTimeout", "%v is not below the route's timeout of %v: a try never times out before the call", r.PerTryTimeout, timeout)
	}
	on := r.RetryOn
	if len(on) == 0 {
		on = []string{"connect-failure", "refused-stream", "unavailable", "cancelled"}
	}
	for i, cond := range on {
		if !p.On.add(cond) {
			c.errorf(path+".retryOn"+index(i), "unknown condition %q: connect-failure, refused-stream, reset, 5xx, gateway-error, retriable-4xx, an HTTP status or a gRPC code", cond)
		}
	}
	c.retries[r] = p
	return p
}

// add adds a retry condition; false when it is not one.
func (o *RetryOn) add(cond string) bool {
	switch cond {
	case "connect-failure":
		o.ConnectFailure = true
	case "refused-stream":
		o.RefusedStream = true
	case "reset":
		o.Reset = true
	case "5xx":
		o.setStatus(500, 599)
	case "gateway-error":
		o.setStatus(502, 504)
	case "retriable-4xx":
		o.setStatus(409, 409)
	default:
		if n, err := strconv.Atoi(cond); err == nil {
			if n < 100 || n > 599 {
				return false
			}
			o.setStatus(n, n)
			return true
		}
		code, ok := grpcCode(cond)
		if !ok {
			return false
		}
		o.grpc |= 1 << code
	}
	return true
}

// grpcCode reads a gRPC code by name in any common spelling
// ("UNAVAILABLE", "Unavailable", "deadline-exceeded", "DEADLINE_EXCEEDED")
// or by number.
func grpcCode(s string) (codes.Code, bool) {
	if n, err := strconv.Atoi(s); err == nil {
		return codes.Code(n), n >= 0 && n <= 16
	}
	want := strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(s))
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		if strings.ToLower(c.String()) == want {
			return c, true
		}
	}
	if want == "cancelled" {
		return codes.Canceled, true
	}
	return 0, false
}

func (c *compiler) compileFault(path string, f *Fault, grpc bool) *FaultPolicy {
	if f == nil {
		return nil
	}
	fp := &FaultPolicy{MaxActive: f.MaxActive}
	if f.Delay == nil && f.Abort == nil {
		c.errorf(path, "neither delay nor abort")
	}
	if f.MaxActive < 0 {
		c.errorf(path+".maxActive", "%d is negative", f.MaxActive)
	}
	if d := f.Delay; d != nil {
		if d.Fixed <= 0 {
			c.errorf(path+".delay.fixed", "%v: must be positive", d.Fixed)
		}
		fp.Delay = d.Fixed.Std()
		fp.DelayShare = c.percent(path+".delay.percent", d.Percent)
	}
	if a := f.Abort; a != nil {
		p := path + ".abort"
		fp.AbortShare = c.percent(p+".percent", a.Percent)
		switch {
		case (a.HTTPStatus != 0) == (a.GRPCStatus != ""):
			c.errorf(p, "exactly one of httpStatus and grpcStatus")
		case a.HTTPStatus != 0:
			if grpc {
				c.errorf(p+".httpStatus", "a gRPC service aborts with grpcStatus")
			}
			if a.HTTPStatus < 200 || a.HTTPStatus > 599 {
				c.errorf(p+".httpStatus", "%d: must be 200–599", a.HTTPStatus)
			}
			fp.AbortHTTP, fp.AbortGRPC = a.HTTPStatus, codeFromHTTP(a.HTTPStatus)
		default:
			code, ok := grpcCode(a.GRPCStatus)
			if !ok || code == codes.OK {
				c.errorf(p+".grpcStatus", "%q is not a gRPC error code (such as UNAVAILABLE or 14)", a.GRPCStatus)
			}
			fp.AbortGRPC, fp.AbortHTTP = code, httpFromCode(code)
		}
	}
	return fp
}

// codeFromHTTP maps an HTTP status to a gRPC code as gRPC does for
// responses that are not gRPC (doc/http-grpc-status-mapping.md).
func codeFromHTTP(status int) codes.Code {
	switch status {
	case http.StatusBadRequest:
		return codes.Internal
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return codes.Unavailable
	}
	return codes.Unknown
}

// httpFromCode maps a gRPC code to the HTTP status of the same meaning.
func httpFromCode(c codes.Code) int {
	switch c {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.AlreadyExists, codes.Aborted:
		return http.StatusConflict
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.Canceled:
		return 499
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
