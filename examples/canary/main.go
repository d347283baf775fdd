// Command canary ramps a canary release through Consul's L7 config
// entries while calls run, with weft applying them in-process: no
// sidecar, no redeploy.
//
// It starts `consul agent -dev` on loopback (from .bin/consul, or
// $WEFT_CONSUL), registers two instances of version v1 and one of v2 of
// the service "web" (mutual TLS servers on 127.0.0.1 with identities from
// Consul's Connect CA, Meta version=v1 or v2), and writes a
// service-resolver whose subsets v1 and v2 filter on Service.Meta.version.
// A client with Consul discovery and a route source of Consul's discovery
// chains ([route.NewConsul]) calls "web" all along, at a steady pace. The
// program then ramps the canary by writing service-splitter entries: v2 at
// 0%, 10%, 50% and 100%. After each write it polls the route source until
// the new split is in its table, measures the split over a fixed number of
// calls, and prints one line per step:
//
//	canary  10%: v1=90.2% v2=9.8% over 2000 calls (in the route table 12ms after the write)
//
// It exits non-zero when a measured share is more than five standard
// deviations of a binomial draw from the split (or not exact at 0% and
// 100%), when any call fails, or when it runs longer than two minutes.
//
//	make tools                 # builds .bin/consul once
//	go run ./examples/canary
package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/tlsid"
)

const (
	service       = "web"
	clientService = "canary-example"
	// perStep is how many calls measure each step's split.
	perStep = 2000
	// tolerance is how many binomial standard deviations a measured
	// share may be from the split.
	tolerance = 5
)

// steps are the canary's shares, in percent, in order.
var steps = []float64{0, 10, 50, 100}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "canary example:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, out io.Writer) error {
	agent, err := consultest.Launch()
	if err != nil {
		return err
	}
	defer agent.Close()
	fmt.Fprintf(out, "consul agent -dev on %s\n", agent.HTTPAddr())
	consul := agent.Client()

	serverSrc, err := tlsid.NewConsulSource(ctx, consul, service)
	if err != nil {
		return err
	}
	defer serverSrc.Close()
	clientSrc, err := tlsid.NewConsulSource(ctx, consul, clientService)
	if err != nil {
		return err
	}
	defer clientSrc.Close()

	for _, name := range []string{"v1-a", "v1-b", "v2-a"} {
		stop, err := serve(ctx, agent.Config(), serverSrc, name)
		if err != nil {
			return err
		}
		defer stop()
	}

	// The resolver defines the subsets, the splitter starts the canary at
	// the first step.
	for _, e := range []api.ConfigEntry{
		&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: service, Protocol: "http"},
		&api.ServiceResolverConfigEntry{Kind: api.ServiceResolver, Name: service, DefaultSubset: "v1",
			Subsets: map[string]api.ServiceResolverSubset{
				"v1": {Filter: `Service.Meta.version == "v1"`},
				"v2": {Filter: `Service.Meta.version == "v2"`},
			}},
		split(steps[0]),
	} {
		if err := setEntry(consul, e); err != nil {
			return err
		}
	}

	routes, err := route.NewConsul(consul, []string{service})
	if err != nil {
		return err
	}
	rctx, stopRoutes := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- routes.Run(rctx) }()
	defer func() { stopRoutes(); <-ran }()
	select {
	case <-routes.Ready():
	case <-ctx.Done():
		return fmt.Errorf("no route table from Consul: %w (status %+v)", ctx.Err(), routes.Status())
	}

	watcher, err := discovery.NewConsul(agent.Config())
	if err != nil {
		return err
	}
	client, err := mesh.NewClient(mesh.WithDiscovery(watcher), mesh.WithIdentity(clientSrc), mesh.WithRoutes(routes))
	if err != nil {
		return err
	}
	defer client.Close()
	hc := client.HTTPClient()
	if err := waitReachable(ctx, hc); err != nil {
		return err
	}

	// Calls run all along the ramp, one every 5 ms.
	bg := &background{}
	lctx, stopLoad := context.WithCancel(ctx)
	loaded := make(chan struct{})
	go func() { defer close(loaded); bg.run(lctx, hc, 5*time.Millisecond) }()
	defer func() { stopLoad(); <-loaded }()

	for i, pct := range steps {
		note := "the starting split"
		if i > 0 {
			written := time.Now()
			if err := setEntry(consul, split(pct)); err != nil {
				return err
			}
			if err := waitSplit(ctx, routes, int(math.Round(pct*100))); err != nil {
				return err
			}
			note = fmt.Sprintf("in the route table %v after the write", time.Since(written).Round(time.Millisecond))
		}
		got, err := measure(ctx, hc, perStep)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "canary %3.0f%%: v1=%.1f%% v2=%.1f%% over %d calls (%s)\n", pct, got["v1"], got["v2"], perStep, note)
		if err := checkShare(got["v2"], pct, perStep); err != nil {
			return err
		}
	}
	stopLoad()
	<-loaded
	ok, failed, first := bg.result()
	fmt.Fprintf(out, "%d calls ran alongside the ramp, %d failed\n", ok+failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d calls failed during the ramp, the first with: %w", failed, first)
	}
	return nil
}

// checkShare fails when got, the measured percentage of n calls sent to
// the canary, is not within tolerance standard deviations of want; at
// 0% and 100% it must be exact.
func checkShare(got, want float64, n int) error {
	p := want / 100
	bound := 100 * tolerance * math.Sqrt(p*(1-p)/float64(n))
	if math.Abs(got-want) > bound {
		return fmt.Errorf("v2 got %.1f%% of %d calls at a split of %.0f%%, want within ±%.1f points", got, n, want, bound)
	}
	return nil
}

// split is the service-splitter that sends pct percent of the calls to
// subset v2 and the rest to v1.
func split(pct float64) *api.ServiceSplitterConfigEntry {
	return &api.ServiceSplitterConfigEntry{Kind: api.ServiceSplitter, Name: service, Splits: []api.ServiceSplit{
		{Weight: float32(100 - pct), ServiceSubset: "v1"},
		{Weight: float32(pct), ServiceSubset: "v2"},
	}}
}

// setEntry writes a config entry to Consul.
func setEntry(c *api.Client, e api.ConfigEntry) error {
	if ok, _, err := c.ConfigEntries().Set(e, nil); err != nil || !ok {
		return fmt.Errorf("write %s %s: applied %v: %v", e.GetKind(), e.GetName(), ok, err)
	}
	return nil
}

// waitSplit polls the route source, every 2 ms, until its table sends
// v2 basis points of the calls to "web" to subset v2, for at most 30 s.
func waitSplit(ctx context.Context, routes *route.Consul, v2 int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	req := &route.Request{Method: http.MethodGet, Path: "/", Header: http.Header{}}
	for {
		got := 0
		if rule := routes.Table().Match(service, req, 0).Rule; rule != nil {
			for _, tg := range rule.Targets {
				if tg.Destination.Subset == "v2" {
					got += tg.Weight
				}
			}
		}
		if got == v2 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the route table never sent %d/10000 to v2 (it sends %d): %w; status %+v", v2, got, ctx.Err(), routes.Status())
		case <-tick.C:
		}
	}
}

// call makes one call to "web" and returns the version that answered.
func call(ctx context.Context, hc *http.Client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+service+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	version, _, _ := strings.Cut(string(body), "-") // "v1-a saw spiffe://…"
	return version, nil
}

// measure makes n calls one after the other and returns the percentage
// of them each version answered.
func measure(ctx context.Context, hc *http.Client, n int) (map[string]float64, error) {
	count := map[string]int{}
	for i := range n {
		v, err := call(ctx, hc)
		if err != nil {
			return nil, fmt.Errorf("call %d of %d: %w", i+1, n, err)
		}
		count[v]++
	}
	out := map[string]float64{}
	for v, c := range count {
		out[v] = 100 * float64(c) / float64(n)
	}
	return out, nil
}

// waitReachable calls "web", 50 ms apart, until a call succeeds, for at
// most 30 s: discovery's first answer reaches the client in the
// background.
func waitReachable(ctx context.Context, hc *http.Client) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := call(ctx, hc)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("web not reachable: %w", err)
		case <-tick.C:
		}
	}
}

// background counts the calls made alongside the ramp.
type background struct {
	mu     sync.Mutex
	ok     int
	failed int
	first  error
}

// run calls "web" every interval until ctx ends.
func (b *background) run(ctx context.Context, hc *http.Client, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		_, err := call(ctx, hc)
		if ctx.Err() != nil {
			return // the call may have been cut by the end of the ramp
		}
		b.mu.Lock()
		if err != nil {
			b.failed++
			if b.first == nil {
				b.first = err
			}
		} else {
			b.ok++
		}
		b.mu.Unlock()
	}
}

func (b *background) result() (ok, failed int, first error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ok, b.failed, b.first
}

// serve runs an instance of "web" named name ("v1-a": version v1) over
// mutual TLS on 127.0.0.1 and registers it in Consul with a TTL check
// whose heartbeat the registration keeps. stop deregisters it and shuts
// it down.
func serve(ctx context.Context, cfg *api.Config, src tlsid.Source, name string) (stop func(), err error) {
	version, _, _ := strings.Cut(name, "-")
	srv, err := mesh.NewServer(demo.Handler(name, mesh.PeerID), mesh.WithIdentity(src))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	reg, err := discovery.Register(ctx, cfg, discovery.Instance{
		ID: "web-" + name, Name: service, Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port,
		Meta: map[string]string{"version": version},
	}, discovery.WithTTLCheck(10*time.Second), discovery.WithDeregisterCriticalAfter(time.Minute))
	if err != nil {
		srv.Close()
		<-served
		return nil, fmt.Errorf("register %s: %w", name, err)
	}
	return func() {
		_ = reg.Deregister(context.Background())
		_ = srv.Close()
		<-served
	}, nil
}
