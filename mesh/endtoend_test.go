package mesh

import (
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/tlsid"
)

// get calls url through hc and returns the body of a 200 answer.
func get(t *testing.T, hc *http.Client, url string) (string, *http.Response) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t, 10*time.Second), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return string(body), resp
}

func TestHTTPOverMutualTLS(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 3)
	hc := env.client().HTTPClient()
	seen := map[string]int{}
	for i := 0; i < 30; i++ {
		body, resp := get(t, hc, "http://demo/whoami")
		if resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
			t.Fatalf("call %d: not TLS 1.3: %+v", i, resp.TLS)
		}
		if want := " saw " + testClientID.String(); !strings.HasSuffix(body, want) {
			t.Fatalf("call %d: answer %q does not end with %q", i, body, want)
		}
		seen[strings.Fields(body)[0]]++
	}
	// Round robin over three instances: ten calls each.
	for _, inst := range env.instances {
		if seen[inst.name] != 10 {
			t.Errorf("%s answered %d of 30 calls, want 10 (all: %v)", inst.name, seen[inst.name], seen)
		}
	}
}

func TestGRPCOverMutualTLS(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 3)
	cc, err := env.client().DialGRPC("demo-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 10*time.Second)
	seen := map[string]bool{}
	// Sub-connections become ready one by one; within a bounded number of
	// calls every instance must have answered.
	for i := 0; i < 500 && len(seen) < 3; i++ {
		answer, err := demo.Whoami(ctx, cc)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if want := " saw " + testClientID.String(); !strings.HasSuffix(answer, want) {
			t.Fatalf("call %d: answer %q does not end with %q", i, answer, want)
		}
		seen[strings.Fields(answer)[0]] = true
	}
	if len(seen) != 3 {
		t.Fatalf("answered by %v, want all three instances", seen)
	}
}

func TestDiscoveryUpdatesReachTheBalancer(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 3)
	c := env.client()
	hc := c.HTTPClient()
	get(t, hc, "http://demo/")
	env.publish(env.instances[1:]...)
	// The update is delivered asynchronously: wait until the cluster's
	// snapshot has two endpoints.
	cl, err := c.cluster("demo")
	if err != nil {
		t.Fatal(err)
	}
	pollEvery(t, time.Millisecond, 5*time.Second, "the balancer's two endpoints", func() bool {
		return len(cl.balancer.Endpoints()) == 2
	})
	gone := env.instances[0]
	before := gone.requests.Load()
	for i := 0; i < 20; i++ {
		if body, _ := get(t, hc, "http://demo/"); strings.HasPrefix(body, gone.name+" ") {
			t.Fatalf("call %d went to removed %s", i, gone.name)
		}
	}
	if n := gone.requests.Load(); n != before {
		t.Fatalf("removed instance served %d more requests", n-before)
	}
}

func TestClientWithoutCertificateIsRefused(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 1)
	addr := env.instances[0].httpAddr
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://" + addr + "/")
	if err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate was served")
	}
	if env.instances[0].requests.Load() != 0 {
		t.Fatal("handler ran for a client without a certificate")
	}
}

func TestPeerAuthorization(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 1)
	other, err := tlsid.NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	foreignSrc, err := other.Source(testClientID)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts []ClientOption
	}{
		// Same trust domain name, different CA: the chain does not verify.
		{"certificate from another CA", []ClientOption{WithDiscovery(env.discovery), WithIdentity(foreignSrc)}},
		// The server is spiffe://example.org/demo; the client expects another ID.
		{"server ID not the expected one", []ClientOption{
			WithDiscovery(env.discovery),
			WithIdentity(env.source(testClientID)),
			WithAuthorizer(tlsid.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/payments"))),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			resp, err := c.HTTPClient().Get("http://demo/")
			if err == nil {
				resp.Body.Close()
				t.Fatal("call succeeded")
			}
		})
	}
	if n := env.instances[0].requests.Load(); n != 0 {
		t.Fatalf("handler ran %d times for refused peers", n)
	}
}

func TestServerRefusesClientOutsideItsPolicy(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 1, WithAuthorizer(tlsid.AuthorizeID(spiffeid.RequireFromString("spiffe://example.org/billing"))))
	resp, err := env.client().HTTPClient().Get("http://demo/")
	if err == nil {
		resp.Body.Close()
		t.Fatal("server admitted a client its authorizer refuses")
	}
}

func TestClientErrors(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 1)
	if err := env.discovery.Set("empty"); err != nil {
		t.Fatal(err)
	}
	c := env.client()
	start := time.Now()
	_, err := c.HTTPClient().Get("http://empty/")
	if !errors.Is(err, balancer.ErrNoEndpoints) {
		t.Fatalf("empty service: got %v, want ErrNoEndpoints", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("empty service took %v to fail", d)
	}

	noDiscovery, err := NewClient()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := noDiscovery.HTTPClient().Get("http://demo/"); !errors.Is(err, ErrNoDiscovery) {
		t.Fatalf("no discovery: got %v", err)
	}
	if _, err := noDiscovery.DialGRPC("demo"); !errors.Is(err, ErrNoDiscovery) {
		t.Fatalf("no discovery gRPC: got %v", err)
	}

	c.Close()
	if _, err := c.HTTPClient().Get("http://demo/"); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed client: got %v", err)
	}
	if _, err := c.DialGRPC("demo"); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed client gRPC: got %v", err)
	}
	if _, err := c.DialGRPC(""); err == nil {
		t.Fatal("empty service name accepted")
	}
}

func TestPlaintextWithoutIdentity(t *testing.T) {
	leaktest.Check(t)
	srv, err := NewServer(demo.Handler("plain", PeerID))
	if err != nil {
		t.Fatal(err)
	}
	inst := startServer(t, srv)
	static, err := discovery.NewStatic(map[string][]discovery.Endpoint{"plain": {{ID: "p", Addr: inst}}})
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(WithDiscovery(static))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body, resp := get(t, c.HTTPClient(), "http://plain/")
	if resp.TLS != nil {
		t.Fatal("TLS without an identity")
	}
	if body != "plain saw anonymous" {
		t.Fatalf("answer %q", body)
	}
}

func TestNilOptionsAreIgnored(t *testing.T) {
	leaktest.Check(t)
	c, err := NewClient(nil, WithDiscovery(nil), WithIdentity(nil), WithAuthorizer(nil), WithBalancer(nil), WithLogger(nil), WithServerAuthorizer(nil))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := NewServer(nil); err == nil {
		t.Fatal("nil handler accepted")
	}
	if _, err := NewServer(http.NotFoundHandler(), nil, WithIdentity(nil)); err != nil {
		t.Fatal(err)
	}
}

// An instance that leaves discovery and then stops is never the cause of
// a failed gRPC call, even with no retry policy: an attempt whose chosen
// endpoint has no ready connection goes to a ready one instead.
func TestGRPCInstanceLeavesThenStops(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 3)
	cc, err := env.client().DialGRPC("demo-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	seen := map[string]bool{}
	for i := 0; i < 500 && len(seen) < 3; i++ {
		answer, err := demo.Whoami(ctx, cc)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		seen[strings.Fields(answer)[0]] = true
	}
	gone := env.instances[0]
	env.publish(env.instances[1:]...)
	gone.grpc.GracefulStop()
	for i := 0; i < 200; i++ {
		answer, err := demo.Whoami(ctx, cc)
		if err != nil {
			t.Fatalf("call %d after %s left: %v", i, gone.name, err)
		}
		if strings.HasPrefix(answer, gone.name+" ") {
			t.Fatalf("call %d answered by stopped %s", i, gone.name)
		}
	}
}
