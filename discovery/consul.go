package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/consul/api"
	"golang.org/x/time/rate"
)

// ErrConsul is wrapped by the errors a [Consul] watcher reports in
// [Update.Err] and [ConsulStatus.Err] when the agent cannot be reached or
// answers with an error. While it is set, subscribers keep the last good
// set.
var ErrConsul = errors.New("discovery: consul")

// ErrAgentTimeout is wrapped (with [ErrConsul]) by the error a [Consul]
// watcher reports when the agent took longer than the query's client-side
// timeout to answer: the query's wait, plus the wait/16 of jitter Consul
// may add, plus [WithQueryMargin]. An agent that accepts connections and
// never answers ends up here instead of stalling the watch.
var ErrAgentTimeout = errors.New("agent did not answer in time")

// Consul defaults.
const (
	// DefaultConsulWait is how long one blocking query may wait for a
	// change (Consul's own default is 5 minutes, its maximum 10).
	DefaultConsulWait = 5 * time.Minute
	// DefaultConsulRate is the sustained rate of queries one watch may
	// make; the token bucket holds 2 (Consul's documented advice).
	DefaultConsulRate = rate.Limit(10)
	// DefaultConsulBackoff and DefaultConsulMaxBackoff bound the capped
	// exponential backoff with jitter after failed queries.
	DefaultConsulBackoff    = 250 * time.Millisecond
	DefaultConsulMaxBackoff = 30 * time.Second
	// DefaultQueryMargin is how long past a query's wait (and Consul's
	// jitter of wait/16) the watcher waits for an answer before it gives
	// the query up as failed.
	DefaultQueryMargin = 10 * time.Second
)

// ConsulOption configures [NewConsul].
type ConsulOption interface{ apply(*consulConfig) }

type consulOptionFunc func(*consulConfig)

func (f consulOptionFunc) apply(c *consulConfig) { f(c) }

type consulConfig struct {
	passingOnly bool
	tags        []string
	filter      string
	datacenter  string
	stale       bool
	token       string
	zoneKey     string
	logger      *slog.Logger
	wait        time.Duration
	margin      time.Duration
	limit       rate.Limit
	backoffMin  time.Duration
	backoffMax  time.Duration
}

// WithWarning makes the watcher deliver instances whose checks are warning
// as well as passing ones (default: passing only). Warning instances get
// Consul's Weights.Warning as their weight; those with a warning weight of
// 0 are left out.
func WithWarning() ConsulOption {
	return consulOptionFunc(func(c *consulConfig) { c.passingOnly = false })
}

// WithTags keeps only instances that carry every one of tags.
func WithTags(tags ...string) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) { c.tags = append(c.tags, tags...) })
}

// WithFilter sets a Consul filter expression evaluated by the agent, such
// as `Service.Meta.version == "2"`. An empty expression is ignored.
func WithFilter(expr string) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) {
		if expr != "" {
			c.filter = expr
		}
	})
}

// WithDatacenter queries dc instead of the agent's own datacenter.
func WithDatacenter(dc string) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) { c.datacenter = dc })
}

// WithStale sets whether any Consul server may answer (stale reads, the
// default: they keep working without a leader, usually within tens of
// milliseconds of it) or only the leader. The age of a stale answer is in
// [ConsulStatus.LastContact].
func WithStale(allow bool) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) { c.stale = allow })
}

// WithToken sets the ACL token of the watcher's queries. It is sent in the
// X-Consul-Token header, never in a URL, and never appears in logs or
// errors. An empty token is ignored (the client's own token applies).
func WithToken(token string) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) {
		if token != "" {
			c.token = token
		}
	})
}

// WithZoneKey names the meta key that holds an instance's zone: the
// service's meta is consulted first, then its node's meta.
func WithZoneKey(key string) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) { c.zoneKey = key })
}

// WithConsulLogger sets where the watcher logs skipped instances and
// errors. A nil logger is ignored; the default discards.
func WithConsulLogger(l *slog.Logger) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) {
		if l != nil {
			c.logger = l
		}
	})
}

// WithWait sets the longest time one blocking query waits for a change
// (default [DefaultConsulWait]); Consul caps it at 10 minutes. Each query
// waits a random 0–10% less, so many watches do not wake together.
// Values ≤ 0 are ignored.
func WithWait(d time.Duration) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) {
		if d > 0 {
			c.wait = d
		}
	})
}

// WithQueryMargin sets how long past its wait a query may take before the
// watcher gives it up (default [DefaultQueryMargin]): each query's
// client-side timeout is its wait + wait/16 (the most jitter Consul adds)
// + margin, and a query without a wait (the first, and the first after
// an error) times out after margin. A query that times out is a failure
// wrapping [ErrAgentTimeout], with backoff like any other. Values ≤ 0 are
// ignored.
func WithQueryMargin(d time.Duration) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) {
		if d > 0 {
			c.margin = d
		}
	})
}

// WithRate sets the sustained query rate of each watch (default
// [DefaultConsulRate]); the token bucket holds 2. Values ≤ 0 are ignored.
func WithRate(r rate.Limit) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) {
		if r > 0 {
			c.limit = r
		}
	})
}

// WithBackoff sets the backoff after failed queries: min doubled per
// consecutive failure, capped at max, each wait drawn at random from its
// upper half (defaults [DefaultConsulBackoff], [DefaultConsulMaxBackoff]).
// Values ≤ 0 are ignored; max is raised to min when smaller.
func WithBackoff(min, max time.Duration) ConsulOption {
	return consulOptionFunc(func(c *consulConfig) {
		if min > 0 {
			c.backoffMin = min
		}
		if max > 0 {
			c.backoffMax = max
		}
	})
}

// ConsulStatus is what a [Consul] watcher knows about the health of one
// service's watch.
type ConsulStatus struct {
	// Index is the Raft index of the last answer.
	Index uint64
	// LastContact is how long ago the answering server last heard from
	// the leader (0 for the leader itself); stale reads can be this old.
	LastContact time.Duration
	// KnownLeader reports whether the answering server knew a leader.
	// Answers the agent serves from its streaming cache do not carry it
	// and report false.
	KnownLeader bool
	// LastSuccess is when the agent last answered.
	LastSuccess time.Time
	// Failures counts consecutive failed queries; 0 when healthy.
	Failures int
	// Err is the last query's error, nil when it succeeded. It wraps
	// [ErrConsul].
	Err error
}

// Consul is a [Watcher] over Consul's health API: it tells subscribers
// which instances of a service are healthy, from blocking queries that
// return as soon as the set changes.
//
// One watch runs per service however many subscribers ask for it; it
// starts with the first subscriber and stops, leaving no goroutine, when
// the last one leaves. Each watch waits on the last index it saw, resets
// when the index goes backwards (an agent restarted with fresh state),
// limits its query rate with a token bucket and backs off, with jitter,
// after errors. Each query has a client-side timeout of its wait + the
// wait/16 of jitter Consul may add + [WithQueryMargin], so an agent that
// hangs without going down becomes an error ([ErrAgentTimeout]) in
// [Update.Err] and [ConsulStatus.Err]. While the agent fails, subscribers keep the last good set
// with the error in [Update.Err]; an answer with no healthy instance is
// delivered as an empty set.
//
// Build one with [NewConsul]; the zero value is not usable. It is safe
// for concurrent use.
type Consul struct {
	client *api.Client
	cfg    consulConfig
	redact []string

	table fanout

	mu     sync.Mutex
	status map[string]*ConsulStatus
}

// NewConsul returns a watcher that queries the agent described by cfg (nil
// means [api.DefaultConfig], which reads CONSUL_HTTP_ADDR and friends).
// It fails if the configuration cannot make a client or if its HTTP client
// would time out a blocking query.
func NewConsul(cfg *api.Config, opts ...ConsulOption) (*Consul, error) {
	c := consulConfig{
		passingOnly: true,
		stale:       true,
		wait:        DefaultConsulWait,
		margin:      DefaultQueryMargin,
		limit:       DefaultConsulRate,
		backoffMin:  DefaultConsulBackoff,
		backoffMax:  DefaultConsulMaxBackoff,
	}
	for _, o := range opts {
		if o != nil {
			o.apply(&c)
		}
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	if c.backoffMax < c.backoffMin {
		c.backoffMax = c.backoffMin
	}
	if c.wait > 10*time.Minute {
		c.wait = 10 * time.Minute
	}
	if cfg == nil {
		cfg = api.DefaultConfig()
	}
	w := &Consul{cfg: c, status: make(map[string]*ConsulStatus)}
	for _, t := range []string{c.token, cfg.Token} {
		if t != "" {
			w.redact = append(w.redact, t)
		}
	}
	if cfg.HttpClient != nil && cfg.HttpClient.Timeout > 0 && cfg.HttpClient.Timeout <= c.wait+c.wait/16 {
		return nil, fmt.Errorf("discovery: consul: HTTP client timeout %v must exceed the wait %v plus Consul's jitter of wait/16", cfg.HttpClient.Timeout, c.wait)
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("discovery: consul: %s", w.scrub(err.Error()))
	}
	w.client = client
	w.table.start = w.start
	return w, nil
}

// Watch implements [Watcher].
func (w *Consul) Watch(service string, fn func(Update)) (stop func(), err error) {
	return w.table.watch(service, fn)
}

// WatchTarget implements [TargetWatcher]: a watch of its own of the
// instances of t.Service in t.Datacenter (the watcher's datacenter when
// empty) that pass t.Filter and, when t.Filter is set, the watcher's
// [WithFilter] too, passing (or, unless t.OnlyPassing, warning) — with
// the same blocking queries, rate limit, backoff and timeouts as
// [Consul.Watch], and the watcher's tags, token and zone key. Its status
// is [Consul.Status] of t.String().
func (w *Consul) WatchTarget(t Target, fn func(Update)) (stop func(), err error) {
	return w.table.watchTarget(t, fn)
}

var _ TargetWatcher = (*Consul)(nil)

// query is what one watch asks the agent for.
type query struct {
	service     string
	datacenter  string
	filter      string
	passingOnly bool
}

// query returns the query of the watch of h: the watcher's settings for
// a service, the target's over them for a target.
func (w *Consul) query(h *hub) query {
	q := query{service: h.service, datacenter: w.cfg.datacenter, filter: w.cfg.filter, passingOnly: w.cfg.passingOnly}
	if t := h.target; t != nil {
		q.passingOnly = t.OnlyPassing
		if t.Datacenter != "" {
			q.datacenter = t.Datacenter
		}
		switch {
		case t.Filter == "":
		case q.filter == "":
			q.filter = t.Filter
		default:
			q.filter = "(" + q.filter + ") and (" + t.Filter + ")"
		}
	}
	return q
}

// Status returns the state of service's watch, and false when the service
// is not watched. The status of a target's watch ([Consul.WatchTarget])
// is under the target's String.
func (w *Consul) Status(service string) (ConsulStatus, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.status[service]
	if !ok {
		return ConsulStatus{}, false
	}
	return *s, true
}

// setStatus changes st under the watcher's lock.
func (w *Consul) setStatus(st *ConsulStatus, fn func(*ConsulStatus)) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fn(st)
}

// start is the fanout hook: one goroutine per watched service or target.
func (w *Consul) start(h *hub) func() {
	service, q := h.key, w.query(h)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	st := &ConsulStatus{}
	w.mu.Lock()
	w.status[service] = st
	w.mu.Unlock()
	go func() {
		defer close(done)
		w.run(ctx, q, h, st)
	}()
	return func() {
		cancel()
		<-done
		w.mu.Lock()
		if w.status[service] == st {
			delete(w.status, service)
		}
		w.mu.Unlock()
	}
}

// run is the watch loop of one service or target.
func (w *Consul) run(ctx context.Context, wq query, h *hub, st *ConsulStatus) {
	limiter := rate.NewLimiter(w.cfg.limit, 2)
	service := h.key
	log := w.cfg.logger.With("service", service)
	var (
		index     uint64
		published bool
		lastGood  []Endpoint
		lastErr   string
		failures  int
	)
	for {
		if err := limiter.Wait(ctx); err != nil {
			return
		}
		q := &api.QueryOptions{
			Datacenter: wq.datacenter,
			AllowStale: w.cfg.stale,
			Filter:     wq.filter,
			Token:      w.cfg.token,
			WaitIndex:  index,
		}
		if index > 0 {
			q.WaitTime = w.cfg.wait - time.Duration(rand.Int64N(int64(w.cfg.wait/10)+1))
		}
		timeout := q.WaitTime + q.WaitTime/16 + w.cfg.margin
		qctx, cancel := context.WithTimeout(ctx, timeout)
		entries, meta, err := w.client.Health().ServiceMultipleTags(wq.service, w.cfg.tags, wq.passingOnly, q.WithContext(qctx))
		hung := qctx.Err() == context.DeadlineExceeded
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			if hung {
				err = fmt.Errorf("%w: watch %q: %w within %v (wait %v + wait/16 + margin %v)", ErrConsul, service, ErrAgentTimeout, timeout, q.WaitTime, w.cfg.margin)
			} else {
				err = fmt.Errorf("%w: watch %q: %s", ErrConsul, service, w.scrub(err.Error()))
			}
			n := failures
			w.setStatus(st, func(s *ConsulStatus) { s.Err, s.Failures = err, n })
			if err.Error() != lastErr {
				log.Warn("discovery: consul query failed", "error", err.Error(), "failures", n)
				lastErr = err.Error()
				h.publish(Update{Endpoints: lastGood, Err: err})
				published = true
			}
			// The agent may come back empty, with a lower index: read
			// afresh (without waiting) after any error.
			index = 0
			if !sleepCtx(ctx, w.backoff(failures)) {
				return
			}
			continue
		}
		set := w.endpoints(log, entries, wq.passingOnly)
		w.setStatus(st, func(s *ConsulStatus) {
			s.Index, s.LastContact, s.KnownLeader = meta.LastIndex, meta.LastContact, meta.KnownLeader
			s.LastSuccess, s.Failures, s.Err = time.Now(), 0, nil
		})
		failures = 0
		switch {
		case meta.LastIndex < index:
			// The index went backwards (a restarted agent, a snapshot
			// restore): start over with a non-blocking read.
			index = 0
		case meta.LastIndex == 0:
			index = 1 // never wait on index 0
		default:
			index = meta.LastIndex
		}
		if published && lastErr == "" && equalSets(set, lastGood) {
			continue
		}
		lastGood, lastErr, published = set, "", true
		h.publish(Update{Endpoints: set})
	}
}

// backoff returns the wait after n consecutive failures: min·2^(n-1)
// capped at max, drawn from its upper half.
func (w *Consul) backoff(n int) time.Duration {
	return backoffDelay(w.cfg.backoffMin, w.cfg.backoffMax, n)
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// scrub removes the ACL tokens from s.
func (w *Consul) scrub(s string) string {
	for _, t := range w.redact {
		s = strings.ReplaceAll(s, t, "[redacted]")
	}
	return s
}

// endpoints converts Consul's answer into a set, skipping (and logging)
// instances that cannot be used.
func (w *Consul) endpoints(log *slog.Logger, entries []*api.ServiceEntry, passingOnly bool) []Endpoint {
	set := make([]Endpoint, 0, len(entries))
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		ep, err := w.endpoint(e, passingOnly)
		if err == nil && seen[ep.ID] {
			err = fmt.Errorf("%w: duplicate ID %q", ErrBadEndpoint, ep.ID)
		}
		if err != nil {
			if !errors.Is(err, errExcluded) {
				log.Warn("discovery: consul: skipping instance", "reason", err.Error())
			}
			continue
		}
		seen[ep.ID] = true
		set = append(set, ep)
	}
	slices.SortFunc(set, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return set
}

// errExcluded marks instances left out on purpose (critical, warning
// weight 0), which are not logged.
var errExcluded = errors.New("excluded")

// endpoint converts one Consul service entry of a watch that asked for
// passing instances only, or for warning ones too.
func (w *Consul) endpoint(e *api.ServiceEntry, passingOnly bool) (Endpoint, error) {
	if e == nil || e.Service == nil {
		return Endpoint{}, fmt.Errorf("%w: entry without a service", ErrBadEndpoint)
	}
	s := e.Service
	if s.ID == "" {
		return Endpoint{}, fmt.Errorf("%w: instance without an ID", ErrBadEndpoint)
	}
	weight := 1
	if s.Weights.Passing != 0 {
		weight = s.Weights.Passing
	}
	if !passingOnly {
		switch e.Checks.AggregatedStatus() {
		case api.HealthPassing:
		case api.HealthWarning:
			weight = s.Weights.Warning
			if weight == 0 {
				return Endpoint{}, errExcluded
			}
		default:
			return Endpoint{}, errExcluded
		}
	}
	if weight < 0 || int64(weight) > int64(^uint32(0)) {
		return Endpoint{}, fmt.Errorf("%w: instance %q: weight %d out of range", ErrBadEndpoint, s.ID, weight)
	}
	host := s.Address
	if host == "" && e.Node != nil {
		host = e.Node.Address
	}
	host, err := consulHost(host)
	if err != nil {
		return Endpoint{}, fmt.Errorf("%w: instance %q: %v", ErrBadEndpoint, s.ID, err)
	}
	if s.Port < 1 || s.Port > 65535 {
		return Endpoint{}, fmt.Errorf("%w: instance %q: port %d out of 1..65535", ErrBadEndpoint, s.ID, s.Port)
	}
	ep := Endpoint{
		ID:     s.ID,
		Addr:   net.JoinHostPort(host, strconv.Itoa(s.Port)),
		Weight: uint32(weight),
		Tags:   slices.Clone(s.Tags),
	}
	if err := ep.Validate(); err != nil {
		return Endpoint{}, fmt.Errorf("instance %q: %w", s.ID, err)
	}
	if !utf8.ValidString(s.ID) {
		return Endpoint{}, fmt.Errorf("%w: instance ID %q is not UTF-8", ErrBadEndpoint, s.ID)
	}
	for _, t := range s.Tags {
		if !utf8.ValidString(t) {
			return Endpoint{}, fmt.Errorf("%w: instance %q: tag %q is not UTF-8", ErrBadEndpoint, s.ID, t)
		}
	}
	if len(s.Meta) > 0 {
		ep.Meta = make(map[string]string, len(s.Meta))
		for k, v := range s.Meta {
			if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) {
				return Endpoint{}, fmt.Errorf("%w: instance %q: malformed meta key %q", ErrBadEndpoint, s.ID, k)
			}
			ep.Meta[k] = v
		}
	}
	if w.cfg.zoneKey != "" {
		if z, ok := s.Meta[w.cfg.zoneKey]; ok {
			ep.Zone = z
		} else if e.Node != nil {
			ep.Zone = e.Node.Meta[w.cfg.zoneKey]
		}
	}
	return ep, nil
}

// consulHost checks a service or node address from Consul: a host name or
// an IP address, IPv6 with or without brackets, but never with a port.
func consulHost(h string) (string, error) {
	if h == "" {
		return "", errors.New("empty address")
	}
	if strings.HasPrefix(h, "[") {
		inner, ok := strings.CutSuffix(h[1:], "]")
		if !ok {
			return "", fmt.Errorf("address %q: malformed brackets or a port", h)
		}
		a, err := netip.ParseAddr(inner)
		if err != nil || !a.Is6() {
			return "", fmt.Errorf("address %q: not an IPv6 address in brackets", h)
		}
		return inner, nil
	}
	if strings.Contains(h, ":") {
		if a, err := netip.ParseAddr(h); err == nil && a.Is6() {
			return h, nil
		}
		return "", fmt.Errorf("address %q holds a port or is malformed (the port belongs in the port field)", h)
	}
	return h, nil
}

// equalSets reports whether a and b hold the same endpoints in the same
// order.
func equalSets(a, b []Endpoint) bool {
	return slices.EqualFunc(a, b, func(x, y Endpoint) bool {
		if x.ID != y.ID || x.Addr != y.Addr || x.Weight != y.Weight || x.Zone != y.Zone ||
			!slices.Equal(x.Tags, y.Tags) || len(x.Meta) != len(y.Meta) {
			return false
		}
		for k, v := range x.Meta {
			if yv, ok := y.Meta[k]; !ok || yv != v {
				return false
			}
		}
		return true
	})
}
