package route

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/consul/api"
)

// What a [Consul] source reads of service-defaults beyond the protocol.
//
// Consul's upstream settings — UpstreamConfig.Defaults and
// UpstreamConfig.Overrides, with their Limits and PassiveHealthCheck —
// belong to the service-defaults of the *calling* service: Consul
// configures the caller's sidecar with them for its calls to each
// upstream. The called service's own service-defaults say nothing of how
// it is called (its UpstreamConfig is about its own upstreams), and
// proxy-defaults has no upstream settings. So a source reads them from
// the service-defaults of the service the process runs as, named with
// [WithConsulCaller]: for each watched service, the Override naming it
// (in the default namespace and partition, not a peer) replaces the
// Defaults block by block, as Consul merges them, and
//
//   - Limits become the service's [ConnectionPool]: MaxConnections,
//     MaxPendingRequests (Envoy's default of 1024 when MaxConnections is
//     set without it) and MaxConcurrentRequests as MaxRequests;
//   - ConnectTimeoutMs becomes its ConnectionPool.ConnectTimeout,
//     replacing the resolver's ConnectTimeout: Consul sets an Envoy
//     cluster's connect_timeout from the upstream's ConnectTimeoutMs and
//     takes the resolver's only when that is unset;
//   - PassiveHealthCheck becomes its [OutlierDetection]: MaxFailures as
//     ConsecutiveFailures, Interval, BaseEjectionTime and
//     MaxEjectionPercent.
//
// The other upstream fields — and EnforcingConsecutive5xx below 100, as
// weft always ejects — are warnings at their path, such as
// service-defaults/web.UpstreamConfig.Overrides[0].EnvoyClusterJSON.
// The called service's own service-defaults fields that act on its
// inbound side (MaxInboundConnections, local timeouts, rate limits, ...)
// are warnings too: a caller's routes cannot apply them.

// DefaultMaxPendingRequests is the pending bound a [Consul] source gives
// a service whose upstream Limits set MaxConnections but not
// MaxPendingRequests: Envoy's default.
const DefaultMaxPendingRequests = 1024

// WithConsulCaller names the service the process runs as, whose
// service-defaults entry gives a [Consul] source the upstream limits and
// passive health check of its calls to each watched service, as Consul
// configures a caller's sidecar. The source then also watches the
// service-defaults entries, and publishes its first table once it has
// read them. An empty name is ignored: no upstream settings apply.
func WithConsulCaller(name string) Option {
	return optionFunc(func(o *options) {
		if name != "" {
			o.consul.caller = name
		}
	})
}

// watchDefaults is the loop of the service-defaults entries, listed
// rather than read one by one: a missing entry has no index to wait on.
func (c *Consul) watchDefaults(ctx context.Context) {
	c.follow(ctx, "service-defaults", func(q *api.QueryOptions) (uint64, error) {
		list, meta, err := c.client.ConfigEntries().List(api.ServiceDefaults, q)
		if err != nil {
			return 0, err
		}
		c.mu.Lock()
		changed := !c.defaultsRead || meta.LastIndex != c.defaultsIndex
		if changed {
			c.defaults = map[string]*api.ServiceConfigEntry{}
			for _, e := range list {
				if sd, ok := e.(*api.ServiceConfigEntry); ok {
					c.defaults[sd.Name] = sd
				}
			}
			c.defaultsRead, c.defaultsIndex = true, meta.LastIndex
		}
		c.mu.Unlock()
		if changed {
			c.rebuild()
		}
		return meta.LastIndex, nil
	})
}

// upstreamSettings is the merged upstream configuration of one upstream
// and the path of each block's origin, for warnings.
type upstreamSettings struct {
	limits     *api.UpstreamLimits
	limitsPath string
	check      *api.PassiveHealthCheck
	checkPath  string
	connect    Duration // ConnectTimeoutMs; zero when unset
}

// applyUpstreams gives each watched service of cfg the connection pool
// and outlier detection of the caller's upstream configuration, on
// copies of the services (cfg shares them with the cached chains).
func (c *Consul) applyUpstreams(cfg *Config) []*FieldError {
	c.mu.Lock()
	entry := c.defaults[c.set.caller]
	c.mu.Unlock()
	return applyUpstreamConfig(cfg, entry, c.services)
}

// applyUpstreamConfig gives each of services in cfg the connection pool
// and outlier detection that entry, the caller's service-defaults, sets
// for it (replacing the services with changed copies), and returns the
// warnings of what it cannot apply.
func applyUpstreamConfig(cfg *Config, entry *api.ServiceConfigEntry, services []string) []*FieldError {
	if entry == nil || entry.UpstreamConfig == nil {
		return nil
	}
	w := &warner{seen: map[string]bool{}}
	base := "service-defaults/" + entry.Name + ".UpstreamConfig"
	uc := entry.UpstreamConfig
	if d := uc.Defaults; d != nil {
		w.upstreamFields(base+".Defaults", d)
	}
	for i, o := range uc.Overrides {
		if o != nil && slices.Contains(services, o.Name) {
			w.upstreamFields(fmt.Sprintf("%s.Overrides[%d]", base, i), o)
		}
	}
	for _, name := range services {
		up := upstreamFor(uc, base, name)
		pool := w.pool(up.limitsPath, up.limits)
		outlier := w.outlier(up.checkPath, up.check)
		if pool == nil && outlier == nil && up.connect == 0 {
			continue
		}
		s := Service{}
		if cur := cfg.Services[name]; cur != nil {
			s = *cur
		}
		tp := TrafficPolicy{}
		if s.TrafficPolicy != nil {
			tp = *s.TrafficPolicy
		}
		// The resolver's connect timeout stays unless the caller's
		// upstream sets its own.
		connect := up.connect
		if connect == 0 && tp.ConnectionPool != nil {
			connect = tp.ConnectionPool.ConnectTimeout
		}
		if connect > 0 {
			if pool == nil {
				pool = &ConnectionPool{}
			}
			pool.ConnectTimeout = connect
		}
		tp.ConnectionPool, tp.Outlier = pool, outlier
		s.TrafficPolicy = &tp
		cfg.Services[name] = &s
	}
	return w.out
}

// upstreamFor merges the caller's Defaults and the Override for service
// name, block by block, as Consul does.
func upstreamFor(uc *api.UpstreamConfiguration, base, name string) upstreamSettings {
	var up upstreamSettings
	if d := uc.Defaults; d != nil {
		up.limits, up.limitsPath = d.Limits, base+".Defaults.Limits"
		up.check, up.checkPath = d.PassiveHealthCheck, base+".Defaults.PassiveHealthCheck"
		up.connect = connectTimeoutMs(d.ConnectTimeoutMs)
	}
	for i, o := range uc.Overrides {
		if o == nil || o.Name != name || o.Peer != "" || !defaultScope(o.Namespace) || !defaultScope(o.Partition) {
			continue
		}
		p := fmt.Sprintf("%s.Overrides[%d]", base, i)
		if o.Limits != nil {
			up.limits, up.limitsPath = o.Limits, p+".Limits"
		}
		if o.PassiveHealthCheck != nil {
			up.check, up.checkPath = o.PassiveHealthCheck, p+".PassiveHealthCheck"
		}
		if ms := connectTimeoutMs(o.ConnectTimeoutMs); ms > 0 {
			up.connect = ms
		}
	}
	return up
}

// connectTimeoutMs is an upstream's ConnectTimeoutMs as a duration; zero
// (unset) for 0 or less.
func connectTimeoutMs(ms int) Duration {
	if ms <= 0 {
		return 0
	}
	return Duration(time.Duration(min(ms, 1<<31)) * time.Millisecond)
}

func defaultScope(s string) bool { return s == "" || s == "default" }

// warner collects warnings, each path once.
type warner struct {
	seen map[string]bool
	out  []*FieldError
}

func (w *warner) warnf(path, format string, args ...any) {
	if w.seen[path] {
		return
	}
	w.seen[path] = true
	w.out = append(w.out, &FieldError{Path: path, Message: fmt.Sprintf(format, args...), Err: ErrUnsupported})
}

// upstreamFields warns of the fields of an upstream block weft does not
// apply.
func (w *warner) upstreamFields(path string, u *api.UpstreamConfig) {
	if u.ConnectTimeoutMs < 0 {
		w.warnf(path+".ConnectTimeoutMs", "%d not applied: negative", u.ConnectTimeoutMs)
	}
	if u.Protocol != "" {
		w.warnf(path+".Protocol", "not applied: weft takes a service's protocol from its own service-defaults")
	}
	if u.EnvoyListenerJSON != "" {
		w.warnf(path+".EnvoyListenerJSON", "not applied: weft has no Envoy listener")
	}
	if u.EnvoyClusterJSON != "" {
		w.warnf(path+".EnvoyClusterJSON", "not applied: weft has no Envoy cluster")
	}
	if u.MeshGateway.Mode != "" {
		w.warnf(path+".MeshGateway.Mode", "not applied: weft calls endpoints directly, never through a mesh gateway")
	}
	if u.BalanceOutboundConnections != "" {
		w.warnf(path+".BalanceOutboundConnections", "not applied: weft has no proxy worker threads to balance connections over")
	}
	if u.Peer != "" {
		w.warnf(path+".Peer", "not applied: weft's routes reach only services of the local cluster")
	}
}

// pool translates upstream Limits into a connection pool.
func (w *warner) pool(path string, l *api.UpstreamLimits) *ConnectionPool {
	if l == nil {
		return nil
	}
	p := &ConnectionPool{}
	set := func(field string, v *int, dst *int) {
		switch {
		case v == nil:
		case *v <= 0:
			w.warnf(path+"."+field, "%d not applied: weft reads a limit of 0 or less as no limit", *v)
		default:
			*dst = *v
		}
	}
	set("MaxConnections", l.MaxConnections, &p.MaxConnections)
	set("MaxPendingRequests", l.MaxPendingRequests, &p.MaxPendingRequests)
	set("MaxConcurrentRequests", l.MaxConcurrentRequests, &p.MaxRequests)
	if p.MaxConnections > 0 && l.MaxPendingRequests == nil {
		p.MaxPendingRequests = DefaultMaxPendingRequests
	}
	if *p == (ConnectionPool{}) {
		return nil
	}
	return p
}

// outlier translates a passive health check into outlier detection.
func (w *warner) outlier(path string, h *api.PassiveHealthCheck) *OutlierDetection {
	if h == nil {
		return nil
	}
	o := &OutlierDetection{ConsecutiveFailures: int(min(h.MaxFailures, 1<<20)), Interval: Duration(h.Interval)}
	if h.BaseEjectionTime != nil {
		o.BaseEjectionTime = Duration(max(*h.BaseEjectionTime, 0))
	}
	if h.MaxEjectionPercent != nil {
		o.MaxEjectedPercent = float64(min(*h.MaxEjectionPercent, 100))
	}
	if e := h.EnforcingConsecutive5xx; e != nil && *e < 100 {
		w.warnf(path+".EnforcingConsecutive5xx", "%d%% not applied: weft ejects every endpoint that reaches MaxFailures", *e)
	}
	if h.Interval < 0 {
		o.Interval = 0
		w.warnf(path+".Interval", "%v not applied: negative", time.Duration(h.Interval))
	}
	return o
}

// inboundFields warns of the fields of the called service's own
// service-defaults that act on its inbound side, which a caller's routes
// cannot apply.
func (x *chainTranslator) inboundFields(e *api.ServiceConfigEntry) {
	if e == nil {
		return
	}
	p := "service-defaults/" + e.Name
	const why = "not applied: it acts on the service's inbound side, which a caller's routes do not reach"
	checks := []struct {
		field string
		set   bool
	}{
		{"MaxInboundConnections", e.MaxInboundConnections > 0},
		{"LocalConnectTimeoutMs", e.LocalConnectTimeoutMs > 0},
		{"LocalRequestTimeoutMs", e.LocalRequestTimeoutMs > 0},
		{"BalanceInboundConnections", e.BalanceInboundConnections != ""},
		{"RateLimits", e.RateLimits != nil},
		{"MaxRequestHeadersKB", e.MaxRequestHeadersKB != nil},
		{"MutualTLSMode", e.MutualTLSMode != ""},
		{"Expose", len(e.Expose.Paths) > 0 || e.Expose.Checks},
		{"EnvoyExtensions", len(e.EnvoyExtensions) > 0},
	}
	for _, ch := range checks {
		if ch.set {
			x.warnf(p+"."+ch.field, why)
		}
	}
	if e.MeshGateway.Mode != "" {
		x.warnf(p+".MeshGateway.Mode", "not applied: weft calls endpoints directly, never through a mesh gateway")
	}
	if e.Destination != nil {
		x.warnf(p+".Destination", "not applied: weft does not route through terminating gateways; declare the service as route.ExternalService")
	}
	if e.ExternalSNI != "" {
		x.warnf(p+".ExternalSNI", "not applied: weft checks the service's SPIFFE ID, not an SNI")
	}
}
