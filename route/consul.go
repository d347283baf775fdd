package route

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"

	"github.com/weftmesh/weft/discovery"
)

// ErrConsul is wrapped by the rejections of a [Consul] source whose
// queries failed: the agent could not be reached, answered with an error
// or did not answer in time.
var ErrConsul = errors.New("route: consul")

type consulSettings struct {
	wait, margin           time.Duration
	limit                  rate.Limit
	backoffMin, backoffMax time.Duration
	datacenter             string
	caller                 string // the service whose upstream settings apply
}

func defaultConsulSettings() consulSettings {
	return consulSettings{
		wait:       discovery.DefaultConsulWait,
		margin:     discovery.DefaultQueryMargin,
		limit:      discovery.DefaultConsulRate,
		backoffMin: discovery.DefaultConsulBackoff,
		backoffMax: discovery.DefaultConsulMaxBackoff,
	}
}

// WithConsulWait sets the longest time one blocking query of a [Consul]
// source waits for a change (default [discovery.DefaultConsulWait]; Consul caps it
// at 10 minutes). Each query waits a random 0–10% less. Values ≤ 0 are
// ignored.
func WithConsulWait(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.consul.wait = min(d, 10*time.Minute)
		}
	})
}

// WithConsulQueryMargin sets how long past its wait + wait/16 a query of a
// [Consul] source may take before it fails (default
// [discovery.DefaultQueryMargin]). Values ≤ 0 are ignored.
func WithConsulQueryMargin(d time.Duration) Option {
	return optionFunc(func(o *options) {
		if d > 0 {
			o.consul.margin = d
		}
	})
}

// WithConsulRate sets the sustained query rate of each watch of a [Consul]
// source (default [discovery.DefaultConsulRate]); the token bucket holds 2. Values
// ≤ 0 are ignored.
func WithConsulRate(r rate.Limit) Option {
	return optionFunc(func(o *options) {
		if r > 0 {
			o.consul.limit = r
		}
	})
}

// WithConsulBackoff sets the backoff of a [Consul] source after failed
// queries: lo doubled per consecutive failure, capped at hi, each wait
// drawn from its upper half (defaults [discovery.DefaultConsulBackoff],
// [discovery.DefaultConsulMaxBackoff]). Values ≤ 0 are ignored; hi is raised to lo
// when smaller.
func WithConsulBackoff(lo, hi time.Duration) Option {
	return optionFunc(func(o *options) {
		if lo > 0 {
			o.consul.backoffMin = lo
		}
		if hi > 0 {
			o.consul.backoffMax = hi
		}
	})
}

// WithConsulDatacenter has a [Consul] source read the discovery chains of
// dc instead of the agent's datacenter. An empty dc is ignored.
func WithConsulDatacenter(dc string) Option {
	return optionFunc(func(o *options) {
		if dc != "" {
			o.consul.datacenter = dc
		}
	})
}

// withWarnings adds warnings to the table Compile builds.
func withWarnings(w []*FieldError) Option {
	return optionFunc(func(o *options) { o.warnings = append(o.warnings, w...) })
}

// Consul is a source that follows Consul's L7 traffic management: the
// discovery chain of each named service — its service-router,
// service-splitter, service-resolver and service-defaults config entries
// as Consul compiles them — translated into a route table.
//
// Each service is watched with blocking queries (one goroutine per
// service while [Consul.Run] runs) that wait on the last index seen,
// start over when the index goes backwards, never wait on index 0, are
// rate-limited by a token bucket and back off with jitter after errors;
// a change in Consul reaches the table as soon as the agent answers.
// Where the compiled chain lacks a field (a split's header changes, a
// resolver's request timeout and connect timeout) the source reads the
// config entries themselves.
//
// Each chain target keeps its own subset filter, datacenter and
// only-passing flag: a filter that tags and meta can say becomes them
// (one discovery watch of the service serves every such subset); any
// other becomes the subset's [Subset.Filter], with the target's
// only-passing flag, for a watch of its own. A resolver's failover, by
// subset or "*" (its services, subsets, datacenters and targets, in the
// order Consul compiled them), becomes the [Failover] list of the
// subset or service; failover targets in another namespace are warnings.
//
// The first table is published once every service's chain has been read;
// until then [Consul.Table] is empty and [Consul.Ready] open. After that
// each change rebuilds the whole table from the latest good chain of
// every service. A chain that cannot be translated (a redirect to
// another datacenter, for example) is refused for its service
// alone: that service keeps the routes of its last good chain — or, when
// it never had one, has none in the table, so its calls go as without
// routes — while changes to other services still apply. A merged table
// that does not compile is refused whole, and the last good table stays.
// Each rejection, a [*ValidationError] whose field paths name the config
// entry and field (service-resolver/web.Subsets["v2"].Filter), is kept
// ([Consul.Status]) and reported ([WithOnReject]). A failed query is a rejection wrapping
// [ErrConsul], recorded once per distinct error. Fields weft does not
// apply are warnings in [Table.Warnings] ([WithOnWarning] reports each
// once). With [WithConsulCaller], the caller's service-defaults are
// watched too, and their upstream Limits, ConnectTimeoutMs and
// PassiveHealthCheck become each watched service's connection pool and
// outlier detection. A service's connect timeout is the caller's
// upstream ConnectTimeoutMs when set, else its resolver's
// ConnectTimeout, as Consul's Envoy clusters take it.
//
// Consul is safe for concurrent use; build one with [NewConsul].
type Consul struct {
	pub      *publisher
	client   *api.Client
	services []string
	set      consulSettings
	ready    chan struct{}

	build sync.Mutex // serializes rebuilds

	mu      sync.Mutex
	results map[string]*consulResult
	// The service-defaults entries by name, watched with a caller
	// (consul_defaults.go).
	defaults      map[string]*api.ServiceConfigEntry
	defaultsRead  bool
	defaultsIndex uint64
	lastErr       map[string]string // per service, the last query error reported
}

// consulResult is the latest translation of one service's chain.
type consulResult struct {
	index    uint64
	services map[string]*Service // the service's own, and subsets of others
	warnings []*FieldError
	err      []*FieldError
}

var _ Source = (*Consul)(nil)

// NewConsul returns a source that follows the discovery chains of
// services through client. It contacts no agent: [Consul.Run] does.
// client's HTTP client must not time out a blocking query: give it no
// timeout (as [api.DefaultConfig] does) or one above the wait plus
// wait/16; each query has its own timeout of wait + wait/16 + margin. It
// fails when client is nil or services is empty or names a service twice
// or the empty name. It reads [WithOnUpdate], [WithOnReject], [WithOnWarning], [WithClock],
// [WithConsulWait], [WithConsulQueryMargin], [WithConsulRate],
// [WithConsulBackoff], [WithConsulDatacenter] and [WithConsulCaller].
func NewConsul(client *api.Client, services []string, opts ...Option) (*Consul, error) {
	if client == nil {
		return nil, errors.New("route: consul: nil client")
	}
	if len(services) == 0 {
		return nil, errors.New("route: consul: no services to watch")
	}
	seen := map[string]bool{}
	for _, s := range services {
		if s == "" || seen[s] {
			return nil, fmt.Errorf("route: consul: service name %q is empty or given twice", s)
		}
		seen[s] = true
	}
	pub := newPublisher("consul", opts)
	set := pub.opts.consul
	set.backoffMax = max(set.backoffMax, set.backoffMin)
	return &Consul{
		pub:      pub,
		client:   client,
		services: append([]string(nil), services...),
		set:      set,
		ready:    make(chan struct{}),
		results:  map[string]*consulResult{},
		lastErr:  map[string]string{},
	}, nil
}

// Table returns the current table: one atomic load.
func (c *Consul) Table() *Table { return c.pub.Table() }

// Status returns the current table and the rejections so far.
func (c *Consul) Status() Status { return c.pub.Status() }

// Ready is closed once the first table is published.
func (c *Consul) Ready() <-chan struct{} { return c.ready }

// Run watches every service's chain until ctx ends, then returns ctx's
// error once its goroutines have stopped. Call it once.
func (c *Consul) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	if c.set.caller != "" {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watchDefaults(ctx)
		}()
	}
	for _, s := range c.services {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.watch(ctx, s)
		}()
	}
	wg.Wait()
	return ctx.Err()
}

// watch is the loop of one service's chain.
func (c *Consul) watch(ctx context.Context, service string) {
	var applied uint64
	c.follow(ctx, fmt.Sprintf("chain of %q", service), func(q *api.QueryOptions) (uint64, error) {
		resp, meta, err := c.client.DiscoveryChain().Get(service, nil, q)
		if err != nil {
			return 0, err
		}
		if resp == nil || resp.Chain == nil {
			return 0, errors.New("answer without a chain")
		}
		if meta.LastIndex == applied { // nothing changed
			return meta.LastIndex, nil
		}
		ent, err := c.entries(q.Context(), resp.Chain)
		if err != nil {
			return 0, err
		}
		applied = meta.LastIndex
		c.applyChain(service, resp.Chain, ent, meta.LastIndex)
		return meta.LastIndex, nil
	})
}

// applyChain takes in a service's chain, read at index, and the entries
// read with it.
func (c *Consul) applyChain(service string, chain *api.CompiledDiscoveryChain, ent *consulEntries, index uint64) {
	res := translateChain(chain, ent)
	res.index = index
	if len(res.err) > 0 {
		// Refused for this service alone: it keeps its last good
		// translation, or none at all.
		_ = c.pub.update(nil, "", &ValidationError{Errors: res.err, Warnings: res.warnings})
		c.mu.Lock()
		prev := c.results[service]
		if prev == nil {
			c.results[service] = &consulResult{index: index}
		}
		c.mu.Unlock()
		if prev == nil { // the service's first chain: the table may wait for it
			c.rebuild()
		}
		return
	}
	c.mu.Lock()
	c.results[service] = res
	c.mu.Unlock()
	c.rebuild()
}

// follow is the loop of one blocking query, named what in errors: step
// makes the query with q (its wait index, wait time and context set),
// applies what changed, and returns the index Consul answered with. The
// loop waits on that index, starts over when it goes backwards, never
// waits on index 0, is rate-limited and backs off after errors, which
// it records as rejections wrapping [ErrConsul].
func (c *Consul) follow(ctx context.Context, what string, step func(q *api.QueryOptions) (uint64, error)) {
	limiter := rate.NewLimiter(c.set.limit, 2)
	var index uint64
	failures := 0
	for {
		if err := limiter.Wait(ctx); err != nil {
			return
		}
		q := &api.QueryOptions{Datacenter: c.set.datacenter, AllowStale: true, WaitIndex: index}
		if index > 0 {
			q.WaitTime = c.set.wait - time.Duration(rand.Int64N(int64(c.set.wait/10)+1))
		}
		timeout := q.WaitTime + q.WaitTime/16 + c.set.margin
		qctx, cancel := context.WithTimeout(ctx, timeout)
		last, err := step(q.WithContext(qctx))
		if err != nil && qctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("no answer within %v (wait %v + wait/16 + margin %v)", timeout, q.WaitTime, c.set.margin)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			c.failed(what, fmt.Errorf("%w: %s: %v", ErrConsul, what, err))
			index = 0 // read afresh after any error
			select {
			case <-ctx.Done():
				return
			case <-time.After(c.backoff(failures)):
			}
			continue
		}
		failures = 0
		c.mu.Lock()
		delete(c.lastErr, what)
		c.mu.Unlock()
		switch {
		case last < index:
			index = 0 // went backwards: start over without waiting
		case last == 0:
			index = 1 // never wait on index 0
		default:
			index = last
		}
	}
}

// backoff returns the wait after n consecutive failures: the least
// backoff doubled n-1 times, capped, drawn at random from its upper half.
func (c *Consul) backoff(n int) time.Duration {
	shift := min(n-1, 30)
	d := c.set.backoffMax
	if c.set.backoffMin <= d>>shift {
		d = c.set.backoffMin << shift
	}
	return d/2 + rand.N(d/2+1)
}

// failed records a query error of service's watch as a rejection, once
// per distinct error in a row.
func (c *Consul) failed(service string, err error) {
	c.mu.Lock()
	dup := c.lastErr[service] == err.Error()
	c.lastErr[service] = err.Error()
	c.mu.Unlock()
	if !dup {
		_ = c.pub.update(nil, "", err)
	}
}

// rebuild merges the latest translations of every service and publishes
// them, or records why not.
func (c *Consul) rebuild() {
	c.build.Lock()
	defer c.build.Unlock()
	c.mu.Lock()
	results := make([]*consulResult, 0, len(c.services))
	for _, s := range c.services {
		r := c.results[s]
		if r == nil {
			c.mu.Unlock()
			return // not every chain read yet
		}
		results = append(results, r)
	}
	waiting := c.set.caller != "" && !c.defaultsRead
	c.mu.Unlock()
	if waiting {
		return // the caller's upstream settings not read yet
	}
	var warns []*FieldError
	for _, r := range results { // refused chains were kept out in watch
		warns = append(warns, r.warnings...)
	}
	cfg := &Config{Services: map[string]*Service{}}
	for i, r := range results { // each service's own translation first
		if own := r.services[c.services[i]]; own != nil {
			cfg.Services[c.services[i]] = own
		}
	}
	for _, r := range results { // then the subsets its chain uses of others
		for name, s := range r.services {
			mergeService(cfg, name, s)
		}
	}
	warns = append(warns, c.applyUpstreams(cfg)...)
	if err := c.pub.update(cfg, "", nil, WithSource("consul"), withWarnings(warns)); err == nil {
		select {
		case <-c.ready:
		default:
			close(c.ready)
		}
	}
}

// mergeService adds to cfg what s says of service name that cfg lacks:
// subsets, and the load balancer.
func mergeService(cfg *Config, name string, s *Service) {
	cur := cfg.Services[name]
	if cur == nil {
		cfg.Services[name] = s
		return
	}
	if cur == s {
		return
	}
	for sub, def := range s.Subsets {
		if cur.Subsets == nil {
			cur.Subsets = map[string]*Subset{}
		}
		if _, ok := cur.Subsets[sub]; !ok {
			cur.Subsets[sub] = def
		}
	}
	if cur.TrafficPolicy == nil && s.TrafficPolicy != nil {
		cur.TrafficPolicy = s.TrafficPolicy
	}
}

// consulEntries are the config entries a chain's translation reads for
// what the compiled chain lacks, by service name; nil when absent.
type consulEntries struct {
	resolvers map[string]*api.ServiceResolverConfigEntry
	splitters map[string]*api.ServiceSplitterConfigEntry
	defaults  *api.ServiceConfigEntry // the chain's own service's
}

// entries reads the resolvers of the chain's targets and the splitters of
// its splitter nodes.
func (c *Consul) entries(ctx context.Context, chain *api.CompiledDiscoveryChain) (*consulEntries, error) {
	ent := &consulEntries{
		resolvers: map[string]*api.ServiceResolverConfigEntry{},
		splitters: map[string]*api.ServiceSplitterConfigEntry{},
	}
	get := func(kind, name string) (api.ConfigEntry, error) {
		q := &api.QueryOptions{Datacenter: c.set.datacenter, AllowStale: true}
		e, _, err := c.client.ConfigEntries().Get(kind, name, q.WithContext(ctx))
		var se api.StatusError
		if errors.As(err, &se) && se.Code == http.StatusNotFound {
			return nil, nil
		}
		return e, err
	}
	for _, t := range sortedTargets(chain) {
		if _, done := ent.resolvers[t.Service]; done {
			continue
		}
		e, err := get(api.ServiceResolver, t.Service)
		if err != nil {
			return nil, err
		}
		r, _ := e.(*api.ServiceResolverConfigEntry)
		ent.resolvers[t.Service] = r
	}
	for _, n := range chain.Nodes {
		if n.Type != api.DiscoveryGraphNodeTypeSplitter {
			continue
		}
		svc := nodeService(n.Name)
		if _, done := ent.splitters[svc]; done {
			continue
		}
		e, err := get(api.ServiceSplitter, svc)
		if err != nil {
			return nil, err
		}
		s, _ := e.(*api.ServiceSplitterConfigEntry)
		ent.splitters[svc] = s
	}
	e, err := get(api.ServiceDefaults, chain.ServiceName)
	if err != nil {
		return nil, err
	}
	ent.defaults, _ = e.(*api.ServiceConfigEntry)
	return ent, nil
}

// nodeService returns the service of a router or splitter node's name,
// "<service>.<namespace>.<partition>".
func nodeService(name string) string {
	for range 2 {
		if i := strings.LastIndexByte(name, '.'); i > 0 {
			name = name[:i]
		}
	}
	return name
}

func sortedTargets(chain *api.CompiledDiscoveryChain) []*api.DiscoveryTarget {
	ids := make([]string, 0, len(chain.Targets))
	for id := range chain.Targets {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ts := make([]*api.DiscoveryTarget, 0, len(ids))
	for _, id := range ids {
		if t := chain.Targets[id]; t != nil {
			ts = append(ts, t)
		}
	}
	return ts
}

// chainTranslator translates one compiled chain.
type chainTranslator struct {
	chain    *api.CompiledDiscoveryChain
	ent      *consulEntries
	res      *consulResult
	warned   map[string]bool
	failed   map[string]bool
	resolved map[string]bool // services whose resolver was translated
}

func (x *chainTranslator) errorf(path, format string, args ...any) {
	x.fail(&FieldError{Path: path, Message: fmt.Sprintf(format, args...), Err: ErrUnsupported})
}

// fail records an error once, however many routes reach its field.
func (x *chainTranslator) fail(fe *FieldError) {
	if x.failed[fe.Path+"\x00"+fe.Message] {
		return
	}
	x.failed[fe.Path+"\x00"+fe.Message] = true
	x.res.err = append(x.res.err, fe)
}

func (x *chainTranslator) warnf(path, format string, args ...any) {
	if x.warned[path] {
		return
	}
	x.warned[path] = true
	x.res.warnings = append(x.res.warnings, &FieldError{Path: path, Message: fmt.Sprintf(format, args...), Err: ErrUnsupported})
}

// service returns the translated service name, creating it.
func (x *chainTranslator) service(name string) *Service {
	s := x.res.services[name]
	if s == nil {
		s = &Service{}
		x.res.services[name] = s
	}
	return s
}

// translateChain translates a compiled discovery chain and the entries
// read with it. Problems are in the result's err.
func translateChain(chain *api.CompiledDiscoveryChain, ent *consulEntries) *consulResult {
	x := &chainTranslator{
		chain:    chain,
		ent:      ent,
		res:      &consulResult{services: map[string]*Service{}},
		warned:   map[string]bool{},
		failed:   map[string]bool{},
		resolved: map[string]bool{},
	}
	name := chain.ServiceName
	own := x.service(name)
	switch chain.Protocol {
	case "http":
		own.Protocol = "http"
	case "grpc":
		own.Protocol = "grpc"
	case "", "http2", "tcp":
		// Called with either; a tcp chain has no router or splitter.
	default:
		x.warnf("service-defaults/"+name+".Protocol", "protocol %q is not known to weft; calls are routed as for http and grpc alike", chain.Protocol)
	}
	if ent != nil {
		x.inboundFields(ent.defaults)
	}
	start := chain.Nodes[chain.StartNode]
	if start == nil {
		x.errorf("discovery-chain/"+name+".StartNode", "node %q is not in the chain", chain.StartNode)
		return x.res
	}
	if start.Type == api.DiscoveryGraphNodeTypeRouter {
		for i, r := range start.Routes {
			path := fmt.Sprintf("service-router/%s.Routes[%d]", name, i)
			rt := x.route(path, r)
			if rt == nil {
				continue
			}
			rt.Name = path
			if i == len(start.Routes)-1 {
				// Consul appends a catch-all to every router.
				rt.Name = "service-router/" + name + " catch-all"
			}
			own.Routes = append(own.Routes, rt)
		}
		return x.res
	}
	rt := &Route{Name: "discovery-chain/" + name}
	rt.Backends, rt.Timeout = x.backends("discovery-chain/"+name, chain.StartNode)
	own.Routes = []*Route{rt}
	return x.res
}

// route translates one route of a router node.
func (x *chainTranslator) route(path string, r *api.DiscoveryRoute) *Route {
	if r == nil || r.Definition == nil {
		x.errorf(path, "route without a definition")
		return nil
	}
	rt := &Route{}
	if m := r.Definition.Match; m != nil && m.HTTP != nil {
		rt.Match = []*Match{x.match(path+".Match.HTTP", m.HTTP)}
	}
	rt.Backends, rt.Timeout = x.backends(path, r.NextNode)
	d := r.Definition.Destination
	if d == nil {
		return rt
	}
	dp := path + ".Destination"
	if d.PrefixRewrite != "" {
		rt.Rewrite = &Rewrite{Path: d.PrefixRewrite}
	}
	if d.RequestTimeout > 0 {
		rt.Timeout = Duration(d.RequestTimeout)
	}
	if d.IdleTimeout > 0 {
		x.warnf(dp+".IdleTimeout", "not applied: weft does not time out idle streams per route")
	}
	rt.Retries = x.retries(dp, d)
	h := &Headers{Request: headerOps(d.RequestHeaders), Response: headerOps(d.ResponseHeaders)}
	if h.Request != nil || h.Response != nil {
		rt.Headers = h
	}
	return rt
}

// match translates a router's HTTP match.
func (x *chainTranslator) match(path string, m *api.ServiceRouteHTTPMatch) *Match {
	out := &Match{}
	switch {
	case m.PathExact != "":
		out.Path = &PathMatch{Exact: m.PathExact, IgnoreCase: m.CaseInsensitive}
	case m.PathPrefix != "":
		out.Path = &PathMatch{Prefix: m.PathPrefix, IgnoreCase: m.CaseInsensitive}
	case m.PathRegex != "":
		out.Path = &PathMatch{Regex: m.PathRegex, IgnoreCase: m.CaseInsensitive}
	}
	if len(m.Methods) > 0 {
		out.Methods = append([]string(nil), m.Methods...)
	}
	for i, h := range m.Header {
		hp := fmt.Sprintf("%s.Header[%d]", path, i)
		sm := &StringMatch{Exact: h.Exact, Prefix: h.Prefix, Suffix: h.Suffix, Regex: h.Regex, Present: h.Present, Invert: h.Invert}
		if out.Headers == nil {
			out.Headers = map[string]*StringMatch{}
		}
		key := http.CanonicalHeaderKey(h.Name)
		if _, dup := out.Headers[key]; dup {
			x.errorf(hp, "a second match on header %q: weft matches each header once", h.Name)
			continue
		}
		out.Headers[key] = sm
	}
	for i, q := range m.QueryParam {
		if out.Query == nil {
			out.Query = map[string]*StringMatch{}
		}
		if _, dup := out.Query[q.Name]; dup {
			x.errorf(fmt.Sprintf("%s.QueryParam[%d]", path, i), "a second match on query parameter %q: weft matches each parameter once", q.Name)
			continue
		}
		out.Query[q.Name] = &StringMatch{Exact: q.Exact, Regex: q.Regex, Present: q.Present}
	}
	return out
}

// retries translates a destination's retry fields as Consul configures
// Envoy: the conditions of RetryOn, connect-failure and the status codes;
// NumRetries retries (Envoy's 1 when zero) when any condition is set.
func (x *chainTranslator) retries(path string, d *api.ServiceRouteDestination) *Retry {
	var on []string
	for i, c := range d.RetryOn {
		if c == "envoy-ratelimited" {
			x.errorf(fmt.Sprintf("%s.RetryOn[%d]", path, i), "%q: weft has no rate-limit header of Envoy's to retry on", c)
			continue
		}
		on = append(on, c)
	}
	if d.RetryOnConnectFailure {
		on = append(on, "connect-failure")
	}
	for _, code := range d.RetryOnStatusCodes {
		on = append(on, strconv.FormatUint(uint64(code), 10))
	}
	if len(on) == 0 {
		if d.NumRetries > 0 {
			x.warnf(path+".NumRetries", "%d retries without a retry condition retry nothing, as in Consul's proxies", d.NumRetries)
		}
		return nil
	}
	n := int(d.NumRetries)
	if n == 0 {
		n = 1
	}
	return &Retry{Attempts: n, RetryOn: on}
}

// backends follows a router's next node, a splitter or a resolver, to
// weighted backends, and returns with them the request timeout of their
// resolvers (when they agree).
func (x *chainTranslator) backends(path, node string) ([]*Backend, Duration) {
	n := x.chain.Nodes[node]
	if n == nil {
		x.errorf(path, "next node %q is not in the chain", node)
		return nil, 0
	}
	switch n.Type {
	case api.DiscoveryGraphNodeTypeResolver:
		b, to := x.resolver(path, n)
		if b == nil {
			return nil, 0
		}
		return []*Backend{b}, to
	case api.DiscoveryGraphNodeTypeSplitter:
	default:
		x.errorf(path, "next node %q is a %s, not a splitter or resolver", node, n.Type)
		return nil, 0
	}
	svc := nodeService(n.Name)
	sp := "service-splitter/" + svc
	var entry *api.ServiceSplitterConfigEntry
	if x.ent != nil {
		entry = x.ent.splitters[svc]
	}
	aligned := entry != nil && len(entry.Splits) == len(n.Splits)
	if entry != nil && !aligned && splitsHaveHeaders(entry) {
		x.errorf(sp+".Splits", "header changes of nested splitters cannot be placed: Consul flattened %d splits into %d", len(entry.Splits), len(n.Splits))
	}
	var bs []*Backend
	var timeout Duration
	sum := 0
	for i, s := range n.Splits {
		next := x.chain.Nodes[s.NextNode]
		if next == nil || next.Type != api.DiscoveryGraphNodeTypeResolver {
			x.errorf(fmt.Sprintf("%s.Splits[%d]", sp, i), "split to %q, which is not a resolver of the chain", s.NextNode)
			continue
		}
		b, to := x.resolver(fmt.Sprintf("%s.Splits[%d]", sp, i), next)
		if b == nil {
			continue
		}
		// Weights are percentages in steps of 0.01: basis points.
		b.Weight = int(math.Round(float64(s.Weight) * 100))
		sum += b.Weight
		if i == len(n.Splits)-1 && sum != TotalWeight && math.Abs(float64(sum-TotalWeight)) <= float64(len(n.Splits)) {
			b.Weight += TotalWeight - sum // float32 rounding of the last split
		}
		if aligned {
			es := entry.Splits[i]
			h := &Headers{Request: headerOps(es.RequestHeaders), Response: headerOps(es.ResponseHeaders)}
			if h.Request != nil || h.Response != nil {
				b.Headers = h
			}
		}
		if len(bs) == 0 || to == timeout {
			timeout = to
		} else {
			x.errorf(sp+".Splits", "the resolvers of the splits have different request timeouts (%v, %v): weft bounds a route's calls with one; set RequestTimeout on the router's route", timeout, to)
		}
		bs = append(bs, b)
	}
	return bs, timeout
}

func splitsHaveHeaders(e *api.ServiceSplitterConfigEntry) bool {
	for _, s := range e.Splits {
		if headerOps(s.RequestHeaders) != nil || headerOps(s.ResponseHeaders) != nil {
			return true
		}
	}
	return false
}

// resolver translates a resolver node into a backend, defining the
// target's subset and the service's load balancer, and returns the
// resolver's request timeout.
func (x *chainTranslator) resolver(path string, n *api.DiscoveryGraphNode) (*Backend, Duration) {
	if n.Resolver == nil {
		x.errorf(path, "resolver node %q without a resolver", n.Name)
		return nil, 0
	}
	t := x.chain.Targets[n.Resolver.Target]
	if t == nil {
		x.errorf(path, "target %q is not in the chain", n.Resolver.Target)
		return nil, 0
	}
	rp := "service-resolver/" + t.Service
	if t.Datacenter != "" && x.chain.Datacenter != "" && t.Datacenter != x.chain.Datacenter {
		x.errorf(rp+".Redirect.Datacenter", "target %s is in datacenter %q: weft's route tables reach only the local datacenter %q", t.ID, t.Datacenter, x.chain.Datacenter)
		return nil, 0
	}
	var entry *api.ServiceResolverConfigEntry
	if x.ent != nil {
		entry = x.ent.resolvers[t.Service]
	}
	svc := x.service(t.Service)
	b := &Backend{Service: t.Service, Subset: x.subset(t)}
	if f := n.Resolver.Failover; f != nil {
		x.failover(rp, t, entry, b.Subset, f)
	}
	if !x.resolved[t.Service] {
		x.resolved[t.Service] = true
		tp := &TrafficPolicy{LoadBalancer: x.loadBalancer(rp+".LoadBalancer", n.LoadBalancer)}
		if entry != nil && entry.ConnectTimeout > 0 {
			// The entry's, not the chain's: the chain fills in Consul's
			// default of 5 s, where weft keeps its own.
			tp.ConnectionPool = &ConnectionPool{ConnectTimeout: Duration(entry.ConnectTimeout)}
		}
		if tp.LoadBalancer != nil || tp.ConnectionPool != nil {
			svc.TrafficPolicy = tp
		}
		if entry != nil {
			if entry.PrioritizeByLocality != nil {
				x.warnf(rp+".PrioritizeByLocality", "not applied")
			}
		}
	}
	var to Duration
	if entry != nil {
		to = Duration(entry.RequestTimeout)
	}
	return b, to
}

// subset defines the subset of target t in its service and returns its
// name; "" for a target of every instance. A filter weft can say with
// tags and meta becomes them, evaluated on the endpoints of the
// service's one watch; any other becomes the subset's Filter, with the
// target's only-passing flag, for a discovery watch of its own.
func (x *chainTranslator) subset(t *api.DiscoveryTarget) string {
	if t.ServiceSubset == "" {
		return ""
	}
	sub, err := consulFilter(t.Subset.Filter)
	switch {
	case err != nil:
		sub = &Subset{Filter: t.Subset.Filter, OnlyPassing: t.Subset.OnlyPassing}
	case sub == nil:
		return "" // an empty filter: every instance
	}
	svc := x.service(t.Service)
	if svc.Subsets == nil {
		svc.Subsets = map[string]*Subset{}
	}
	if cur := svc.Subsets[t.ServiceSubset]; cur != nil {
		sub.Failover = cur.Failover
	}
	svc.Subsets[t.ServiceSubset] = sub
	return t.ServiceSubset
}

// failover translates the failover of target t, whose subset is subset,
// as Consul compiled it: its targets in order, each a service, subset
// and datacenter.
func (x *chainTranslator) failover(rp string, t *api.DiscoveryTarget, entry *api.ServiceResolverConfigEntry, subset string, f *api.DiscoveryFailover) {
	fp := rp + ".Failover"
	if entry != nil {
		if _, ok := entry.Failover[t.ServiceSubset]; ok {
			fp += fmt.Sprintf("[%q]", t.ServiceSubset)
		} else if _, ok := entry.Failover["*"]; ok {
			fp += `["*"]`
		}
	}
	if f.Policy.Mode != "" && f.Policy.Mode != "sequential" {
		x.warnf(fp+".Policy", "mode %q not applied: weft tries the failover targets in their order", f.Policy.Mode)
	}
	fs := []*Failover{}
	for i, id := range f.Targets {
		ft := x.chain.Targets[id]
		tp := fmt.Sprintf("%s.Targets[%d]", fp, i)
		switch {
		case ft == nil:
			x.errorf(tp, "target %q is not in the chain", id)
			continue
		case ft.Namespace != "" && ft.Namespace != "default":
			x.warnf(tp+".Namespace", "target %s in namespace %q not applied: weft knows the default namespace only", id, ft.Namespace)
			continue
		}
		fo := &Failover{Service: ft.Service, Subset: x.subset(ft)}
		if ft.Datacenter != "" && ft.Datacenter != x.chain.Datacenter {
			fo.Datacenter = ft.Datacenter
		}
		fs = append(fs, fo)
	}
	svc := x.service(t.Service)
	if subset == "" {
		svc.Failover = fs
		return
	}
	svc.Subsets[subset].Failover = fs
}

// loadBalancer maps a resolver's load balancer onto weft's policies.
func (x *chainTranslator) loadBalancer(path string, lb *api.LoadBalancer) *LoadBalancer {
	if lb == nil || lb.Policy == "" {
		return nil
	}
	out := &LoadBalancer{Policy: lb.Policy}
	if lb.RingHashConfig != nil {
		x.warnf(path+".RingHashConfig", "not applied: weft sizes its rings itself")
	}
	if lb.LeastRequestConfig != nil {
		x.warnf(path+".LeastRequestConfig", "not applied: weft's least_request compares two random choices")
	}
	for i, h := range lb.HashPolicies {
		hp := fmt.Sprintf("%s.HashPolicies[%d]", path, i)
		switch {
		case h.SourceIP:
			x.warnf(hp+".SourceIP", "not applied: weft hashes a header, a cookie or a query parameter")
		case out.HashHeader != "" || out.HashCookie != "" || out.HashQuery != "":
			x.warnf(hp, "not applied: weft hashes one header, cookie or query parameter, the first hash policy's")
		case h.Field == "header":
			out.HashHeader = h.FieldValue
		case h.Field == "cookie":
			out.HashCookie = h.FieldValue
			if h.CookieConfig != nil {
				x.warnf(hp+".CookieConfig", "not applied: weft hashes a cookie the caller sets, and sets none")
			}
		case h.Field == "query_parameter":
			out.HashQuery = h.FieldValue
		default:
			x.warnf(hp+".Field", "%q not applied: weft hashes a header, a cookie or a query parameter", h.Field)
		}
	}
	return out
}

// headerOps translates Consul's header modifiers; nil when they change
// nothing.
func headerOps(m *api.HTTPHeaderModifiers) *HeaderOps {
	if m == nil || len(m.Add)+len(m.Set)+len(m.Remove) == 0 {
		return nil
	}
	ops := &HeaderOps{Remove: append([]string(nil), m.Remove...)}
	if len(m.Set) > 0 {
		ops.Set = make(map[string]string, len(m.Set))
		for k, v := range m.Set {
			ops.Set[k] = v
		}
	}
	if len(m.Add) > 0 {
		ops.Add = make(map[string]string, len(m.Add))
		for k, v := range m.Add {
			ops.Add[k] = v
		}
	}
	return ops
}
