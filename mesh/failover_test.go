package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// failoverRoutesYAML sends every call to subset primary, which fails over
// to subset backup; with outlier, primary ejects an endpoint at its first
// failure.
func failoverRoutesYAML(outlier bool) string {
	policy := ""
	if outlier {
		policy = ", trafficPolicy: {outlierDetection: {consecutiveFailures: 1, baseEjectionTime: 10m, maxEjectedPercent: 100}}"
	}
	svc := `
    subsets:
      primary: {tags: [primary], failover: [{subset: backup}]` + policy + `}
      backup: {tags: [backup]}
    routes: [{backends: [{subset: primary}]}]`
	return "services:\n  demo:" + svc + "\n  demo-grpc:" + svc + "\n"
}

// TestFailover sends calls, HTTP and gRPC, to a subset whose one endpoint
// cannot serve — none is in it, its breaker is open, or outlier
// detection ejected it — and checks that they go to the failover subset,
// with no failure once the primary's state is known.
func TestFailover(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		name    string
		outlier bool
		opts    []ClientOption
		// down: the primary's endpoint is in the subset but stopped; its
		// first calls fail until its breaker opens or it is ejected.
		down bool
	}{
		{name: "no endpoint in the subset"},
		{name: "its breaker open", down: true, opts: []ClientOption{WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 1, OpenTimeout: 10 * time.Minute})}},
		{name: "ejected", down: true, outlier: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t, 2)
			primary, backup := env.instances[0], env.instances[1]
			primaryTag := "primary"
			if !tc.down {
				primaryTag = "elsewhere" // the subset is empty
			} else {
				primary.http.Close()
				primary.grpc.Stop()
			}
			for svc, addr := range map[string]func(*testInstance) string{
				"demo":      func(i *testInstance) string { return i.httpAddr },
				"demo-grpc": func(i *testInstance) string { return i.grpcAddr },
			} {
				err := env.discovery.Set(svc,
					discovery.Endpoint{ID: primary.name, Addr: addr(primary), Tags: []string{primaryTag}},
					discovery.Endpoint{ID: backup.name, Addr: addr(backup), Tags: []string{"backup"}})
				if err != nil {
					t.Fatal(err)
				}
			}
			c := env.client(append([]ClientOption{WithRoutes(staticRoutes(t, failoverRoutesYAML(tc.outlier)))}, tc.opts...)...)
			ctx := testContext(t, 60*time.Second)
			hc := c.HTTPClient()
			callHTTP := func() (string, error) {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://demo/", nil)
				resp, err := hc.Do(req)
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err == nil && resp.StatusCode != http.StatusOK {
					err = fmt.Errorf("status %d", resp.StatusCode)
				}
				return string(b), err
			}
			cc, err := c.DialGRPC("demo-grpc")
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			callGRPC := func() (string, error) { return demo.Whoami(ctx, cc) }
			for proto, call := range map[string]func() (string, error){"http": callHTTP, "grpc": callGRPC} {
				// Until the primary's state is known (a breaker opens, an
				// ejection), its calls may fail; then every call fails over.
				deadline := time.Now().Add(30 * time.Second)
				for {
					answer, err := call()
					if err == nil && strings.HasPrefix(answer, backup.name+" ") {
						break
					}
					if !tc.down && err != nil {
						t.Fatalf("%s: a call to an empty subset failed: %v", proto, err)
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: no call failed over within 30 s: %q, %v", proto, answer, err)
					}
				}
				for i := range 20 {
					answer, err := call()
					if err != nil || !strings.HasPrefix(answer, backup.name+" ") {
						t.Fatalf("%s: call %d after failing over: %q, %v", proto, i, answer, err)
					}
				}
			}
		})
	}
}

// TestFailoverNeedsTargetWatcher: a failover target in another
// datacenter needs a watch of its own, which a static watcher cannot
// give: the call fails with ErrTargetUnsupported, naming the target.
func TestFailoverNeedsTargetWatcher(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 1)
	if err := env.discovery.Set("demo", discovery.Endpoint{ID: "x", Addr: env.instances[0].httpAddr, Tags: []string{"elsewhere"}}); err != nil {
		t.Fatal(err)
	}
	src := staticRoutes(t, `
services:
  demo:
    subsets: {primary: {tags: [primary], failover: [{datacenter: dc2}]}}
    routes: [{backends: [{subset: primary}]}]
`)
	c := env.client(WithRoutes(src))
	req, _ := http.NewRequestWithContext(testContext(t, 30*time.Second), http.MethodGet, "http://demo/", nil)
	resp, err := c.HTTPClient().Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("a call to an empty subset whose failover cannot be watched answered %d", resp.StatusCode)
	}
	if !errors.Is(err, ErrTargetUnsupported) || !strings.Contains(err.Error(), "demo@dc2") {
		t.Errorf("error %v, want ErrTargetUnsupported naming demo@dc2", err)
	}
	var _ route.Source = src
	_ = context.Background
}
