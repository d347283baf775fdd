package discovery

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

func TestRegisterBadInput(t *testing.T) {
	leaktest.Check(t)
	// No agent is needed: bad input is refused before anything is sent.
	cfg := &api.Config{Address: "127.0.0.1:1"}
	for name, inst := range map[string]Instance{
		"no ID":          {Name: "s", Port: 80},
		"no name":        {ID: "i", Port: 80},
		"port 0":         {ID: "i", Name: "s"},
		"port too big":   {ID: "i", Name: "s", Port: 70000},
		"address+port":   {ID: "i", Name: "s", Address: "127.0.0.1:80", Port: 80},
		"ipv6 with port": {ID: "i", Name: "s", Address: "[::1]:80", Port: 80},
		"slash in ID":    {ID: "a/b", Name: "s", Port: 80},
		"negative w":     {ID: "i", Name: "s", Port: 80, Weight: -1},
	} {
		r, err := Register(context.Background(), cfg, inst)
		if r != nil || !errors.Is(err, ErrRegistration) || !errors.Is(err, ErrBadEndpoint) {
			t.Errorf("%s: Register = %v, %v; want ErrRegistration and ErrBadEndpoint", name, r, err)
		}
	}
}

func testRegisterTTLAndDrain(t *testing.T, a *consultest.Agent) {
	leaktest.Check(t)
	const svc = "reg-ttl"
	w := newConsul(t, a.Config())
	r, stop := watch(t, w, svc)
	defer stop()
	// The agent does not report DeregisterCriticalServiceAfter back and
	// applies it only after a minute, so the request is inspected.
	body := &bodyCapture{base: noKeepAlive, path: "/v1/agent/service/register"}
	regCfg := a.Config()
	regCfg.HttpClient = &http.Client{Transport: body}
	reg, err := Register(context.Background(), regCfg, Instance{ID: "ttl-1", Name: svc, Address: "127.0.0.1", Port: 7001, Weight: 3, Tags: []string{"x"}},
		WithTTLCheck(time.Second), WithDeregisterCriticalAfter(90*time.Second), WithDrainGrace(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	u, _ := r.waitFor(t, stateWait, "registered instance", hasIDs("ttl-1"))
	if u.Endpoints[0].Weight != 3 || !u.Endpoints[0].HasTag("x") {
		t.Errorf("registered endpoint = %+v", u.Endpoints[0])
	}
	if got := body.String(); !strings.Contains(got, `"DeregisterCriticalServiceAfter":"1m30s"`) || !strings.Contains(got, `"TTL":"1s"`) {
		t.Errorf("registration request lacks the TTL check or DeregisterCriticalServiceAfter: %s", got)
	}
	// Three TTLs later the heartbeat has kept it passing.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if u, _ := r.last(); len(u.Endpoints) != 1 {
			t.Fatalf("instance dropped while heartbeating: %+v", u)
		}
		time.Sleep(100 * time.Millisecond) // sampling over three TTLs
	}
	if err := reg.Err(); err != nil {
		t.Errorf("heartbeat error: %v", err)
	}
	start := time.Now()
	if err := reg.Drain(context.Background()); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	took := time.Since(start)
	// The watcher saw it gone before Drain deregistered it.
	r.waitFor(t, stateWait, "drained instance gone", hasIDs())
	if svcs, err := a.Client().Agent().Services(); err != nil || svcs["ttl-1"] != nil {
		t.Errorf("still registered after Drain: %v", err)
	}
	if took > 15*time.Second { // 200 ms of grace, the rest is a loaded machine's slack
		t.Errorf("Drain took %v", took)
	}
	if err := reg.Drain(context.Background()); err != nil {
		t.Errorf("second Drain: %v", err)
	}
	if err := reg.Deregister(context.Background()); err != nil {
		t.Errorf("Deregister after Drain: %v", err)
	}
}

func testRegisterHTTPCheck(t *testing.T, a *consultest.Agent) {
	var healthy atomic.Bool
	healthy.Store(true)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() {
			http.Error(w, "sick", http.StatusServiceUnavailable)
		}
	}))
	defer hs.Close()
	const svc = "reg-http"
	host, port, _ := net.SplitHostPort(hs.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	w := newConsul(t, a.Config())
	r, _ := watch(t, w, svc)
	reg, err := Register(context.Background(), a.Config(), Instance{ID: "http-1", Name: svc, Address: host, Port: p},
		WithHTTPCheck(hs.URL+"/health", time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Deregister(context.Background())
	r.waitFor(t, stateWait, "HTTP check passing", hasIDs("http-1"))
	healthy.Store(false)
	r.waitFor(t, stateWait, "HTTP check failing", hasIDs())
	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func testRegisterGRPCCheck(t *testing.T, a *consultest.Agent) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	defer gs.Stop()
	const svc = "reg-grpc"
	addr := ln.Addr().(*net.TCPAddr)
	w := newConsul(t, a.Config())
	r, _ := watch(t, w, svc)
	reg, err := Register(context.Background(), a.Config(), Instance{ID: "grpc-1", Name: svc, Address: "127.0.0.1", Port: addr.Port},
		WithGRPCCheck(ln.Addr().String(), false, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, stateWait, "gRPC check passing", hasIDs("grpc-1"))
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	r.waitFor(t, stateWait, "gRPC check failing", hasIDs())
	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestDrainAgentGone drains while the agent is dead: Drain must return an
// error within its context, not hang.
func TestDrainAgentGone(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	reg, err := Register(context.Background(), a.Config(), Instance{ID: "gone-1", Name: "gone", Address: "127.0.0.1", Port: 80}, WithTTLCheck(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	a.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	err = reg.Drain(ctx)
	if err == nil || !errors.Is(err, ErrRegistration) {
		t.Fatalf("Drain with the agent gone = %v, want an ErrRegistration", err)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("Drain took %v with a 2s context", took)
	}
	if !strings.Contains(err.Error(), "gone-1") {
		t.Errorf("error does not name the instance: %v", err)
	}
}

// bodyCapture keeps the body of the requests to path.
type bodyCapture struct {
	base http.RoundTripper
	path string

	mu sync.Mutex
	b  strings.Builder
}

func (c *bodyCapture) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Path == c.path && r.Body != nil {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		c.mu.Lock()
		c.b.Write(b)
		c.mu.Unlock()
	}
	return c.base.RoundTrip(r)
}

func (c *bodyCapture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}
