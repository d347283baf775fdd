package mesh

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/tlsid"
)

// consulClock is a clock the test moves, for the intentions cache.
type consulClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *consulClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *consulClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// consulService is one weft service whose identity comes from Consul's
// CA and whose access policy is Consul's intentions.
type consulService struct {
	name   string
	src    *tlsid.ConsulSource
	clock  *consulClock
	client *Client
	served atomic.Int64
}

func startConsulService(t *testing.T, c *api.Client, name string, disc *discovery.Static) *consulService {
	t.Helper()
	clock := &consulClock{t: time.Now()}
	intentions, err := tlsid.NewConsulIntentions(c, name, tlsid.WithClock(clock.now), tlsid.WithIntentionsTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	svc := startConsulServiceWith(t, c, name, disc, func() tlsid.RequestPolicy { return intentions })
	svc.clock = clock
	return svc
}

// startConsulServiceWith starts a service whose HTTP and gRPC servers
// (the latter discovered as name-grpc) apply the policy that policy
// returns, called once the service has its identity from Consul, and
// take the extra options.
func startConsulServiceWith(t *testing.T, c *api.Client, name string, disc *discovery.Static, policy func() tlsid.RequestPolicy, extra ...ServerOption) *consulService {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := tlsid.NewConsulSource(ctx, c, name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	svc := &consulService{name: name, src: src}
	opts := append([]ServerOption{WithIdentity(src), WithAccessPolicy(policy())}, extra...)
	h := demo.Handler(name, PeerID)
	srv, err := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		svc.served.Add(1)
		h.ServeHTTP(w, r)
	}), opts...)
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := startServer(t, srv)
	gopts, err := GRPCServerOptions(opts...)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, name, PeerID)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(gl) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	if err := disc.Set(name, discovery.Endpoint{ID: name + "-1", Addr: httpAddr}); err != nil {
		t.Fatal(err)
	}
	if err := disc.Set(name+"-grpc", discovery.Endpoint{ID: name + "-1", Addr: gl.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	svc.client, err = NewClient(WithDiscovery(disc), WithIdentity(src))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.client.Close() })
	return svc
}

// call makes one HTTP call from svc to service; closeConn asks for a
// new connection (a new handshake) on the next call.
func (svc *consulService) call(ctx context.Context, service string, closeConn bool) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+service+"/", nil)
	if err != nil {
		return 0, "", err
	}
	req.Close = closeConn
	resp, err := svc.client.HTTPClient().Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func rotateConsulRoot(t *testing.T, c *api.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if _, err := c.Connect().CASetConfig(&api.CAConfig{Provider: "consul", Config: map[string]any{"PrivateKey": keyPEM}}, nil); err != nil {
		t.Fatalf("rotate the Consul CA: %v", err)
	}
}

// TestConsulMesh runs two weft services with Consul CA identities calling
// each other over mutual TLS, enforces a deny intention, then rotates the
// CA root twice under steady load.
// awaitAgentAuthorize polls the agent's authorize endpoint until it
// gives want for peer calling target, failing the test after 30 s: the
// agent answers from its own view of the intentions, which follows a
// change a moment later.
func awaitAgentAuthorize(t *testing.T, c *api.Client, target, peer string, want bool) {
	t.Helper()
	what := fmt.Sprintf("the agent saying authorized=%v for %s → %s", want, peer, target)
	pollEvery(t, 10*time.Millisecond, 30*time.Second, what, func() bool {
		res, err := c.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: target, ClientCertURI: peer})
		return err == nil && res.Authorized == want
	})
}

func TestConsulMesh(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	c := agent.Client()
	disc := &discovery.Static{}
	alpha := startConsulService(t, c, "alpha", disc)
	beta := startConsulService(t, c, "beta", disc)
	td := alpha.src.TrustDomain().Name()
	ctx := testContext(t, 3*time.Minute)

	// Each calls the other, over HTTP and gRPC, and sees the other's ID.
	for _, pair := range [][2]*consulService{{alpha, beta}, {beta, alpha}} {
		from, to := pair[0], pair[1]
		code, body, err := from.call(ctx, to.name, false)
		want := fmt.Sprintf("%s saw spiffe://%s/ns/default/dc/dc1/svc/%s", to.name, td, from.name)
		if err != nil || code != http.StatusOK || body != want {
			t.Fatalf("%s → %s: %d %q %v, want %q", from.name, to.name, code, body, err, want)
		}
		cc, err := from.client.DialGRPC(to.name + "-grpc")
		if err != nil {
			t.Fatal(err)
		}
		answer, err := demo.Whoami(ctx, cc)
		cc.Close()
		if err != nil || answer != want {
			t.Fatalf("%s → %s gRPC: %q %v, want %q", from.name, to.name, answer, err, want)
		}
	}

	// A deny intention alpha → beta: 403 and PermissionDenied once beta's
	// cached decision expires; beta → alpha is untouched.
	if _, err := c.Connect().IntentionUpsert(&api.Intention{SourceName: "alpha", DestinationName: "beta", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	alphaID := fmt.Sprintf("spiffe://%s/ns/default/dc/dc1/svc/alpha", td)
	awaitAgentAuthorize(t, c, "beta", alphaID, false)
	beta.clock.advance(2 * time.Second)
	if code, _, err := alpha.call(ctx, "beta", false); err != nil || code != http.StatusForbidden {
		t.Fatalf("alpha → beta with a deny intention: %d %v, want 403", code, err)
	}
	cc, err := alpha.client.DialGRPC("beta-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := demo.Whoami(ctx, cc); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("alpha → beta gRPC with a deny intention: %v, want PermissionDenied", err)
	}
	if code, _, err := beta.call(ctx, "alpha", false); err != nil || code != http.StatusOK {
		t.Fatalf("beta → alpha: %d %v, want 200", code, err)
	}
	if _, err := c.Connect().IntentionDeleteExact("alpha", "beta", nil); err != nil {
		t.Fatal(err)
	}
	awaitAgentAuthorize(t, c, "beta", alphaID, true)
	beta.clock.advance(2 * time.Second)
	if code, _, err := alpha.call(ctx, "beta", false); err != nil || code != http.StatusOK {
		t.Fatalf("alpha → beta after removing the intention: %d %v, want 200", code, err)
	}
	if _, err := demo.Whoami(ctx, cc); err != nil {
		t.Fatalf("alpha → beta gRPC after removing the intention: %v", err)
	}

	// Steady load both ways, half of it on a new connection (a full
	// handshake) every call, and gRPC on long-lived connections, while the
	// root is rotated twice and Consul re-issues both leaves each time.
	var ok, failed atomic.Int64
	var firstErr atomic.Pointer[error]
	fail := func(err error) {
		failed.Add(1)
		firstErr.CompareAndSwap(nil, &err)
	}
	loadCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, pair := range [][2]*consulService{{alpha, beta}, {beta, alpha}, {alpha, beta}, {beta, alpha}} {
		from, to, fresh := pair[0], pair[1], i < 2
		wg.Add(1)
		go func() {
			defer wg.Done()
			for loadCtx.Err() == nil {
				code, _, err := from.call(loadCtx, to.name, fresh)
				switch {
				case loadCtx.Err() != nil:
					return
				case err != nil:
					fail(fmt.Errorf("%s → %s: %w", from.name, to.name, err))
				case code != http.StatusOK:
					fail(fmt.Errorf("%s → %s: status %d", from.name, to.name, code))
				default:
					ok.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for loadCtx.Err() == nil {
			_, err := demo.Whoami(loadCtx, cc)
			switch {
			case loadCtx.Err() != nil:
				return
			case err != nil:
				fail(fmt.Errorf("alpha → beta gRPC: %w", err))
			default:
				ok.Add(1)
			}
		}
	}()
	t.Cleanup(func() { stop(); wg.Wait() }) // the load ends also when a wait below fails the test
	leafUpdates := func() uint64 { a, _ := alpha.src.Updates(); b, _ := beta.src.Updates(); return a + b }
	for rotation := 1; rotation <= 2; rotation++ {
		al, _ := alpha.src.Updates()
		bl, _ := beta.src.Updates()
		rotateConsulRoot(t, c)
		deadline := time.Now().Add(90 * time.Second)
		pollEvery(t, 10*time.Millisecond, 90*time.Second, fmt.Sprintf("rotation %d: both leaves re-issued", rotation), func() bool {
			a, _ := alpha.src.Updates()
			b, _ := beta.src.Updates()
			return a > al && b > bl
		})
		// Let the load run on the new leaves for a while.
		target := ok.Load() + 200
		for ok.Load() < target && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond) // poll interval while the load runs
		}
	}
	stop()
	wg.Wait()
	_, alphaRoots := alpha.src.Updates()
	t.Logf("Consul CA under load: %d calls ok, %d failed; 2 root rotations; %d leaf updates over both services (2 initial); alpha saw %d root sets",
		ok.Load(), failed.Load(), leafUpdates(), alphaRoots)
	if e := firstErr.Load(); e != nil {
		t.Errorf("first failure: %v", *e)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d calls failed during CA rotations", failed.Load())
	}
	if ok.Load() < 400 {
		t.Fatalf("only %d calls: the load did not run", ok.Load())
	}
	if err := errors.Join(alpha.src.Err(), beta.src.Err()); err != nil {
		t.Fatalf("source errors: %v", err)
	}
}
