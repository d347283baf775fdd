package mesh_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

// A client calls a service by name over mutual TLS; the server sees the
// client's SPIFFE ID.
func ExampleNewClient() {
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	serverSrc, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/payments"))
	clientSrc, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/web"))

	// A server of the "payments" service.
	srv, err := mesh.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		caller, _ := mesh.PeerID(r.Context())
		fmt.Fprintf(w, "charged, %s", caller)
	}), mesh.WithIdentity(serverSrc))
	if err != nil {
		log.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	// The client finds "payments" through discovery.
	static, _ := discovery.NewStatic(map[string][]discovery.Endpoint{
		"payments": {{ID: "payments-1", Addr: ln.Addr().String()}},
	})
	client, err := mesh.NewClient(mesh.WithDiscovery(static), mesh.WithIdentity(clientSrc))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	resp, err := client.HTTPClient().Get("http://payments/charge")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(string(body))
	// Output: charged, spiffe://example.org/web
}

// A gRPC connection to a service name: weft resolves and balances it.
func ExampleClient_DialGRPC() {
	ca, _ := tlsid.NewDevCA("example.org")
	serverSrc, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/demo"))
	clientSrc, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/web"))

	opts, err := mesh.GRPCServerOptions(mesh.WithIdentity(serverSrc))
	if err != nil {
		log.Fatal(err)
	}
	gs := grpc.NewServer(opts...)
	demo.Register(gs, "demo-1", mesh.PeerID)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go gs.Serve(ln)
	defer gs.Stop()

	static, _ := discovery.NewStatic(map[string][]discovery.Endpoint{
		"demo": {{ID: "demo-1", Addr: ln.Addr().String()}},
	})
	client, _ := mesh.NewClient(mesh.WithDiscovery(static), mesh.WithIdentity(clientSrc))
	defer client.Close()

	cc, err := client.DialGRPC("demo")
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	answer, err := demo.Whoami(context.Background(), cc)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(answer)
	// Output: demo-1 saw spiffe://example.org/web
}

// A gRPC server in the mesh: mutual TLS, and the caller's ID in every
// method's context.
func ExampleGRPCServerOptions() {
	ca, _ := tlsid.NewDevCA("example.org")
	src, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/payments"))
	opts, err := mesh.GRPCServerOptions(mesh.WithIdentity(src))
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	// Register services on s, then serve; methods call mesh.PeerID(ctx)
	// to learn who called them.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go s.Serve(ln)
	defer s.Stop()
}
