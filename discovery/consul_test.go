package discovery

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// TestConsul runs the tests that can share an agent as subtests, so the
// agent lives exactly as long as they do.
func TestConsul(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t, consultest.WithDNS(), consultest.WithHCL(`node_meta { zone = "node-zone" }`))
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *consultest.Agent)
	}{
		{"Propagation", testConsulPropagation},
		{"EmptySetIsReal", testConsulEmptySet},
		{"Attributes", testConsulAttributes},
		{"TagsFilterWarning", testConsulTagsFilterWarning},
		{"Targets", testConsulTargets},
		{"BadInstancesSkipped", testConsulBadInstances},
		{"SharedWatchAndLateJoiner", testConsulShared},
		{"NoGoroutineAfterStop", testConsulNoLeak},
		{"RegisterTTLAndDrain", testRegisterTTLAndDrain},
		{"RegisterHTTPCheck", testRegisterHTTPCheck},
		{"RegisterGRPCCheck", testRegisterGRPCCheck},
		{"DNS", testDNSConsul},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, a) })
	}
}

func newConsul(t testing.TB, cfg *api.Config, opts ...ConsulOption) *Consul {
	t.Helper()
	w, err := NewConsul(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func watch(t testing.TB, w Watcher, service string) (*recorder, func()) {
	t.Helper()
	r := newRecorder()
	stop, err := w.Watch(service, r.fn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return r, stop
}

func register(t testing.TB, c *api.Client, reg *api.AgentServiceRegistration) {
	t.Helper()
	if reg.Address == "" && reg.Port == 0 {
		reg.Address = "127.0.0.1"
	}
	if err := c.Agent().ServiceRegister(reg); err != nil {
		t.Fatalf("register %s: %v", reg.ID, err)
	}
}

// testConsulPropagation measures how long a register, a failing check and
// a deregister take to reach a subscriber. Each must take under 10 s: far
// less than one blocking query's wait (5 min), so changes come from the
// blocking queries' answers, with room for a loaded machine.
func testConsulPropagation(t *testing.T, a *consultest.Agent) {
	c := a.Client()
	w := newConsul(t, a.Config())
	const svc = "prop"
	r, _ := watch(t, w, svc)
	r.waitFor(t, stateWait, "initial empty set", hasIDs())
	var worst time.Duration
	for i := 0; i < 5; i++ {
		id := fmt.Sprintf("prop-%d", i)
		start := time.Now()
		register(t, c, &api.AgentServiceRegistration{ID: id, Name: svc, Address: "127.0.0.1", Port: 9000 + i,
			Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthPassing}})
		_, at := r.waitFor(t, stateWait, "registration", hasIDs(id))
		reg := at.Sub(start)

		start = time.Now()
		if err := c.Agent().UpdateTTL("service:"+id, "failing on purpose", api.HealthCritical); err != nil {
			t.Fatal(err)
		}
		_, at = r.waitFor(t, stateWait, "failing check", hasIDs())
		fail := at.Sub(start)

		if err := c.Agent().UpdateTTL("service:"+id, "", api.HealthPassing); err != nil {
			t.Fatal(err)
		}
		r.waitFor(t, stateWait, "passing again", hasIDs(id))
		start = time.Now()
		if err := c.Agent().ServiceDeregister(id); err != nil {
			t.Fatal(err)
		}
		_, at = r.waitFor(t, stateWait, "deregistration", hasIDs())
		dereg := at.Sub(start)
		t.Logf("round %d: register %v, failing check %v, deregister %v", i, reg, fail, dereg)
		worst = max(worst, reg, fail, dereg)
	}
	if worst > 10*time.Second {
		t.Errorf("worst propagation %v, want under 10s", worst)
	}
	st, ok := w.Status(svc)
	if !ok || st.Err != nil || st.Index == 0 || st.LastSuccess.IsZero() {
		t.Errorf("status = %+v, %v", st, ok)
	}
}

func testConsulEmptySet(t *testing.T, a *consultest.Agent) {
	w := newConsul(t, a.Config())
	r, _ := watch(t, w, "nobody-here")
	u, _ := r.waitFor(t, stateWait, "empty set", func(u Update) bool { return true })
	if u.Err != nil || len(u.Endpoints) != 0 || u.Service != "nobody-here" {
		t.Fatalf("update for an unknown service = %+v, want an empty set without error", u)
	}
}

func testConsulAttributes(t *testing.T, a *consultest.Agent) {
	c := a.Client()
	const svc = "attrs"
	register(t, c, &api.AgentServiceRegistration{ID: "with-addr", Name: svc, Address: "127.0.0.2", Port: 81,
		Tags: []string{"v1"}, Meta: map[string]string{"zone": "svc-zone", "k": "v"},
		Weights: &api.AgentWeights{Passing: 7, Warning: 2}})
	// No service address: the node's (127.0.0.1) is used; the zone comes
	// from node meta.
	register(t, c, &api.AgentServiceRegistration{ID: "node-addr", Name: svc, Port: 82})
	register(t, c, &api.AgentServiceRegistration{ID: "ipv6", Name: svc, Address: "::1", Port: 83})
	w := newConsul(t, a.Config(), WithZoneKey("zone"))
	r, _ := watch(t, w, svc)
	u, _ := r.waitFor(t, stateWait, "three instances", hasIDs("with-addr", "node-addr", "ipv6"))
	got := map[string]Endpoint{}
	for _, e := range u.Endpoints {
		got[e.ID] = e
	}
	want := map[string]Endpoint{
		"with-addr": {ID: "with-addr", Addr: "127.0.0.2:81", Weight: 7, Zone: "svc-zone", Tags: []string{"v1"}, Meta: map[string]string{"zone": "svc-zone", "k": "v"}},
		"node-addr": {ID: "node-addr", Addr: "127.0.0.1:82", Weight: 1, Zone: "node-zone"},
		"ipv6":      {ID: "ipv6", Addr: "[::1]:83", Weight: 1, Zone: "node-zone"},
	}
	for id, we := range want {
		if !equalSets([]Endpoint{got[id]}, []Endpoint{we}) {
			t.Errorf("%s = %+v, want %+v", id, got[id], we)
		}
	}
	if !slices.IsSortedFunc(u.Endpoints, func(a, b Endpoint) int { return strings.Compare(a.ID, b.ID) }) {
		t.Errorf("set not sorted by ID: %v", ids(u))
	}
}

func testConsulTagsFilterWarning(t *testing.T, a *consultest.Agent) {
	c := a.Client()
	const svc = "tagged"
	register(t, c, &api.AgentServiceRegistration{ID: "t-a", Name: svc, Address: "127.0.0.1", Port: 1, Tags: []string{"blue", "canary"}, Meta: map[string]string{"version": "2"}})
	register(t, c, &api.AgentServiceRegistration{ID: "t-b", Name: svc, Address: "127.0.0.1", Port: 2, Tags: []string{"blue"}, Meta: map[string]string{"version": "1"}})
	register(t, c, &api.AgentServiceRegistration{ID: "t-warn", Name: svc, Address: "127.0.0.1", Port: 3,
		Weights: &api.AgentWeights{Passing: 5, Warning: 2},
		Check:   &api.AgentServiceCheck{TTL: "1m", Status: api.HealthWarning}})
	register(t, c, &api.AgentServiceRegistration{ID: "t-warn0", Name: svc, Address: "127.0.0.1", Port: 4,
		Weights: &api.AgentWeights{Passing: 5, Warning: 0},
		Check:   &api.AgentServiceCheck{TTL: "1m", Status: api.HealthWarning}})
	register(t, c, &api.AgentServiceRegistration{ID: "t-crit", Name: svc, Address: "127.0.0.1", Port: 5,
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthCritical}})

	r, _ := watch(t, newConsul(t, a.Config()), svc)
	r.waitFor(t, stateWait, "passing only", hasIDs("t-a", "t-b"))

	r, _ = watch(t, newConsul(t, a.Config(), WithTags("blue", "canary")), svc)
	r.waitFor(t, stateWait, "both tags", hasIDs("t-a"))

	r, _ = watch(t, newConsul(t, a.Config(), WithFilter(`Service.Meta.version == "1"`)), svc)
	r.waitFor(t, stateWait, "filter", hasIDs("t-b"))

	r, _ = watch(t, newConsul(t, a.Config(), WithWarning()), svc)
	u, _ := r.waitFor(t, stateWait, "passing and warning", hasIDs("t-a", "t-b", "t-warn"))
	for _, e := range u.Endpoints {
		if e.ID == "t-warn" && e.Weight != 2 {
			t.Errorf("warning instance weight %d, want Weights.Warning 2", e.Weight)
		}
	}

	r, _ = watch(t, newConsul(t, a.Config(), WithDatacenter("dc1"), WithStale(false)), svc)
	r.waitFor(t, stateWait, "own datacenter, consistent reads", hasIDs("t-a", "t-b"))

	r, _ = watch(t, newConsul(t, a.Config(), WithDatacenter("nowhere")), svc)
	u, _ = r.waitFor(t, stateWait, "error for an unknown datacenter", func(u Update) bool { return u.Err != nil })
	if !errors.Is(u.Err, ErrConsul) || !strings.Contains(u.Err.Error(), "datacenter") {
		t.Errorf("unknown datacenter: %+v", u)
	}

	r, _ = watch(t, newConsul(t, a.Config(), WithFilter(`this is not ( an expression`)), svc)
	u, _ = r.waitFor(t, stateWait, "error for a bad filter", func(u Update) bool { return u.Err != nil })
	if !errors.Is(u.Err, ErrConsul) || len(u.Endpoints) != 0 {
		t.Errorf("bad filter: %+v", u)
	}
}

// testConsulTargets watches targets of one service: each has its own
// watch, with its own filter, datacenter and health, apart from the
// service's and from the others'.
func testConsulTargets(t *testing.T, a *consultest.Agent) {
	c := a.Client()
	const svc = "targeted"
	register(t, c, &api.AgentServiceRegistration{ID: "g-1", Name: svc, Port: 1, Meta: map[string]string{"version": "1"}})
	register(t, c, &api.AgentServiceRegistration{ID: "g-2", Name: svc, Port: 2, Meta: map[string]string{"version": "2"}, Tags: []string{"canary"}})
	register(t, c, &api.AgentServiceRegistration{ID: "g-2warn", Name: svc, Port: 3, Meta: map[string]string{"version": "2"},
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthWarning}})
	register(t, c, &api.AgentServiceRegistration{ID: "g-2crit", Name: svc, Port: 4, Meta: map[string]string{"version": "2"},
		Check: &api.AgentServiceCheck{TTL: "1m", Status: api.HealthCritical}})
	w := newConsul(t, a.Config())
	for _, tc := range []struct {
		name   string
		target Target
		want   []string // nil: an error
	}{
		{"whole service, passing", Target{Service: svc, OnlyPassing: true}, []string{"g-1", "g-2"}},
		{"subset, passing", Target{Service: svc, Filter: `Service.Meta.version == "2"`, OnlyPassing: true}, []string{"g-2"}},
		{"subset, warning too", Target{Service: svc, Filter: `Service.Meta.version == "2"`}, []string{"g-2", "g-2warn"}},
		{"a filter weft's tables cannot express", Target{Service: svc, Filter: `Service.Meta.version != "1" and "canary" in Service.Tags or Service.ID == "g-1x"`, OnlyPassing: true}, []string{"g-2"}},
		{"own datacenter named", Target{Service: svc, Datacenter: "dc1", OnlyPassing: true}, []string{"g-1", "g-2"}},
		{"unknown datacenter", Target{Service: svc, Datacenter: "nowhere", OnlyPassing: true}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRecorder()
			stop, err := w.WatchTarget(tc.target, r.fn)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			if tc.want == nil {
				u, _ := r.waitFor(t, stateWait, "an error", func(u Update) bool { return u.Err != nil })
				if !errors.Is(u.Err, ErrConsul) || !strings.Contains(u.Err.Error(), "datacenter") {
					t.Errorf("unknown datacenter: %+v", u)
				}
				return
			}
			u, _ := r.waitFor(t, stateWait, fmt.Sprint(tc.want), hasIDs(tc.want...))
			if u.Service != svc {
				t.Errorf("Update.Service = %q, want %q", u.Service, svc)
			}
			if st, ok := w.Status(tc.target.String()); !ok || st.Index == 0 {
				t.Errorf("status of %s: %+v, %v", tc.target, st, ok)
			}
		})
	}
	// A target's watch is its own: the service's watch still sees every
	// passing instance, and a change reaches both.
	r, _ := watch(t, w, svc)
	r.waitFor(t, stateWait, "the service's watch", hasIDs("g-1", "g-2"))
	v2 := newRecorder()
	stop, err := w.WatchTarget(Target{Service: svc, Filter: `Service.Meta.version == "2"`, OnlyPassing: true}, v2.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	v2.waitFor(t, stateWait, "the target's watch", hasIDs("g-2"))
	if err := c.Agent().UpdateTTL("service:g-2crit", "", api.HealthPassing); err != nil {
		t.Fatal(err)
	}
	v2.waitFor(t, stateWait, "a recovered instance in the target", hasIDs("g-2", "g-2crit"))
	r.waitFor(t, stateWait, "a recovered instance in the service", hasIDs("g-1", "g-2", "g-2crit"))
	if _, err := w.WatchTarget(Target{}, v2.fn); err == nil {
		t.Error("a target without a service was watched")
	}

	// The wrappers watch targets through a watcher that does.
	naming, err := NamingTemplate("spiffe://example.org/{service}")
	if err != nil {
		t.Fatal(err)
	}
	wrapped := HoldLastSet(WithNaming(w, naming), time.Minute).(TargetWatcher)
	named := newRecorder()
	stop, err = wrapped.WatchTarget(Target{Service: svc, Filter: `Service.Meta.version == "1"`, OnlyPassing: true}, named.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	u, _ := named.waitFor(t, stateWait, "the named target", hasIDs("g-1"))
	if id := u.Endpoints[0].Identity.String(); id != "spiffe://example.org/"+svc {
		t.Errorf("identity %q, want the service's", id)
	}
	if _, err := WithNaming(&Static{}, naming).(TargetWatcher).WatchTarget(Target{Service: svc}, named.fn); !errors.Is(err, ErrNoTargets) {
		t.Errorf("a target through a static watcher: %v, want ErrNoTargets", err)
	}
}

func TestTargetString(t *testing.T) {
	for _, tc := range []struct {
		t    Target
		want string
	}{
		{Target{Service: "web"}, "web passing|warning"},
		{Target{Service: "web", OnlyPassing: true}, "web passing"},
		{Target{Service: "web", Datacenter: "dc2", Filter: `Service.Meta.version == "2"`, OnlyPassing: true}, `web@dc2 "Service.Meta.version == \"2\"" passing`},
	} {
		if got := tc.t.String(); got != tc.want {
			t.Errorf("%+v: %s, want %s", tc.t, got, tc.want)
		}
	}
}

// testConsulBadInstances registers, through the catalog API (which checks
// less than the agent's), instances that cannot be used, next to a good one.
func testConsulBadInstances(t *testing.T, a *consultest.Agent) {
	c := a.Client()
	const svc = "bad"
	var logs syncBuffer
	w := newConsul(t, a.Config(), WithConsulLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	regs := []struct {
		node, id, addr string
		port           int
		meta           map[string]string
	}{
		{"bad-n1", "good", "127.0.0.1", 80, nil},
		{"bad-n1", "port0", "127.0.0.1", 0, nil},
		{"bad-n1", "port-big", "127.0.0.1", 70000, nil},
		{"bad-n1", "with-port", "127.0.0.1:80", 80, nil},
		{"bad-n1", "ipv6-port", "[::1]:80", 80, nil},
		{"bad-n1", "space", "bad host", 80, nil},
		{"bad-n2", "good", "127.0.0.3", 80, nil}, // duplicate ID on another node
	}
	for _, r := range regs {
		_, err := c.Catalog().Register(&api.CatalogRegistration{
			Node: r.node, Address: "127.0.0.9",
			Service: &api.AgentService{ID: r.id, Service: svc, Address: r.addr, Port: r.port, Meta: r.meta},
		}, nil)
		if err != nil {
			t.Logf("catalog refused %s (%s:%d): %v", r.id, r.addr, r.port, err)
		}
	}
	r, _ := watch(t, w, svc)
	u, _ := r.waitFor(t, stateWait, "only the good instance", func(u Update) bool { return len(u.Endpoints) == 1 })
	if u.Endpoints[0].ID != "good" || u.Err != nil {
		t.Fatalf("set = %+v", u)
	}
	out := logs.String()
	for _, want := range []string{"port 0", "port 70000", "holds a port", "duplicate ID"} {
		if !strings.Contains(out, want) {
			t.Errorf("log has no reason %q:\n%s", want, out)
		}
	}
}

// TestConsulEndpointConversion feeds entries Consul itself would refuse to
// store (weights, UTF-8, missing parts) straight into the conversion: a
// real agent cannot produce them, so they are built by hand here.
func TestConsulEndpointConversion(t *testing.T) {
	leaktest.Check(t)
	w := newConsul(t, &api.Config{Address: "127.0.0.1:1"}, WithWarning())
	node := &api.Node{Address: "10.0.0.1"}
	passing := api.HealthChecks{{Status: api.HealthPassing}}
	for _, tc := range []struct {
		name string
		e    *api.ServiceEntry
		want string // substring of the error; "" means accepted
	}{
		{"nil entry", nil, "without a service"},
		{"nil service", &api.ServiceEntry{}, "without a service"},
		{"no ID", &api.ServiceEntry{Node: node, Service: &api.AgentService{Port: 1}}, "without an ID"},
		{"no address", &api.ServiceEntry{Service: &api.AgentService{ID: "x", Port: 1}}, "empty address"},
		{"negative weight", &api.ServiceEntry{Node: node, Checks: passing, Service: &api.AgentService{ID: "x", Port: 1, Weights: api.AgentWeights{Passing: -3}}}, "out of range"},
		{"bad utf8 tag", &api.ServiceEntry{Node: node, Checks: passing, Service: &api.AgentService{ID: "x", Port: 1, Tags: []string{"\xff"}}}, "not UTF-8"},
		{"empty meta key", &api.ServiceEntry{Node: node, Checks: passing, Service: &api.AgentService{ID: "x", Port: 1, Meta: map[string]string{"": "v"}}}, "meta"},
		{"bracket garbage", &api.ServiceEntry{Service: &api.AgentService{ID: "x", Port: 1, Address: "[::1"}}, "brackets"},
		{"bracketed v4", &api.ServiceEntry{Service: &api.AgentService{ID: "x", Port: 1, Address: "[1.2.3.4]"}}, "IPv6"},
		{"critical", &api.ServiceEntry{Node: node, Checks: api.HealthChecks{{Status: api.HealthCritical}}, Service: &api.AgentService{ID: "x", Port: 1}}, "excluded"},
		{"bracketed v6", &api.ServiceEntry{Checks: passing, Service: &api.AgentService{ID: "x", Port: 1, Address: "[::1]"}}, ""},
		{"node address", &api.ServiceEntry{Node: node, Checks: passing, Service: &api.AgentService{ID: "x", Port: 1}}, ""},
	} {
		ep, err := w.endpoint(tc.e, w.cfg.passingOnly)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want == "" && ValidateAddr(ep.Addr) != nil:
			t.Errorf("%s: accepted bad address %q", tc.name, ep.Addr)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func testConsulShared(t *testing.T, a *consultest.Agent) {
	c := a.Client()
	const svc = "shared"
	counter := &consultest.RoundTripCounter{Base: noKeepAlive}
	cfg := a.Config()
	cfg.HttpClient = &http.Client{Transport: counter}
	w := newConsul(t, cfg)
	register(t, c, &api.AgentServiceRegistration{ID: "s1", Name: svc, Address: "127.0.0.1", Port: 1})
	var recs []*recorder
	for i := 0; i < 10; i++ {
		r, _ := watch(t, w, svc)
		recs = append(recs, r)
	}
	for _, r := range recs {
		r.waitFor(t, stateWait, "first set", hasIDs("s1"))
	}
	before := counter.Count()
	register(t, c, &api.AgentServiceRegistration{ID: "s2", Name: svc, Address: "127.0.0.1", Port: 2})
	for _, r := range recs {
		r.waitFor(t, stateWait, "second set", hasIDs("s1", "s2"))
	}
	late, _ := watch(t, w, svc)
	late.waitFor(t, stateWait, "late joiner gets the set at once", hasIDs("s1", "s2"))
	// Ten subscribers, one watch: one change costs one or two queries,
	// not ten.
	if n := counter.Count() - before; n > 3 {
		t.Errorf("%d queries for one change with 11 subscribers; want one shared watch", n)
	}
}

func testConsulNoLeak(t *testing.T, a *consultest.Agent) {
	leaktest.Check(t)
	w := newConsul(t, a.Config())
	var stops []func()
	for i := 0; i < 20; i++ {
		r := newRecorder()
		stop, err := w.Watch(fmt.Sprintf("leak-%d", i%5), r.fn)
		if err != nil {
			t.Fatal(err)
		}
		stops = append(stops, stop)
		r.waitFor(t, stateWait, "a set", func(Update) bool { return true })
	}
	for _, s := range stops {
		s()
	}
	if _, ok := w.Status("leak-0"); ok {
		t.Error("status kept after the last subscriber left")
	}
	cfg := a.Config()
	if cfg.Transport != nil {
		cfg.Transport.CloseIdleConnections()
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
