package mesh

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/tlsid"
)

// consulVersion is one registered version of the routed service: a mesh
// server that answers with its version and counts the calls that carried
// the splitter's header.
type consulVersion struct {
	mu     sync.Mutex
	tagged int
}

func startConsulVersion(t *testing.T, agent *consultest.Agent, src tlsid.Source, version string, tags []string, v *consulVersion) {
	t.Helper()
	srv, err := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Split") == "v"+version {
			v.mu.Lock()
			v.tagged++
			v.mu.Unlock()
		}
		_, _ = io.WriteString(w, version)
	}), WithIdentity(src))
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(startServer(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	err = agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: "web-" + version, Name: "web", Address: "127.0.0.1", Port: p,
		Tags: tags, Meta: map[string]string{"version": version},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func setConsulEntry(t *testing.T, c *api.Client, e api.ConfigEntry) {
	t.Helper()
	if ok, _, err := c.ConfigEntries().Set(e, nil); err != nil || !ok {
		t.Fatalf("writing %s/%s: ok=%v err=%v", e.GetKind(), e.GetName(), ok, err)
	}
}

func consulSplit(v1, v2 float32) *api.ServiceSplitterConfigEntry {
	return &api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: "web", Splits: []api.ServiceSplit{
		{Weight: v1, ServiceSubset: "v1", RequestHeaders: &api.HTTPHeaderModifiers{Set: map[string]string{"X-Split": "v1"}}},
		{Weight: v2, ServiceSubset: "v2"},
	}}
}

// TestConsulRoutesEndToEnd uses only the package's exported API. It routes HTTP calls over mutual TLS by Consul's
// config entries, applied in-process: a client with Consul discovery and
// a route table from Consul's discovery chain calls two registered
// versions of a service as the router and splitter say, and follows a
// change of the split written to Consul while it runs.
func TestConsulRoutesEndToEnd(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	c := agent.Client()
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	serverSrc, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/web"))
	if err != nil {
		t.Fatal(err)
	}
	clientSrc, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/caller"))
	if err != nil {
		t.Fatal(err)
	}
	v1, v2 := &consulVersion{}, &consulVersion{}
	startConsulVersion(t, agent, serverSrc, "1", nil, v1)
	startConsulVersion(t, agent, serverSrc, "2", []string{"canary"}, v2)

	setConsulEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"})
	setConsulEntry(t, c, &api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: "web", Subsets: map[string]api.ServiceResolverSubset{
		"v1": {Filter: `Service.Meta.version == "1"`},
		"v2": {Filter: `"canary" in Service.Tags and Service.Meta.version == "2"`},
	}})
	setConsulEntry(t, c, consulSplit(90, 10))
	setConsulEntry(t, c, &api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "web", Routes: []api.ServiceRoute{{
		Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-canary", Exact: "1"}}}},
		Destination: &api.ServiceRouteDestination{ServiceSubset: "v2"},
	}}})

	routes, err := route.NewConsul(c, []string{"web"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- routes.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-ran; !errors.Is(err, context.Canceled) {
			t.Errorf("routes.Run: %v", err)
		}
	}()
	select {
	case <-routes.Ready():
	case <-time.After(30 * time.Second):
		t.Fatalf("no route table within 30 s: %+v", routes.Status())
	}
	watcher, err := discovery.NewConsul(agent.Config())
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(WithDiscovery(watcher), WithIdentity(clientSrc), WithRoutes(routes))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	call := func(canary bool) (string, error) {
		cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer ccancel()
		req, err := http.NewRequestWithContext(cctx, http.MethodGet, "http://web/", nil)
		if err != nil {
			return "", err
		}
		if canary {
			req.Header.Set("X-Canary", "1")
		}
		resp, err := client.HTTPClient().Do(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return "", errors.New(resp.Status + ": " + string(b))
		}
		return string(b), err
	}
	// Both versions are known to discovery once a call reaches each.
	deadline := time.Now().Add(30 * time.Second)
	for seen := map[string]bool{}; !seen["1"] || !seen["2"]; {
		if time.Now().After(deadline) {
			t.Fatalf("both versions not reached within 30 s: %v", seen)
		}
		got, err := call(false)
		if err == nil {
			seen[got] = true
		}
	}
	// share makes n calls and returns the percentage that reached v2.
	share := func(n int, canary bool) float64 {
		t.Helper()
		hits := 0
		for range n {
			got, err := call(canary)
			if err != nil {
				t.Fatalf("call: %v", err)
			}
			if got == "2" {
				hits++
			}
		}
		return 100 * float64(hits) / float64(n)
	}
	const n = 2000
	if p := share(200, true); p != 100 {
		t.Errorf("calls with x-canary: 1 reached v2 %.1f%%, want 100%% by the router", p)
	}
	v1.mu.Lock()
	v1.tagged = 0
	v1.mu.Unlock()
	p := share(n, false)
	t.Logf("split 90/10: v2 got %.1f%% of %d calls", p, n)
	if p < 7 || p > 13 { // 10 ± 3 points: over 4 standard deviations
		t.Errorf("v2 got %.1f%% of %d calls, want 10 ± 3", p, n)
	}
	v1.mu.Lock()
	tagged := v1.tagged
	v1.mu.Unlock()
	if want := int(float64(n) * (100 - p) / 100); tagged != want {
		t.Errorf("%d calls to v1 carried the splitter's X-Split header, want all %d", tagged, want)
	}

	setConsulEntry(t, c, consulSplit(50, 50))
	changed := time.Now()
	for {
		if tgs := routes.Table().Match("web", &route.Request{Method: "GET", Path: "/", Header: http.Header{}}, 0).Rule.Targets; tgs[0].Weight == 5000 {
			break
		}
		if time.Since(changed) > 30*time.Second {
			t.Fatal("the 50/50 split did not reach the table within 30 s")
		}
		time.Sleep(5 * time.Millisecond) // polling interval
	}
	t.Logf("split change in Consul → table in %v", time.Since(changed))
	p = share(n, false)
	t.Logf("split 50/50: v2 got %.1f%% of %d calls", p, n)
	if p < 46 || p > 54 { // 50 ± 4 points: over 3.5 standard deviations
		t.Errorf("v2 got %.1f%% of %d calls after the change, want 50 ± 4", p, n)
	}
}
