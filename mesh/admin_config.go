package mesh

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/route"
)

// config returns the /config document: the client's effective
// configuration and the servers', secrets redacted.
func (a *admin) config() any {
	c := a.c
	cfg := &c.cfg
	client := map[string]any{
		"discovery":         typeName(cfg.watcher),
		"identity":          adminSVID(cfg.identity),
		"authorizer":        funcName(cfg.authorize),
		"serviceAuthorizer": cfg.serviceAuthorize != nil,
		"requireIdentities": cfg.requireIdentities,
		"balancer":          "round robin (default)",
		"telemetry":         cfg.telemetry != nil,
		"clock":             typeName(cfg.clock),
		"services":          clusterNames(c),
	}
	if cfg.policy != nil {
		client["balancer"] = "per service: " + funcName(cfg.policy)
	}
	rc := &cfg.resilience
	if p := rc.retry; p != nil {
		client["retry"] = map[string]any{
			"maxAttempts": p.MaxAttempts, "backoff": p.Backoff.String(), "maxBackoff": p.MaxBackoff.String(),
			"perTryTimeout": p.PerTryTimeout.String(), "minRemaining": p.MinRemaining.String(), "maxBodyBytes": p.MaxBodyBytes,
			"budget": map[string]any{"ratio": p.Budget.Ratio, "perSecond": p.Budget.PerSecond, "window": p.Budget.Window.String()},
		}
	}
	if h := rc.hedge; h != nil {
		client["hedge"] = map[string]any{"delay": h.Delay.String(), "route": funcName(h.Route)}
	}
	if s := rc.breakers; s != nil {
		client["breakers"] = map[string]any{
			"consecutiveFailures": s.ConsecutiveFailures, "failureRatio": s.FailureRatio, "minRequests": s.MinRequests,
			"window": s.Window.String(), "openTimeout": s.OpenTimeout.String(), "halfOpenProbes": s.HalfOpenProbes,
			"serviceBreaker": len(rc.breakerOpts) > 0, "note": "zero values mean the breaker package's defaults",
		}
	}
	if rc.rateLimit != nil {
		limits := map[string]any{}
		for _, name := range clusterNames(c) {
			if l := rc.rateLimit(name); l != nil {
				limits[name] = map[string]any{"perSecond": l.PerSecond, "burst": l.Burst, "wait": l.Wait}
			}
		}
		client["rateLimits"] = limits
	}
	client["classifyHTTP"] = rc.classifyHTTP != nil
	client["classifyGRPC"] = rc.classifyGRPC != nil
	client["idempotent"] = funcName(rc.idempotent)
	if cfg.routes != nil {
		t := cfg.routes.Table()
		client["routes"] = map[string]any{"source": t.Source(), "version": t.Version(), "config": t.Config()}
	}
	doc := map[string]any{"client": client}
	var servers []any
	for _, s := range a.cfg.servers {
		sc := &s.cfg
		srv := map[string]any{"identity": adminSVID(sc.identity), "authorizer": funcName(sc.authorize), "telemetry": sc.telemetry != nil}
		p := &sc.protect
		limits := map[string]any{}
		for r, l := range p.routes {
			limits[r] = map[string]any{"perSecond": l.PerSecond, "burst": l.Burst}
		}
		srv["routeRateLimits"] = limits
		if p.peer != nil {
			srv["peerRateLimit"] = map[string]any{"perSecond": p.peer.PerSecond, "burst": p.peer.Burst, "maxPeers": p.maxPeers}
		}
		if p.conc != nil {
			srv["concurrency"] = map[string]any{"limit": p.conc.Limit, "criticalReserve": p.conc.CriticalReserve, "criticalWait": p.conc.CriticalWait.String()}
		}
		srv["priorityTrust"] = funcName(p.trust)
		if ac := sc.access; ac != nil {
			srv["accessPolicies"], srv["auditPolicies"] = len(ac.enforce), len(ac.audit)
		}
		servers = append(servers, srv)
	}
	if servers != nil {
		doc["servers"] = servers
	}
	return redactedValue(doc)
}

// typeName names v's type, "none" for nil.
func typeName(v any) string {
	if v == nil {
		return "none"
	}
	return fmt.Sprintf("%T", v)
}

// secretKey matches the names of fields whose values are secrets.
var secretKey = regexp.MustCompile(`(?i)(token|secret|password|passwd|api[_-]?key|authorization|cookie|credential|private)`)

// redactedValue returns v as JSON values (maps, slices, strings,
// numbers) with secrets replaced: every string under a key that names a
// secret becomes "REDACTED", and every other string goes through
// [telemetry.Redact] (URL queries, bearer tokens, key=value secrets).
func redactedValue(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return map[string]string{"error": redactText(err.Error())}
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		return map[string]string{"error": redactText(err.Error())}
	}
	return redactWalk(out, false)
}

func redactWalk(v any, secret bool) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = redactWalk(e, secret || secretKey.MatchString(k))
		}
		return x
	case []any:
		for i, e := range x {
			x[i] = redactWalk(e, secret)
		}
		return x
	case string:
		if secret {
			return "REDACTED"
		}
		return redactText(x)
	}
	return v
}

// AdminExplain is the /explain document of [Client.AdminHandler]: where
// a call would go, and why.
type AdminExplain struct {
	Service  string `json:"service"`
	Protocol string `json:"protocol"`
	Method   string `json:"method,omitempty"`
	Path     string `json:"path"`
	// Route is the matched route ("default" for the catch-all); empty
	// when the client has no route for the service.
	Route *AdminRule `json:"route,omitempty"`
	// Backend is the backend chosen by weight with Rnd; nil for a route
	// that answers itself.
	Backend *AdminTarget `json:"backend,omitempty"`
	// Rnd is the number weights were taken with (the rnd parameter, 0 by
	// default): with several backends, another number may choose another.
	Rnd uint64 `json:"rnd"`
	// Candidates are the endpoints of the backend (its subset's), each
	// with whether it may be picked and why not.
	Candidates []AdminCandidate `json:"candidates"`
	// Pick is the endpoint the balancer's policy would pick, built afresh
	// over the eligible endpoints; empty when none is eligible.
	Pick string `json:"pick,omitempty"`
	// Deterministic: the policy picks Pick whatever its random state (a
	// hash of the call's key, or a single eligible endpoint), so the next
	// real call goes there too. Otherwise Pick is one likely choice.
	Deterministic bool `json:"deterministic"`
	// Why explains the decision in words.
	Why []string `json:"why"`
}

// AdminCandidate is an endpoint that /explain considered.
type AdminCandidate struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Eligible bool   `json:"eligible"`
	// Reason is why it is not eligible: "breaker open", "ejected for
	// 29.5s more", "no ready gRPC connection".
	Reason string `json:"reason,omitempty"`
}

// explainTries is how many fresh pickers explain asks, to tell a
// deterministic pick from a random one.
const explainTries = 8

func (a *admin) explain(r *http.Request) (*AdminExplain, error) {
	q := r.URL.Query()
	service := q.Get("service")
	if service == "" {
		return nil, fmt.Errorf("mesh: admin: explain: the service parameter is required")
	}
	grpcCall := strings.EqualFold(q.Get("protocol"), "grpc")
	ex := &AdminExplain{Service: service, Protocol: "http", Method: q.Get("method"), Path: q.Get("path"), Candidates: []AdminCandidate{}, Why: []string{}}
	if s := q.Get("rnd"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("mesh: admin: explain: rnd %q: not an unsigned integer", s)
		}
		ex.Rnd = n
	}
	if ex.Path == "" {
		ex.Path = "/"
	}
	header := http.Header{}
	for _, kv := range q["header"] {
		k, v, ok := strings.Cut(kv, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("mesh: admin: explain: header %q: want name:value", kv)
		}
		header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	info := balancer.Info{Context: r.Context()}
	req := route.Request{RawQuery: q.Get("query")}
	if grpcCall {
		ex.Protocol, ex.Method = "grpc", ""
		md := metadata.MD{}
		for k, vs := range header {
			md.Append(strings.ToLower(k), vs...)
		}
		req.Path, req.Metadata = ex.Path, md
		info.Method, info.Metadata = ex.Path, md
	} else {
		if ex.Method == "" {
			ex.Method = http.MethodGet
		}
		ex.Path = NormalizePath(ex.Path)
		req.Method, req.Path, req.Header = ex.Method, ex.Path, header
		info.HTTP = &http.Request{Method: ex.Method, URL: &url.URL{Scheme: "http", Host: service, Path: ex.Path, RawQuery: req.RawQuery}, Header: header, Host: service}
		info.HTTP = info.HTTP.WithContext(r.Context())
	}
	target := &route.Destination{Service: service}
	if src := a.c.cfg.routes; src != nil {
		t := src.Table()
		dec := t.Match(service, &req, ex.Rnd)
		switch {
		case dec.Rule == nil:
			ex.Why = append(ex.Why, fmt.Sprintf("route table %s (version %s) does not route %q: the call goes to every endpoint of the service", t.Source(), t.Version(), service))
		default:
			rule := adminRule(dec.Rule)
			ex.Route = &rule
			ex.Why = append(ex.Why, fmt.Sprintf("route %q (index %d) of table %s version %s takes the call", dec.Rule.Name, dec.Rule.Index, t.Source(), t.Version()))
			if dec.Target == nil {
				ex.Why = append(ex.Why, "the route answers the call itself ("+rule.Answer+"): no endpoint is picked")
				return ex, nil
			}
			bt := adminTarget(dec.Target)
			ex.Backend = &bt
			target = dec.Target.Destination
			if len(dec.Rule.Targets) > 1 {
				ex.Why = append(ex.Why, fmt.Sprintf("backend %s chosen by weight (%d of %d) with rnd=%d; the route has %d backends", target, bt.Weight, route.TotalWeight, ex.Rnd, len(dec.Rule.Targets)))
			} else {
				ex.Why = append(ex.Why, "backend "+target.String())
			}
			if target.External != nil {
				ex.Why = append(ex.Why, "the backend is an external service: the mesh balancer does not pick for it")
				return ex, nil
			}
		}
	}
	cl := (*a.c.clusters.Load())[target.Service]
	if cl == nil {
		ex.Why = append(ex.Why, fmt.Sprintf("the client has not called %q yet: it has no endpoints for it", target.Service))
		return ex, nil
	}
	a.explainPick(cl, target, info, ex)
	return ex, nil
}

// grpcReady returns the IDs of the endpoints to which one of the
// client's gRPC connections to cl has a ready connection; nil when no
// gRPC connection to the service was dialled.
func (cl *cluster) grpcReady() map[string]bool {
	cl.subMu.Lock()
	defer cl.subMu.Unlock()
	if len(cl.subs) == 0 {
		return nil
	}
	ready := map[string]bool{}
	for gc := range cl.subs {
		for id, ok := range gc.ready.Load().ready {
			ready[id] = ready[id] || ok
		}
	}
	return ready
}

// explainPick fills ex's candidates and pick among the endpoints of
// dest in cl. It never touches cl's balancers: the pick is made by
// fresh balancers of the service's policy, over endpoints of their own.
func (a *admin) explainPick(cl *cluster, dest *route.Destination, info balancer.Info, ex *AdminExplain) {
	u := cl.status.Load()
	if u == nil {
		ex.Why = append(ex.Why, "discovery has not answered for the service yet")
		return
	}
	loads := map[string]*balancer.Load{}
	if b := cl.builtBalancer(dest); b != nil {
		for _, e := range b.Endpoints() {
			loads[e.ID] = e.Load
		}
	}
	var ready map[string]bool // gRPC: the endpoints with a ready connection; nil: not checked
	if ex.Protocol == "grpc" {
		if ready = cl.grpcReady(); ready == nil {
			ex.Why = append(ex.Why, "no gRPC connection to the service is open: which endpoints have a ready connection is not known")
		}
	}
	set := cl.builtBreakers(dest)
	var eps []discovery.Endpoint
	excluded := map[string]bool{}
	for i := range u.Endpoints {
		ep := &u.Endpoints[i]
		if dest.Subset != "" && !dest.Matches(ep) {
			continue
		}
		eps = append(eps, *ep)
		c := AdminCandidate{ID: ep.ID, Addr: ep.Addr, Eligible: true}
		switch {
		case set.Open(ep.ID):
			c.Eligible, c.Reason = false, "breaker open"
		case ready != nil && !ready[ep.ID]:
			c.Eligible, c.Reason = false, "no ready gRPC connection"
		case loads[ep.ID] != nil && loads[ep.ID].Ejected():
			c.Eligible, c.Reason = false, fmt.Sprintf("ejected for %s more", loads[ep.ID].EjectedFor().Round(time.Millisecond))
		}
		excluded[ep.ID] = !c.Eligible
		ex.Candidates = append(ex.Candidates, c)
	}
	if dest.Subset != "" {
		ex.Why = append(ex.Why, fmt.Sprintf("subset %q holds %d of the service's %d endpoints", dest.Subset, len(eps), len(u.Endpoints)))
	}
	eligible := 0
	for _, c := range ex.Candidates {
		if c.Eligible {
			eligible++
		}
	}
	if eligible == 0 {
		ex.Why = append(ex.Why, "no endpoint is eligible: the call would fail without being sent")
		return
	}
	if eligible < len(ex.Candidates) {
		ex.Why = append(ex.Why, fmt.Sprintf("%d of %d endpoints are ruled out (open breakers, ejections)", len(ex.Candidates)-eligible, len(ex.Candidates)))
	}
	info.Skip = func(e *balancer.Endpoint) bool { return excluded[e.ID] }
	picks := map[string]int{}
	for range explainTries {
		b := balancer.New(cl.newPolicy())
		b.Update(eps)
		if e, err := b.Pick(info); err == nil {
			picks[e.ID]++
			if ex.Pick == "" {
				ex.Pick = e.ID
			}
		}
	}
	ex.Deterministic = picks[ex.Pick] == explainTries
	switch {
	case eligible == 1:
		ex.Why = append(ex.Why, fmt.Sprintf("%s is the only eligible endpoint", ex.Pick))
	case ex.Deterministic:
		ex.Why = append(ex.Why, fmt.Sprintf("the balancer's policy picks %s for this call every time (a hash of the call's key)", ex.Pick))
	default:
		ex.Why = append(ex.Why, fmt.Sprintf("the balancer's policy picks among %d eligible endpoints with random or rotating state: %s is one likely pick", eligible, ex.Pick))
	}
}
