package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/clocktest"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// destBreakerYAML routes calls with x-subset: v2 to subset v2, whose
// breaker block trips after v2Failures consecutive failures and stays
// open a minute, and every other call to v1; v1LB names v1's balancing
// policy, a field unrelated to the breakers.
func destBreakerYAML(v2Failures int, v1LB string) string {
	svc := fmt.Sprintf(`
    defaultSubset: v1
    subsets:
      v1: {tags: [v1], trafficPolicy: {loadBalancer: {policy: %s}}}
      v2: {tags: [v2], trafficPolicy: {breaker: {consecutiveFailures: %d, openTimeout: 1m}}}
    routes:
      - name: v2
        match: [{headers: {x-subset: {exact: v2}}}]
        backends: [{subset: v2}]`, v1LB, v2Failures)
	return "services:\n  demo:" + svc + "\n  demo-grpc:" + svc + "\n"
}

// failingInstance is an instance of the demo service over mutual TLS
// that answers 503 (HTTP) and Unavailable (gRPC) while failing is set.
type failingInstance struct {
	failing            atomic.Bool
	served             atomic.Int64
	httpAddr, grpcAddr string
}

func (env *testEnv) failingInstance() *failingInstance {
	t := env.t
	t.Helper()
	in := &failingInstance{}
	srv, err := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.served.Add(1)
		if in.failing.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}), WithIdentity(env.source(testServerID)))
	if err != nil {
		t.Fatal(err)
	}
	in.httpAddr = startServer(t, srv)
	gopts, err := GRPCServerOptions(WithIdentity(env.source(testServerID)))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(gopts...)
	demo.RegisterFunc(gs, func(context.Context) (string, error) {
		in.served.Add(1)
		if in.failing.Load() {
			return "", status.Error(codes.Unavailable, "failing")
		}
		return "ok", nil
	})
	in.grpcAddr = serveGRPC(t, gs)
	return in
}

// TestDestinationBreakers checks, over real mTLS servers, HTTP and gRPC,
// that a route destination's breaker block applies to its calls: subset
// v2's breakers trip after 2 consecutive failures while v1's, the
// client's (5), do not; the open timeout runs on the client's clock; a
// table that changes the block applies it, and one that changes
// something else keeps the breakers' state.
func TestDestinationBreakers(t *testing.T) {
	leaktest.Check(t)
	for _, proto := range []string{"http", "grpc", "grpc stream"} {
		t.Run(proto, func(t *testing.T) {
			env := newTestEnv(t, 0)
			v1, v2 := env.failingInstance(), env.failingInstance()
			service := "demo"
			addr := func(in *failingInstance) string { return in.httpAddr }
			if proto != "http" {
				service, addr = "demo-grpc", func(in *failingInstance) string { return in.grpcAddr }
			}
			err := env.discovery.Set(service,
				discovery.Endpoint{ID: "v1", Addr: addr(v1), Tags: []string{"v1"}},
				discovery.Endpoint{ID: "v2", Addr: addr(v2), Tags: []string{"v2"}})
			if err != nil {
				t.Fatal(err)
			}
			clk := clocktest.New(time.Unix(1e9, 0))
			src := staticRoutes(t, destBreakerYAML(2, "round_robin"))
			rig := newTelRig(t)
			c := env.client(WithRoutes(src), WithClock(clk), WithTelemetry(rig.telemetry()), WithLogger(rig.logger()),
				WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 5, OpenTimeout: 10 * time.Minute}))
			ctx := testContext(t, 60*time.Second)
			var call func(subset string) error
			if proto == "http" {
				hc := c.HTTPClient()
				call = func(subset string) error {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://demo/", nil)
					req.Header.Set("x-subset", subset)
					resp, err := hc.Do(req)
					if err != nil {
						return err
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						return fmt.Errorf("status %d", resp.StatusCode)
					}
					return nil
				}
			} else {
				cc, err := c.DialGRPC("demo-grpc")
				if err != nil {
					t.Fatal(err)
				}
				defer cc.Close()
				call = func(subset string) error {
					_, err := demo.Whoami(metadata.AppendToOutgoingContext(ctx, "x-subset", subset), cc)
					return err
				}
				if proto == "grpc stream" {
					call = func(subset string) error {
						return whoamiStream(metadata.AppendToOutgoingContext(ctx, "x-subset", subset), cc)
					}
				}
			}
			// fail makes n calls to subset, each of which must reach its
			// server and fail.
			fail := func(subset string, in *failingInstance, n int) {
				t.Helper()
				for i := range n {
					before := in.served.Load()
					if err := call(subset); err == nil || errors.Is(err, ErrCircuitOpen) {
						t.Fatalf("%s call %d: %v, want a failure from the server", subset, i+1, err)
					}
					if in.served.Load() != before+1 {
						t.Fatalf("%s call %d did not reach the server", subset, i+1)
					}
				}
			}
			open := func(subset string, in *failingInstance) {
				t.Helper()
				before := in.served.Load()
				if err := call(subset); !errors.Is(err, ErrCircuitOpen) {
					t.Fatalf("%s: %v, want ErrCircuitOpen", subset, err)
				}
				if in.served.Load() != before {
					t.Fatalf("%s: a call went through an open breaker", subset)
				}
			}
			v1.failing.Store(true)
			v2.failing.Store(true)

			fail("v2", v2, 2)
			open("v2", v2)
			fail("v1", v1, 4) // the client's breaker (5) stays closed
			if st := c.Breakers(service).Get("v2").State(); st != breaker.Closed {
				t.Fatalf("the client's breaker of v2 is %v: v2's calls went through it", st)
			}
			// The transition is recorded as the destination's.
			for _, want := range []string{`"weft.subset":"v2"`, `"weft.breaker.set":"destination"`, `"weft.breaker.state":"open"`} {
				if logs := rig.logs.String(); !strings.Contains(logs, want) {
					t.Fatalf("breaker events lack %s:\n%s", want, logs)
				}
			}
			// /clusters says which set holds the open breaker.
			for _, e := range (*c.clusters.Load())[service].adminState(src.Table(), 0).Endpoints {
				want := AdminEndpoint{Breaker: "closed", Health: "healthy"}
				if e.ID == "v2" {
					want.Health = "breaker-open"
					want.DestinationBreakers = []AdminDestinationBreaker{{Subset: "v2", State: "open"}}
				}
				if e.Breaker != want.Breaker || e.Health != want.Health || !slices.Equal(e.DestinationBreakers, want.DestinationBreakers) {
					t.Fatalf("/clusters: %s: breaker %q, health %q, destination breakers %+v; want %q, %q, %+v",
						e.ID, e.Breaker, e.Health, e.DestinationBreakers, want.Breaker, want.Health, want.DestinationBreakers)
				}
			}

			// The open timeout runs on the client's clock.
			v2.failing.Store(false)
			clk.Advance(time.Minute + time.Second)
			if err := call("v2"); err != nil {
				t.Fatalf("v2 after the open timeout: %v", err)
			}

			// A table that changes something else keeps v2's state.
			v2.failing.Store(true)
			fail("v2", v2, 2)
			cfg, err := route.Parse([]byte(destBreakerYAML(2, "random")), route.YAML)
			if err != nil {
				t.Fatal(err)
			}
			if err := src.Update(cfg); err != nil {
				t.Fatal(err)
			}
			open("v2", v2)

			// A table that changes the block applies it: fresh breakers
			// that trip after 3.
			if cfg, err = route.Parse([]byte(destBreakerYAML(3, "random")), route.YAML); err != nil {
				t.Fatal(err)
			}
			if err := src.Update(cfg); err != nil {
				t.Fatal(err)
			}
			fail("v2", v2, 3)
			open("v2", v2)
		})
	}
}

// whoamiStream calls the demo's unary method as a stream, so that the
// call takes the engine's stream path.
func whoamiStream(ctx context.Context, cc *grpc.ClientConn) error {
	s, err := cc.NewStream(ctx, &grpc.StreamDesc{StreamName: "Whoami"}, demo.WhoamiMethod)
	if err != nil {
		return err
	}
	if err := s.SendMsg(wrapperspb.String("whoami")); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return s.RecvMsg(new(wrapperspb.StringValue))
}
