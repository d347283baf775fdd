package mesh

import (
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// failoverCall is one call of the failover test: when it ended, which
// version answered, and its error.
type failoverCall struct {
	start, end time.Time
	version    string
	err        error
}

// failoverCalls runs calls back to back until stopped, keeping each.
type failoverCalls struct {
	mu    sync.Mutex
	calls []failoverCall
	stop  chan struct{}
	done  chan struct{}
}

func runFailoverCalls(call versionCaller) *failoverCalls {
	fc := &failoverCalls{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(fc.done)
		for {
			select {
			case <-fc.stop:
				return
			default:
			}
			start := time.Now()
			version, err := call()
			fc.mu.Lock()
			fc.calls = append(fc.calls, failoverCall{start: start, end: time.Now(), version: version, err: err})
			fc.mu.Unlock()
		}
	}()
	return fc
}

func (fc *failoverCalls) end() []failoverCall {
	close(fc.stop)
	<-fc.done
	return fc.calls
}

// first returns the end of the first call started after since that
// version answered, and whether there is one.
func (fc *failoverCalls) first(version string, since time.Time) (time.Time, bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, c := range fc.calls {
		if c.err == nil && c.version == version && !c.start.Before(since) {
			return c.end, true
		}
	}
	return time.Time{}, false
}

// registerTTL registers addr in the agent as instance id of service,
// with Meta version and a TTL check that passes.
func registerTTL(t *testing.T, agent *consultest.Agent, service, id, version, addr string) {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	err = agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: service, Address: "127.0.0.1", Port: p, Meta: map[string]string{"version": version},
		Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConsulFailover follows a service-resolver's failover through a real
// agent, for HTTP and gRPC: subset v1 (two instances with TTL checks)
// fails over to subset v2 — by a filter weft says with meta, or by one
// only the agent can evaluate, whose endpoints then come from a
// discovery watch of their own. While calls run back to back, every v1
// check turns critical: calls go to v2 with none failing; v1 passes
// again: calls return to it. It reports the window from the last check
// turning critical to the first call v2 answered, and the calls v1 still
// answered within it (its servers keep serving: a check, not a crash).
func TestConsulFailover(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		name, proto, filterV2 string
		ownWatch              bool // v2's endpoints come from a watch of their own
	}{
		{"http/meta", "http", `Service.Meta.version == "2"`, false},
		{"http/agent-filter", "http", `Service.Meta.version != "1"`, true},
		{"grpc/meta", "grpc", `Service.Meta.version == "2"`, false},
		{"grpc/agent-filter", "grpc", `Service.Meta.version != "1"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) { testConsulFailover(t, tc.proto, tc.filterV2, tc.ownWatch) })
	}
}

func testConsulFailover(t *testing.T, proto, filterV2 string, ownWatch bool) {
	agent := consultest.Start(t)
	c := agent.Client()
	serverSrc, clientSrc := consulIdentities(t)
	service := "web"
	if proto == "grpc" {
		service = "rpc"
	}
	for _, s := range []struct{ id, version string }{{"1a", "1"}, {"1b", "1"}, {"2", "2"}} {
		var addr string
		if proto == "grpc" {
			opts, err := GRPCServerOptions(WithIdentity(serverSrc))
			if err != nil {
				t.Fatal(err)
			}
			gs := grpc.NewServer(opts...)
			demo.Register(gs, s.version, PeerID)
			addr = serveGRPC(t, gs)
		} else {
			srv, err := NewServer((&consulVersion{}).handler(s.version), WithIdentity(serverSrc))
			if err != nil {
				t.Fatal(err)
			}
			addr = startServer(t, srv)
		}
		registerTTL(t, agent, service, service+"-"+s.id, s.version, addr)
	}
	setConsulEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: service, Protocol: proto})
	setConsulEntry(t, c, &api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: service, DefaultSubset: "v1",
		Subsets: map[string]api.ServiceResolverSubset{
			"v1": {Filter: `Service.Meta.version == "1"`},
			"v2": {Filter: filterV2},
		},
		Failover: map[string]api.ServiceResolverFailover{"v1": {ServiceSubset: "v2"}},
	})
	client, routes := consulRoutedClient(t, agent, clientSrc, service)
	d := routes.Table().Match(service, &route.Request{Method: "GET", Path: "/"}, 0)
	if d.Target == nil || len(d.Target.Destination.Failover) != 1 || d.Target.Destination.Failover[0].String() != service+"/v2" {
		t.Fatalf("route %v does not fail %s/v1 over to %s/v2", d.Target, service, service)
	}
	call := httpVersion(client)
	if proto == "grpc" {
		cc, err := client.DialGRPC(service)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		call = grpcVersion(cc)
	}

	calls := runFailoverCalls(call)
	stopped := false
	stop := func() []failoverCall {
		if stopped {
			return calls.calls
		}
		stopped = true
		return calls.end()
	}
	defer stop()
	wait := func(what, version string, since time.Time) time.Time {
		t.Helper()
		var at time.Time
		pollEvery(t, 5*time.Millisecond, 30*time.Second, what+": a call answered by v"+version, func() bool {
			first, ok := calls.first(version, since)
			at = first
			return ok
		})
		return at
	}
	wait("before the checks fail", "1", time.Now())
	_, hasOwn := (*client.clusters.Load())[discovery.Target{Service: service, Filter: filterV2}.String()]
	if hasOwn != ownWatch {
		t.Errorf("v2 has a discovery watch of its own: %v, want %v", hasOwn, ownWatch)
	}

	setChecks := func(status string) time.Time {
		t.Helper()
		for _, id := range []string{"1a", "1b"} {
			if err := c.Agent().UpdateTTL("ttl-"+service+"-"+id, "", status); err != nil {
				t.Fatal(err)
			}
		}
		return time.Now()
	}
	critical := setChecks(api.HealthCritical)
	firstV2 := wait("after every v1 check turned critical", "2", critical)

	recovered := setChecks(api.HealthPassing)
	back := wait("after v1 passed again", "1", recovered)
	all := stop()

	var failed, v1InWindow int
	for _, call := range all {
		if call.err != nil {
			failed++
			t.Errorf("call at %v failed: %v", call.start.Sub(critical), call.err)
		}
		if call.version == "1" && call.end.After(critical) && !call.end.After(firstV2) {
			v1InWindow++
		}
	}
	t.Logf("%s failover window: %v from the last v1 check turning critical to the first call v2 answered; %d calls answered by v1 in it; back to v1 %v after it passed; %d calls in all, %d failed",
		proto, firstV2.Sub(critical), v1InWindow, back.Sub(recovered), len(all), failed)
}
