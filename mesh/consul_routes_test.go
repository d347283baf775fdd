package mesh

import (
	"context"
	"errors"
	"fmt"
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

// The tests of this file use only the package's exported API: a client
// with Consul discovery and a route source of Consul's config entries
// calls mTLS servers registered in a real agent.

// consulVersion counts the calls to one version that carried the
// splitter's header.
type consulVersion struct {
	mu     sync.Mutex
	tagged int
}

// handler answers with the version, counting the calls tagged for it.
func (v *consulVersion) handler(version string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Split") == "v"+version {
			v.mu.Lock()
			v.tagged++
			v.mu.Unlock()
		}
		_, _ = io.WriteString(w, version)
	})
}

// registerConsulServer serves h over mTLS until the test ends and
// registers it in the agent as instance id of service "web".
func registerConsulServer(t *testing.T, agent *consultest.Agent, src tlsid.Source, id string, tags []string, meta map[string]string, h http.Handler) {
	t.Helper()
	srv, err := NewServer(h, WithIdentity(src))
	if err != nil {
		t.Fatal(err)
	}
	_, port, err := net.SplitHostPort(startServer(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	err = agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: "web", Address: "127.0.0.1", Port: p, Tags: tags, Meta: meta,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// consulIdentities returns the identities of the servers of "web" and of
// their caller, from one development CA.
func consulIdentities(t *testing.T) (server, client tlsid.Source) {
	t.Helper()
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	server, err = ca.Source(spiffeid.RequireFromString("spiffe://example.org/web"))
	if err != nil {
		t.Fatal(err)
	}
	client, err = ca.Source(spiffeid.RequireFromString("spiffe://example.org/caller"))
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

// consulRoutedClient returns a client that finds services (by default
// "web") through the agent's catalog and routes them by the agent's config
// entries, once the first route table is in; both stop when the test ends.
func consulRoutedClient(t *testing.T, agent *consultest.Agent, id tlsid.Source, services ...string) (*Client, *route.Consul) {
	t.Helper()
	if len(services) == 0 {
		services = []string{"web"}
	}
	return consulSourceClient(t, agent, id, services)
}

// consulSourceClient is consulRoutedClient with the source built with
// opts.
func consulSourceClient(t *testing.T, agent *consultest.Agent, id tlsid.Source, services []string, opts ...route.Option) (*Client, *route.Consul) {
	t.Helper()
	routes, err := route.NewConsul(agent.Client(), services, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- routes.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-ran; !errors.Is(err, context.Canceled) {
			t.Errorf("routes.Run: %v", err)
		}
	})
	select {
	case <-routes.Ready():
	case <-time.After(30 * time.Second):
		t.Fatalf("no route table within 30 s: %+v", routes.Status())
	}
	watcher, err := discovery.NewConsul(agent.Config())
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(WithDiscovery(watcher), WithIdentity(id), WithRoutes(routes))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, routes
}

// consulGet makes one GET call to http://web/path with headers h.
func consulGet(client *Client, path string, h http.Header) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://web"+path, nil)
	if err != nil {
		return 0, "", err
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.HTTPClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
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

// TestConsulRoutesEndToEnd sends HTTP calls to two registered versions
// of a service as Consul's router and splitter say, and follows a change
// of the split written to Consul while it runs.
func TestConsulRoutesEndToEnd(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	c := agent.Client()
	serverSrc, clientSrc := consulIdentities(t)
	v1, v2 := &consulVersion{}, &consulVersion{}
	registerConsulServer(t, agent, serverSrc, "web-1", nil, map[string]string{"version": "1"}, v1.handler("1"))
	registerConsulServer(t, agent, serverSrc, "web-2", []string{"canary"}, map[string]string{"version": "2"}, v2.handler("2"))

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

	client, routes := consulRoutedClient(t, agent, clientSrc)
	call := func(canary bool) (string, error) {
		h := http.Header{}
		if canary {
			h.Set("X-Canary", "1")
		}
		code, body, err := consulGet(client, "/", h)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%d: %s", code, body)
		}
		return body, err
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
	pollEvery(t, 5*time.Millisecond, 30*time.Second, "the 50/50 split in the table", func() bool {
		tgs := routes.Table().Match("web", &route.Request{Method: "GET", Path: "/", Header: http.Header{}}, 0).Rule.Targets
		return tgs[0].Weight == 5000
	})
	t.Logf("split change in Consul → table in %v", time.Since(changed))
	p = share(n, false)
	t.Logf("split 50/50: v2 got %.1f%% of %d calls", p, n)
	if p < 46 || p > 54 { // 50 ± 4 points: over 3.5 standard deviations
		t.Errorf("v2 got %.1f%% of %d calls after the change, want 50 ± 4", p, n)
	}
}

// TestConsulRoutesTimeoutsAndRetries applies a router's request timeout
// and retries on status codes, written to Consul, to real calls.
func TestConsulRoutesTimeoutsAndRetries(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	c := agent.Client()
	serverSrc, clientSrc := consulIdentities(t)
	var (
		mu    sync.Mutex
		tries = map[string]int{} // by X-Req-Id
	)
	release := make(chan struct{})
	defer close(release)
	registerConsulServer(t, agent, serverSrc, "web-1", nil, nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			select { // held until the caller gives up or the test ends
			case <-r.Context().Done():
			case <-release:
			}
		default: // /flaky, /flaky-once: a 503 on each request's first two tries
			mu.Lock()
			tries[r.Header.Get("X-Req-Id")]++
			n := tries[r.Header.Get("X-Req-Id")]
			mu.Unlock()
			if n <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}
	}))
	setConsulEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"})
	setConsulEntry(t, c, &api.ServiceRouterConfigEntry{Kind: api.ServiceRouter, Name: "web", Routes: []api.ServiceRoute{{
		Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/slow"}},
		Destination: &api.ServiceRouteDestination{RequestTimeout: 300 * time.Millisecond},
	}, {
		Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathExact: "/flaky"}},
		Destination: &api.ServiceRouteDestination{NumRetries: 3, RetryOnStatusCodes: []uint32{503}},
	}, {
		Match:       &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathExact: "/flaky-once"}},
		Destination: &api.ServiceRouteDestination{NumRetries: 1, RetryOnStatusCodes: []uint32{503}},
	}}})
	client, _ := consulRoutedClient(t, agent, clientSrc)
	// The instance is known once a call answers.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, _, err := consulGet(client, "/warm", http.Header{"X-Req-Id": {"warm"}}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("web not reachable within 30 s")
		}
	}

	start := time.Now()
	_, _, err := consulGet(client, "/slow", nil)
	took := time.Since(start)
	if !errors.Is(err, context.DeadlineExceeded) || took < 300*time.Millisecond || took > 5*time.Second {
		t.Errorf("slow call: %v after %v, want a deadline error after the route's 300ms", err, took)
	}
	t.Logf("slow call ended after %v (RequestTimeout 300ms)", took)

	for _, tc := range []struct {
		path      string
		wantCode  int
		wantTries int
	}{
		{"/flaky", http.StatusOK, 3},                      // two 503s retried, the third try answers
		{"/flaky-once", http.StatusServiceUnavailable, 2}, // one retry only: the second 503 is the answer
	} {
		for i := range 3 {
			id := tc.path + strconv.Itoa(i)
			code, _, err := consulGet(client, tc.path, http.Header{"X-Req-Id": {id}})
			if err != nil || code != tc.wantCode {
				t.Errorf("%s: %d %v, want %d", tc.path, code, err, tc.wantCode)
			}
			mu.Lock()
			n := tries[id]
			mu.Unlock()
			if n != tc.wantTries {
				t.Errorf("%s call %s arrived %d times, want %d", tc.path, id, n, tc.wantTries)
			}
		}
	}
}
