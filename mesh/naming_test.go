package mesh

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
)

var (
	paymentsID = spiffeid.RequireFromString("spiffe://example.org/payments")
	impostorID = spiffeid.RequireFromString("spiffe://example.org/impostor")
)

// namedServers is a server of each protocol holding one identity, with
// the count of what reached them.
type namedServers struct {
	httpAddr, grpcAddr string
	reached            atomic.Int64
}

func (env *testEnv) startNamed(id spiffeid.ID) *namedServers {
	env.t.Helper()
	ns := &namedServers{}
	src := env.source(id)
	srv, err := NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns.reached.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
	}), WithIdentity(src))
	if err != nil {
		env.t.Fatal(err)
	}
	ns.httpAddr = startServer(env.t, srv)
	gopts, err := GRPCServerOptions(WithIdentity(src))
	if err != nil {
		env.t.Fatal(err)
	}
	gopts = append(gopts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		ns.reached.Add(1)
		return h(ctx, req)
	}))
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, id.String(), PeerID)
	ns.grpcAddr = serveGRPC(env.t, gs)
	return ns
}

// TestSecureNaming: a client sends a request only to a server that
// presents the identity discovery expects of the endpoint, over HTTP and
// gRPC; without an expected identity it falls back to the trust domain
// and warns once per service, or refuses when identities are required.
func TestSecureNaming(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name     string
		server   spiffeid.ID // the identity the server holds
		expected spiffeid.ID // what discovery says it must hold
		require  bool
		wantErr  error // nil: the call succeeds
		wantWarn bool
	}{
		{name: "expected server", server: paymentsID, expected: paymentsID},
		{name: "impostor", server: impostorID, expected: paymentsID, wantErr: ErrUnexpectedPeer},
		{name: "no identity known: trust domain, warned", server: impostorID, wantWarn: true},
		{name: "no identity known, required", server: paymentsID, require: true, wantErr: ErrNoExpectedIdentity},
		{name: "required and known", server: paymentsID, expected: paymentsID, require: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, 0)
			ns := env.startNamed(tt.server)
			if err := env.discovery.Set("payments", discovery.Endpoint{ID: "p1", Addr: ns.httpAddr, Identity: tt.expected}); err != nil {
				t.Fatal(err)
			}
			if err := env.discovery.Set("payments-grpc", discovery.Endpoint{ID: "p1", Addr: ns.grpcAddr, Identity: tt.expected}); err != nil {
				t.Fatal(err)
			}
			var logs lockedBuffer
			opts := []ClientOption{WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))}
			if tt.require {
				opts = append(opts, WithRequiredIdentities())
			}
			c := env.client(opts...)
			ctx := testContext(t, 20*time.Second)

			req, err := http.NewRequestWithContext(ctx, "POST", "http://payments/charge", strings.NewReader("card=4111111111111111"))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := c.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			if tt.wantErr == nil && err != nil {
				t.Errorf("HTTP: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("HTTP: %v, want %v", err, tt.wantErr)
			}

			cc, err := c.DialGRPC("payments-grpc")
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			_, err = demo.Whoami(ctx, cc)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Errorf("gRPC: %v", err)
			case tt.wantErr != nil && (status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), tt.wantErr.Error())):
				t.Errorf("gRPC: %v, want Unavailable with %v", err, tt.wantErr)
			}

			if want := int64(2); tt.wantErr == nil && ns.reached.Load() != want {
				t.Errorf("the server got %d calls, want %d", ns.reached.Load(), want)
			}
			if tt.wantErr != nil && ns.reached.Load() != 0 {
				t.Errorf("the server got %d calls, want none", ns.reached.Load())
			}
			if n := strings.Count(logs.String(), "no expected identity"); (n > 0) != tt.wantWarn || n > 2 {
				t.Errorf("%d warnings (want one per service: %v):\n%s", n, tt.wantWarn, logs.String())
			}
		})
	}
}

func TestNamingTemplate(t *testing.T) {
	leaktest.Check(t)
	naming, err := discovery.NamingTemplate("spiffe://example.org/{service}")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "http://example.org/{service}", "spiffe://Example.org/{service}", "spiffe://example.org/{service}/"} {
		if _, err := discovery.NamingTemplate(bad); !errors.Is(err, discovery.ErrNaming) {
			t.Errorf("NamingTemplate(%q): %v, want ErrNaming", bad, err)
		}
	}
	if _, err := naming("a/b"); !errors.Is(err, discovery.ErrNaming) {
		t.Errorf("naming a/b: %v, want ErrNaming", err)
	}
	env := newTestEnv(t, 0)
	good, bad := env.startNamed(paymentsID), env.startNamed(impostorID)
	static := &discovery.Static{}
	c, err := NewClient(WithDiscovery(discovery.WithNaming(static, naming)), WithIdentity(env.source(testClientID)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hc := c.HTTPClient()
	for _, tt := range []struct {
		addr    string
		wantErr error
	}{{good.httpAddr, nil}, {bad.httpAddr, ErrUnexpectedPeer}} {
		if err := static.Set("payments", discovery.Endpoint{ID: "p", Addr: tt.addr}); err != nil {
			t.Fatal(err)
		}
		// The client takes the new set in asynchronously: wait for it.
		var err error
		poll(t, "a call to "+tt.addr, func() bool {
			hc.CloseIdleConnections()
			_, _, err = call(t, hc, http.MethodGet, "http://payments/", "", nil)
			return errors.Is(err, tt.wantErr)
		})
	}
}

// TestSecureNamingIdentityChange: when discovery changes the identity
// expected at an address, connections checked against the old one are
// not used again, over HTTP and gRPC.
func TestSecureNamingIdentityChange(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	ns := env.startNamed(paymentsID)
	set := func(id spiffeid.ID) {
		t.Helper()
		if err := env.discovery.Set("payments", discovery.Endpoint{ID: "p1", Addr: ns.httpAddr, Identity: id}); err != nil {
			t.Fatal(err)
		}
		if err := env.discovery.Set("payments-grpc", discovery.Endpoint{ID: "p1", Addr: ns.grpcAddr, Identity: id}); err != nil {
			t.Fatal(err)
		}
	}
	set(paymentsID)
	c := env.client()
	hc := c.HTTPClient()
	cc, err := c.DialGRPC("payments-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx := testContext(t, 20*time.Second)
	if code, _, err := call(t, hc, http.MethodGet, "http://payments/", "", nil); err != nil || code != http.StatusOK {
		t.Fatalf("HTTP before the change: %d %v", code, err)
	}
	if _, err := demo.Whoami(ctx, cc); err != nil {
		t.Fatalf("gRPC before the change: %v", err)
	}
	set(impostorID) // the server at the address must now be someone else
	poll(t, "HTTP calls refused", func() bool {
		_, _, err := call(t, hc, http.MethodGet, "http://payments/", "", nil)
		return errors.Is(err, ErrUnexpectedPeer)
	})
	poll(t, "gRPC calls refused", func() bool {
		_, err := demo.Whoami(ctx, cc)
		return status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), ErrUnexpectedPeer.Error())
	})
}
