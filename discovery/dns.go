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
	"time"
)

// ErrDNS is wrapped by the errors a [DNS] watcher reports in [Update.Err]
// when a lookup fails. While it is set, subscribers keep the last good set.
var ErrDNS = errors.New("discovery: dns")

// DefaultDNSInterval is how often a [DNS] watcher looks a name up again.
const DefaultDNSInterval = 30 * time.Second

// DNSOption configures [NewDNS].
type DNSOption interface{ applyDNS(*dnsConfig) }

type dnsOptionFunc func(*dnsConfig)

func (f dnsOptionFunc) applyDNS(c *dnsConfig) { f(c) }

type dnsConfig struct {
	resolver   *net.Resolver
	interval   time.Duration
	backoffMin time.Duration
	logger     *slog.Logger
	srvService string
	srvProto   string
}

// WithResolver makes the watcher use r (default [net.DefaultResolver]);
// a resolver whose Dial goes to a given server reads Consul's DNS
// interface or a cluster's DNS directly. A nil resolver is ignored.
func WithResolver(r *net.Resolver) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if r != nil {
			c.resolver = r
		}
	})
}

// WithInterval sets how often each name is looked up again (default
// [DefaultDNSInterval]); after a failed lookup the watcher retries sooner,
// backing off up to the interval. Values ≤ 0 are ignored.
func WithInterval(d time.Duration) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if d > 0 {
			c.interval = d
		}
	})
}

// WithSRV makes the watcher look up _service._proto.name (RFC 2782) for a
// watched name; by default the watched name is looked up as given, which
// suits Consul ("web.service.consul") and names that already carry their
// prefix ("_http._tcp.web.ns.svc.cluster.local").
func WithSRV(service, proto string) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) { c.srvService, c.srvProto = service, proto })
}

// WithDNSLogger sets where the watcher logs skipped records and failed
// lookups. A nil logger is ignored; the default discards.
func WithDNSLogger(l *slog.Logger) DNSOption {
	return dnsOptionFunc(func(c *dnsConfig) {
		if l != nil {
			c.logger = l
		}
	})
}

// DNS is a [Watcher] over DNS SRV records: the watched name is looked up
// every interval, each record's target is resolved to its addresses, and
// the resulting set is pushed when it changes. Only the records of the
// lowest priority are used (RFC 2782); a record's weight becomes the
// endpoints' weight. A name that does not exist is an empty set; other
// failures keep the last good set and report the error.
//
// One lookup loop runs per name however many subscribers watch it. Build
// one with [NewDNS]; the zero value is not usable. It is safe for
// concurrent use.
type DNS struct {
	cfg   dnsConfig
	table fanout
}

// NewDNS returns a DNS SRV watcher configured by opts.
func NewDNS(opts ...DNSOption) *DNS {
	c := dnsConfig{resolver: net.DefaultResolver, interval: DefaultDNSInterval, backoffMin: 100 * time.Millisecond}
	for _, o := range opts {
		if o != nil {
			o.applyDNS(&c)
		}
	}
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	d := &DNS{cfg: c}
	d.table.start = d.start
	return d
}

// Watch implements [Watcher]; service is the DNS name to look up.
func (d *DNS) Watch(service string, fn func(Update)) (stop func(), err error) {
	return d.table.watch(service, fn)
}

func (d *DNS) start(h *hub) func() {
	name := h.service
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.run(ctx, name, h)
	}()
	return func() {
		cancel()
		<-done
	}
}

func (d *DNS) run(ctx context.Context, name string, h *hub) {
	log := d.cfg.logger.With("name", name)
	var (
		lastGood  []Endpoint
		published bool
		lastErr   string
		failures  int
	)
	for {
		set, err := d.lookup(ctx, log, name)
		if ctx.Err() != nil {
			return
		}
		wait := d.cfg.interval
		if err != nil {
			failures++
			if err.Error() != lastErr {
				log.Warn("discovery: dns lookup failed", "error", err.Error())
				lastErr = err.Error()
				h.publish(Update{Endpoints: lastGood, Err: err})
				published = true
			}
			wait = min(d.cfg.backoffMin<<min(failures-1, 20), d.cfg.interval)
		} else {
			failures = 0
			if !published || lastErr != "" || !equalSets(set, lastGood) {
				lastGood, lastErr, published = set, "", true
				h.publish(Update{Endpoints: set})
			}
		}
		if !sleepCtx(ctx, wait/2+time.Duration(rand.Int64N(int64(wait/2)+1))) {
			return
		}
	}
}

// lookup resolves name into a set.
func (d *DNS) lookup(ctx context.Context, log *slog.Logger, name string) ([]Endpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, max(d.cfg.interval, 5*time.Second))
	defer cancel()
	_, srvs, err := d.cfg.resolver.LookupSRV(ctx, d.cfg.srvService, d.cfg.srvProto, name)
	if err != nil {
		var dnsErr *net.DNSError
		if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
			return []Endpoint{}, nil
		}
		return nil, fmt.Errorf("%w: SRV %q: %v", ErrDNS, name, err)
	}
	if len(srvs) == 0 {
		return []Endpoint{}, nil
	}
	prio := srvs[0].Priority
	for _, s := range srvs {
		prio = min(prio, s.Priority)
	}
	set := make([]Endpoint, 0, len(srvs))
	seen := map[string]bool{}
	for _, s := range srvs {
		if s.Priority != prio {
			continue
		}
		target := strings.TrimSuffix(s.Target, ".")
		if s.Port == 0 || target == "" {
			log.Warn("discovery: dns: skipping record", "reason", fmt.Sprintf("target %q port %d", s.Target, s.Port))
			continue
		}
		var addrs []netip.Addr
		if a, err := netip.ParseAddr(target); err == nil {
			addrs = []netip.Addr{a}
		} else {
			addrs, err = d.cfg.resolver.LookupNetIP(ctx, "ip", target)
			if err != nil {
				if ctx.Err() != nil {
					return nil, fmt.Errorf("%w: resolve %q: %v", ErrDNS, target, err)
				}
				log.Warn("discovery: dns: skipping record", "reason", fmt.Sprintf("resolve %q: %v", target, err))
				continue
			}
		}
		for _, a := range addrs {
			addr := net.JoinHostPort(a.Unmap().WithZone("").String(), strconv.Itoa(int(s.Port)))
			if seen[addr] {
				continue
			}
			seen[addr] = true
			set = append(set, Endpoint{ID: addr, Addr: addr, Weight: uint32(s.Weight), Meta: map[string]string{"target": target}})
		}
	}
	slices.SortFunc(set, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) })
	return set, nil
}
