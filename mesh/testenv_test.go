package mesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/tlsid"
)

// testEnv is a small mesh on loopback for tests: a development CA, a
// static discovery, and instances of the demo service serving HTTP and
// gRPC over mutual TLS.
type testEnv struct {
	t         testing.TB
	ca        *tlsid.DevCA
	discovery *discovery.Static
	instances []*testInstance
}

// testInstance is one instance of the demo service.
type testInstance struct {
	name     string
	httpAddr string
	grpcAddr string
	http     *Server
	grpc     *grpc.Server
	requests atomic.Int64 // HTTP requests served
}

var (
	testServerID = spiffeid.RequireFromString("spiffe://example.org/demo")
	testClientID = spiffeid.RequireFromString("spiffe://example.org/client")
)

// newTestEnv starts n instances of the demo service and publishes them
// as services "demo" (HTTP) and "demo-grpc".
func newTestEnv(t testing.TB, n int, opts ...ServerOption) *testEnv {
	t.Helper()
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{t: t, ca: ca, discovery: &discovery.Static{}}
	for i := 0; i < n; i++ {
		env.instances = append(env.instances, env.startInstance(fmt.Sprintf("instance-%d", i+1), opts...))
	}
	env.publish(env.instances...)
	return env
}

func (env *testEnv) source(id spiffeid.ID) *tlsid.DevSource {
	env.t.Helper()
	src, err := env.ca.Source(id)
	if err != nil {
		env.t.Fatal(err)
	}
	return src
}

func (env *testEnv) startInstance(name string, opts ...ServerOption) *testInstance {
	t := env.t
	t.Helper()
	src := env.source(testServerID)
	inst := &testInstance{name: name}
	h := demo.Handler(name, PeerID)
	counted := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inst.requests.Add(1)
		h.ServeHTTP(w, r)
	})
	var err error
	inst.http, err = NewServer(counted, append([]ServerOption{WithIdentity(src)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpDone := make(chan struct{})
	go func() {
		defer close(httpDone)
		if err := inst.http.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("%s: serve: %v", name, err)
		}
	}()
	gopts, err := GRPCServerOptions(append([]ServerOption{WithIdentity(src)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	inst.grpc = grpc.NewServer(gopts...)
	demo.Register(inst.grpc, name, PeerID)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	grpcDone := make(chan struct{})
	go func() {
		defer close(grpcDone)
		_ = inst.grpc.Serve(gl)
	}()
	inst.httpAddr, inst.grpcAddr = hl.Addr().String(), gl.Addr().String()
	t.Cleanup(func() {
		inst.http.Close()
		inst.grpc.Stop()
		<-httpDone
		<-grpcDone
	})
	return inst
}

// publish makes the given instances the endpoints of "demo" and
// "demo-grpc".
func (env *testEnv) publish(instances ...*testInstance) {
	env.t.Helper()
	var h, g []discovery.Endpoint
	for _, in := range instances {
		h = append(h, discovery.Endpoint{ID: in.name, Addr: in.httpAddr})
		g = append(g, discovery.Endpoint{ID: in.name, Addr: in.grpcAddr})
	}
	if err := env.discovery.Set("demo", h...); err != nil {
		env.t.Fatal(err)
	}
	if err := env.discovery.Set("demo-grpc", g...); err != nil {
		env.t.Fatal(err)
	}
}

// client returns a mesh client with the client identity and the env's
// discovery, closed when the test ends.
func (env *testEnv) client(opts ...ClientOption) *Client {
	env.t.Helper()
	all := append([]ClientOption{WithDiscovery(env.discovery), WithIdentity(env.source(testClientID))}, opts...)
	c, err := NewClient(all...)
	if err != nil {
		env.t.Fatal(err)
	}
	env.t.Cleanup(func() { c.Close() })
	return c
}

// testContext returns a context that ends with the test or after d.
func testContext(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// startServer serves srv on a loopback port until the test ends and
// returns its address.
func startServer(t testing.TB, srv *Server) string {
	t.Helper()
	return serveLoopback(t, srv.Serve, func() { srv.Close() })
}

// serveGRPC serves gs on a loopback port until the test ends and returns
// its address.
func serveGRPC(t testing.TB, gs *grpc.Server) string {
	t.Helper()
	return serveLoopback(t, gs.Serve, gs.Stop)
}

// serveLoopback runs serve on a loopback listener until the test ends,
// then stop and waits for serve to return. It returns the address.
func serveLoopback(t testing.TB, serve func(net.Listener) error, stop func()) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = serve(ln)
	}()
	t.Cleanup(func() {
		stop()
		<-done
	})
	return ln.Addr().String()
}

// nowClock is a [Clock] whose time is read from a function (a fixed or
// test-driven time) and whose timers are real ones.
type nowClock func() time.Time

func (f nowClock) Now() time.Time { return f() }

func (nowClock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	return systemClock{}.Timer(d)
}
