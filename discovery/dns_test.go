package discovery

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// consulResolver is a resolver that asks the agent's DNS interface, a real
// DNS server on loopback.
func consulResolver(a *consultest.Agent) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, a.DNSAddr())
	}}
}

func testDNSConsul(t *testing.T, a *consultest.Agent) {
	c := a.Client()
	const svc = "dnssvc"
	d := NewDNS(WithResolver(consulResolver(a)), WithInterval(100*time.Millisecond))
	r, _ := watch(t, d, svc+".service.consul")
	// Unknown name: an empty set, not an error.
	r.waitFor(t, stateWait, "empty set for an unknown name", hasIDs())
	register(t, c, &api.AgentServiceRegistration{ID: "d1", Name: svc, Address: "127.0.0.1", Port: 8001})
	register(t, c, &api.AgentServiceRegistration{ID: "d2", Name: svc, Address: "127.0.0.2", Port: 8002})
	u, _ := r.waitFor(t, stateWait, "two instances over DNS", hasIDs("127.0.0.1:8001", "127.0.0.2:8002"))
	for _, e := range u.Endpoints {
		if e.Addr != e.ID || ValidateAddr(e.Addr) != nil || !strings.HasSuffix(e.Meta["target"], ".consul") {
			t.Errorf("endpoint %+v", e)
		}
	}
	if err := c.Agent().ServiceDeregister("d1"); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, stateWait, "one instance after a deregistration", hasIDs("127.0.0.2:8002"))
	// A second subscriber shares the loop and gets the set at once.
	late, _ := watch(t, d, svc+".service.consul")
	late.waitFor(t, stateWait, "late joiner", hasIDs("127.0.0.2:8002"))

	// The DNS server becomes unreachable: the last good set stays, with
	// the error; it clears when the server answers again.
	var server atomic.Value
	server.Store(a.DNSAddr())
	switchable := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, server.Load().(string))
	}}
	d2 := NewDNS(WithResolver(switchable), WithInterval(100*time.Millisecond))
	r2, _ := watch(t, d2, svc+".service.consul")
	r2.waitFor(t, stateWait, "the set", hasIDs("127.0.0.2:8002"))
	server.Store("127.0.0.1:1") // nothing listens on port 1
	u, _ = r2.waitFor(t, stateWait, "an error with the last good set", func(u Update) bool { return u.Err != nil })
	if !errors.Is(u.Err, ErrDNS) || len(u.Endpoints) != 1 {
		t.Fatalf("during the outage: %+v", u)
	}
	server.Store(a.DNSAddr())
	r2.waitFor(t, stateWait, "recovery", hasIDs("127.0.0.2:8002"))
}

// TestDNSServerGone points the resolver at a closed port: the lookup
// fails, the error is reported, and no set is invented.
func TestDNSServerGone(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.LocalAddr().String()
	ln.Close()
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}}
	d := NewDNS(WithResolver(res), WithInterval(200*time.Millisecond))
	r, _ := watch(t, d, "x.service.consul")
	u, _ := r.waitFor(t, stateWait, "an error", func(u Update) bool { return u.Err != nil })
	if !errors.Is(u.Err, ErrDNS) || len(u.Endpoints) != 0 {
		t.Fatalf("update = %+v", u)
	}
}
