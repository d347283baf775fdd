// Command grpc runs a gRPC client and gRPC servers through weft, in one
// process and with no outside service: two instances of the demo service
// serve over mutual TLS 1.3 with SPIFFE identities from an in-process
// development CA and admit one caller identity only; a client dials the
// service by name, and its calls are resolved through static discovery
// and balanced over both instances. A second client, of the same trust
// domain but not admitted, is refused at the handshake.
//
//	go run ./examples/grpc
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "grpc example:", err)
		os.Exit(1)
	}
}

var (
	serverID   = spiffeid.RequireFromString("spiffe://example.org/greeter")
	webID      = spiffeid.RequireFromString("spiffe://example.org/web")
	intruderID = spiffeid.RequireFromString("spiffe://example.org/intruder")
)

func run(ctx context.Context, out io.Writer) error {
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		return err
	}

	// Two instances of the service. Each presents the greeter's SVID and
	// admits callers that prove they are spiffe://example.org/web.
	serverSrc, err := ca.Source(serverID)
	if err != nil {
		return err
	}
	opts, err := mesh.GRPCServerOptions(
		mesh.WithIdentity(serverSrc),
		mesh.WithAuthorizer(tlsid.AuthorizeID(webID)),
	)
	if err != nil {
		return err
	}
	var eps []discovery.Endpoint
	for i := 1; i <= 2; i++ {
		name := fmt.Sprintf("greeter-%d", i)
		gs := grpc.NewServer(opts...)
		demo.Register(gs, name, mesh.PeerID)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		go func() { _ = gs.Serve(ln) }()
		defer gs.Stop()
		eps = append(eps, discovery.Endpoint{ID: name, Addr: ln.Addr().String()})
		fmt.Fprintf(out, "%s serving gRPC on %s as %s\n", name, ln.Addr(), serverID)
	}
	static, err := discovery.NewStatic(map[string][]discovery.Endpoint{"greeter": eps})
	if err != nil {
		return err
	}

	// The client calls "greeter" by name and accepts only servers that
	// prove they are the greeter.
	web, err := newClient(ca, webID, static)
	if err != nil {
		return err
	}
	defer web.Close()
	cc, err := web.DialGRPC("greeter")
	if err != nil {
		return err
	}
	defer cc.Close()

	// gRPC connects to the instances in the background and balances over
	// the ready ones: call until both have answered.
	if err := warmUp(ctx, cc, len(eps)); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%s: 6 calls to %s on service greeter\n", webID, demo.WhoamiMethod)
	for i := 1; i <= 6; i++ {
		answer, err := call(ctx, cc)
		if err != nil {
			return err
		}
		if !strings.HasSuffix(answer, " saw "+webID.String()) {
			return fmt.Errorf("unexpected answer %q", answer)
		}
		fmt.Fprintf(out, "  call %d: %s\n", i, answer)
	}

	// A client with a valid SVID of the same trust domain, but not one
	// the greeter admits, is refused at the TLS handshake.
	intruder, err := newClient(ca, intruderID, static)
	if err != nil {
		return err
	}
	defer intruder.Close()
	icc, err := intruder.DialGRPC("greeter")
	if err != nil {
		return err
	}
	defer icc.Close()
	_, err = call(ctx, icc)
	if status.Code(err) != codes.Unavailable {
		return fmt.Errorf("the intruder's call: got %v, want a refusal (Unavailable)", err)
	}
	fmt.Fprintf(out, "\n%s is refused: %s\n", intruderID, status.Code(err))
	fmt.Fprintln(out, "\nall calls behaved as expected")
	return nil
}

// newClient returns a mesh client with an SVID for id that accepts only
// the greeter's identity.
func newClient(ca *tlsid.DevCA, id spiffeid.ID, static *discovery.Static) (*mesh.Client, error) {
	src, err := ca.Source(id)
	if err != nil {
		return nil, err
	}
	return mesh.NewClient(
		mesh.WithDiscovery(static),
		mesh.WithIdentity(src),
		mesh.WithAuthorizer(tlsid.AuthorizeID(serverID)),
	)
}

// warmUp calls until n distinct instances have answered, for at most
// 30 seconds: each instance's connection and TLS handshake complete in
// the background, late on a busy machine.
func warmUp(ctx context.Context, cc *grpc.ClientConn, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < n {
		answer, err := call(ctx, cc)
		if err != nil {
			return fmt.Errorf("%d of %d instances answered before: %w", len(seen), n, err)
		}
		seen[strings.Fields(answer)[0]] = true
	}
	return nil
}

// call makes one Whoami call with a deadline of its own.
func call(ctx context.Context, cc *grpc.ClientConn) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return demo.Whoami(ctx, cc)
}
