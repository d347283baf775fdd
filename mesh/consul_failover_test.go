package mesh

import (
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
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

func runFailoverCalls(client *Client) *failoverCalls {
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
			code, body, err := consulGet(client, "/", nil)
			if err == nil && code != http.StatusOK {
				err = fmt.Errorf("status %d: %s", code, body)
			}
			fc.mu.Lock()
			fc.calls = append(fc.calls, failoverCall{start: start, end: time.Now(), version: body, err: err})
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

// registerFailoverServer serves version over mTLS until the test ends and
// registers it in the agent as instance id of "web", with a TTL check
// that passes.
func registerFailoverServer(t *testing.T, agent *consultest.Agent, srv *Server, id, version string) {
	t.Helper()
	_, port, err := net.SplitHostPort(startServer(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	err = agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "web", Address: "127.0.0.1", Port: p, Meta: map[string]string{"version": version},
		Check: &api.AgentServiceCheck{CheckID: "ttl-" + id, TTL: "10m", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestConsulFailover follows a service-resolver's failover through a real
// agent: subset v1 (two instances with TTL checks) fails over to v2.
// While calls run back to back, every v1 check turns critical: calls go
// to v2 with none failing; v1 passes again: calls return to it. It
// reports the window from the last check turning critical to the first
// call v2 answered, and the calls v1 still answered within it (its
// servers keep serving: a check, not a crash).
func TestConsulFailover(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	c := agent.Client()
	serverSrc, clientSrc := consulIdentities(t)
	for _, s := range []struct{ id, version string }{{"web-1a", "1"}, {"web-1b", "1"}, {"web-2", "2"}} {
		srv, err := NewServer((&consulVersion{}).handler(s.version), WithIdentity(serverSrc))
		if err != nil {
			t.Fatal(err)
		}
		registerFailoverServer(t, agent, srv, s.id, s.version)
	}
	setConsulEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"})
	setConsulEntry(t, c, &api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "web", DefaultSubset: "v1",
		Subsets: map[string]api.ServiceResolverSubset{
			"v1": {Filter: `Service.Meta.version == "1"`},
			"v2": {Filter: `Service.Meta.version == "2"`},
		},
		Failover: map[string]api.ServiceResolverFailover{"v1": {ServiceSubset: "v2"}},
	})
	client, routes := consulRoutedClient(t, agent, clientSrc)
	if d := routes.Table().Match("web", &route.Request{Method: "GET", Path: "/"}, 0); d.Target == nil ||
		len(d.Target.Destination.Failover) != 1 || d.Target.Destination.Failover[0].String() != "web/v2" {
		t.Fatalf("route %v does not fail web/v1 over to web/v2", d.Target)
	}

	calls := runFailoverCalls(client)
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
		deadline := time.Now().Add(30 * time.Second)
		for {
			if at, ok := calls.first(version, since); ok {
				return at
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no call answered by v%s within 30 s", what, version)
			}
			time.Sleep(5 * time.Millisecond) // polling the calls' record
		}
	}
	wait("before the checks fail", "1", time.Now())

	setChecks := func(status string) time.Time {
		t.Helper()
		for _, id := range []string{"web-1a", "web-1b"} {
			if err := c.Agent().UpdateTTL("ttl-"+id, "", status); err != nil {
				t.Fatal(err)
			}
		}
		return time.Now()
	}
	critical := setChecks(api.HealthCritical)
	firstV2 := wait("after every v1 check turned critical", "2", critical)

	recovered := setChecks(api.HealthPassing)
	wait("after v1 passed again", "1", recovered)
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
	t.Logf("failover window: %v from the last v1 check turning critical to the first call v2 answered; %d calls answered by v1 in it; %d calls in all, %d failed",
		firstV2.Sub(critical), v1InWindow, len(all), failed)
}
