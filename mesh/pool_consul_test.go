package mesh

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// The tests of this file write a caller's upstream settings to a real
// agent's service-defaults ("caller" calls "web") and call mTLS servers
// registered in it through a client routed by a Consul source.

// callerDefaults is the service-defaults of "caller" with up as its
// upstream settings for "web".
func callerDefaults(up *api.UpstreamConfig) *api.ServiceConfigEntry {
	up.Name = "web"
	return &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "caller",
		UpstreamConfig: &api.UpstreamConfiguration{Overrides: []*api.UpstreamConfig{up}}}
}

// consulUp polls until a call to web answers 200.
func consulUp(t *testing.T, client *Client) {
	t.Helper()
	poll(t, "a call to web answered", func() bool {
		code, _, err := consulGet(client, "/", nil)
		return err == nil && code == http.StatusOK
	})
}

// TestConsulUpstreamLimits: the caller's MaxConcurrentRequests of 2 for
// web, written in Consul, refuses a third concurrent call at once while
// two slow calls are in flight; once they end, calls pass. A change of
// the limit in Consul applies live, and so does its removal.
func TestConsulUpstreamLimits(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	c := agent.Client()
	serverSrc, clientSrc := consulIdentities(t)
	g := &gate{}
	registerConsulServer(t, agent, serverSrc, "web-1", nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.pass(r.Context())
	}))
	setConsulEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"})
	limit := func(n int) *api.ServiceConfigEntry {
		return callerDefaults(&api.UpstreamConfig{Limits: &api.UpstreamLimits{MaxConcurrentRequests: &n}})
	}
	setConsulEntry(t, c, limit(2))
	client, routes := consulSourceClient(t, agent, clientSrc, []string{"web"}, route.WithConsulCaller("caller"))
	consulUp(t, client)

	overflow := func(inFlight int) {
		t.Helper()
		g.close()
		defer g.open()
		slow := make(chan error, inFlight)
		for range inFlight {
			go func() {
				code, _, err := consulGet(client, "/", nil)
				if err == nil && code != http.StatusOK {
					err = fmt.Errorf("status %d", code)
				}
				slow <- err
			}()
		}
		poll(t, fmt.Sprintf("%d slow calls at the server", inFlight), func() bool { return int(g.inflight.Load()) == inFlight })
		arrived := g.arrivals.Load()
		start := time.Now()
		_, _, err := consulGet(client, "/", nil)
		took := time.Since(start)
		if !errors.Is(err, ErrOverflow) {
			t.Fatalf("call %d: %v, want ErrOverflow", inFlight+1, err)
		}
		if g.arrivals.Load() != arrived {
			t.Error("the refused call reached the server")
		}
		t.Logf("call %d refused in %v with %d in flight", inFlight+1, took, inFlight)
		g.open()
		for range inFlight {
			if err := <-slow; err != nil {
				t.Errorf("slow call: %v", err)
			}
		}
		for range 3 {
			if code, _, err := consulGet(client, "/", nil); err != nil || code != http.StatusOK {
				t.Fatalf("after the slow calls ended: %d %v", code, err)
			}
		}
	}
	overflow(2)

	setConsulEntry(t, c, limit(3))
	poll(t, "the limit of 3 in the table", func() bool {
		d := routes.Table().Match("web", &route.Request{Method: "GET", Path: "/"}, 0)
		return d.Rule != nil && d.Target.Destination.Policy.ConnectionPool != nil &&
			d.Target.Destination.Policy.ConnectionPool.MaxRequests == 3
	})
	overflow(3)

	// Without the caller's entry there is no limit: four calls at once
	// all reach the server.
	if _, err := c.ConfigEntries().Delete(api.ServiceDefaults, "caller", nil); err != nil {
		t.Fatal(err)
	}
	poll(t, "no limit in the table", func() bool {
		d := routes.Table().Match("web", &route.Request{Method: "GET", Path: "/"}, 0)
		return d.Rule != nil && d.Target.Destination.Policy.ConnectionPool == nil
	})
	g.close()
	defer g.open()
	calls := make(chan error, 4)
	for range 4 {
		go func() {
			_, _, err := consulGet(client, "/", nil)
			calls <- err
		}()
	}
	poll(t, "four calls at the server", func() bool { return g.inflight.Load() == 4 })
	g.open()
	for range 4 {
		if err := <-calls; err != nil {
			t.Errorf("call without a limit: %v", err)
		}
	}
}

// TestConsulPassiveHealthCheck: the caller's PassiveHealthCheck for web
// (MaxFailures 2) ejects the instance that answers 500 after exactly
// two failures in a row; every later call goes to the healthy one.
func TestConsulPassiveHealthCheck(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	c := agent.Client()
	serverSrc, clientSrc := consulIdentities(t)
	var bad, good atomic.Int32
	registerConsulServer(t, agent, serverSrc, "web-bad", nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad.Add(1)
		http.Error(w, "broken", http.StatusInternalServerError)
	}))
	registerConsulServer(t, agent, serverSrc, "web-good", nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		good.Add(1)
	}))
	setConsulEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"})
	base := 10 * time.Minute // no ejection ends within the test
	maxPct := uint32(50)
	setConsulEntry(t, c, callerDefaults(&api.UpstreamConfig{PassiveHealthCheck: &api.PassiveHealthCheck{
		Interval: 10 * time.Second, MaxFailures: 2, BaseEjectionTime: &base, MaxEjectionPercent: &maxPct,
	}}))
	client, routes := consulSourceClient(t, agent, clientSrc, []string{"web"}, route.WithConsulCaller("caller"))
	d := routes.Table().Match("web", &route.Request{Method: "GET", Path: "/"}, 0)
	if o := d.Target.Destination.Policy.Outlier; o == nil || o.ConsecutiveFailures != 2 {
		t.Fatalf("outlier detection %+v, want 2 consecutive failures", o)
	}
	cl, err := client.cluster("web")
	if err != nil {
		t.Fatal(err)
	}
	poll(t, "both instances known to discovery", func() bool {
		u := cl.status.Load()
		return u != nil && len(u.Endpoints) == 2
	})
	failures := 0
	for range 40 {
		code, _, err := consulGet(client, "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if code != http.StatusOK {
			failures++
		}
	}
	if n := bad.Load(); n != 2 {
		t.Errorf("the failing instance got %d calls, want 2: ejected after MaxFailures", n)
	}
	if good.Load() != int32(40-failures) || failures != 2 {
		t.Errorf("the healthy instance answered %d of 40 calls, %d failed; want 38 and 2", good.Load(), failures)
	}
	t.Logf("40 calls: %d failed, all at the failing instance, which got no call after its second failure", failures)
}
