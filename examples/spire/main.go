// Command spire runs the demo service with identities from SPIRE: it
// starts a SPIRE server and agent on loopback (from .bin/, or
// $WEFT_SPIRE_SERVER and $WEFT_SPIRE_AGENT), registers this process's
// workloads (join-token node attestation, unix workload attestor), and
// serves and calls the demo service over HTTP and gRPC with mutual TLS,
// each side's SVID coming from the agent's Workload API through
// tlsid.NewWorkloadSource. A second trust domain, with its own SPIRE
// server and agent, federates with the first: its client gets in because
// the service's authorizer names it, and another of its workloads is
// refused.
//
//	make tools                 # builds .bin/spire-server and .bin/spire-agent once
//	go run ./examples/spire
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/spiretest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "spire example:", err)
		os.Exit(1)
	}
}

// spire is one trust domain: a SPIRE server and one agent.
type spire struct {
	server *spiretest.Server
	agent  *spiretest.Agent
}

func startSPIRE(trustDomain string) (*spire, error) {
	server, err := spiretest.LaunchServer(trustDomain)
	if err != nil {
		if server != nil {
			server.Close()
		}
		return nil, fmt.Errorf("%w (set WEFT_SPIRE_SERVER and WEFT_SPIRE_AGENT, or run `make tools` from the repository root)", err)
	}
	agent, err := server.LaunchAgent()
	if err != nil {
		if agent != nil {
			agent.Close()
		}
		server.Close()
		return nil, err
	}
	return &spire{server: server, agent: agent}, nil
}

func (s *spire) close() {
	s.agent.Close()
	s.server.Close()
}

// workload registers a workload of this process and returns its source
// of SVIDs from the agent's Workload API.
func (s *spire) workload(ctx context.Context, path string, federatesWith ...spiffeid.TrustDomain) (*tlsid.WorkloadSource, error) {
	id, _, err := s.agent.CreateEntry(path, spiretest.WithFederatesWith(federatesWith...))
	if err != nil {
		return nil, err
	}
	// The agent serves the new entry after its next sync, a few seconds
	// from now; the source waits for it.
	return tlsid.NewWorkloadSource(ctx, tlsid.WithWorkloadAddr(s.agent.Addr()), tlsid.WithWorkloadID(id))
}

func run(ctx context.Context, out io.Writer) error {
	home, err := startSPIRE("example.org")
	if err != nil {
		return err
	}
	defer home.close()
	partner, err := startSPIRE("partner.test")
	if err != nil {
		return err
	}
	defer partner.close()
	// Federation: each server holds the other's bundle.
	if err := home.server.Federate(partner.server); err != nil {
		return err
	}
	fmt.Fprintf(out, "SPIRE servers for %s and %s, federated; an agent for each\n", home.server.TrustDomain(), partner.server.TrustDomain())

	web, err := home.workload(ctx, "web", partner.server.TrustDomain())
	if err != nil {
		return err
	}
	defer web.Close()
	client, err := home.workload(ctx, "client")
	if err != nil {
		return err
	}
	defer client.Close()
	guest, err := partner.workload(ctx, "guest", home.server.TrustDomain())
	if err != nil {
		return err
	}
	defer guest.Close()
	stranger, err := partner.workload(ctx, "stranger", home.server.TrustDomain())
	if err != nil {
		return err
	}
	defer stranger.Close()
	for _, src := range []*tlsid.WorkloadSource{web, client, guest, stranger} {
		svid, _ := src.GetX509SVID()
		fmt.Fprintf(out, "SVID %s from the Workload API, valid %s, %d trust bundles\n",
			svid.ID, svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore).Round(time.Minute), src.Bundles().Len())
	}
	clientID, guestID := sourceID(client), sourceID(guest)

	// The service admits this domain's client and the partner's guest.
	admit := mesh.WithAuthorizer(tlsid.AuthorizeOneOf(clientID, guestID))
	stopServers, d, err := serve(web, admit)
	if err != nil {
		return err
	}
	defer stopServers()

	for _, caller := range []*tlsid.WorkloadSource{client, guest, stranger} {
		// A client verifies that the service presents web's SVID.
		c, err := mesh.NewClient(mesh.WithDiscovery(d), mesh.WithIdentity(caller), mesh.WithAuthorizer(tlsid.AuthorizeID(sourceID(web))))
		if err != nil {
			return err
		}
		err = calls(ctx, out, sourceID(caller), c)
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func sourceID(src tlsid.SVIDSource) spiffeid.ID {
	svid, _ := src.GetX509SVID()
	return svid.ID
}

// serve starts the demo service over HTTP and gRPC with identity src and
// returns its stop and a discovery listing it as "web" and "web-grpc".
func serve(src tlsid.Source, opts ...mesh.Option) (func(), *discovery.Static, error) {
	all := append([]mesh.Option{mesh.WithIdentity(src)}, opts...)
	serverOpts := make([]mesh.ServerOption, len(all))
	for i, o := range all {
		serverOpts[i] = o
	}
	hs, err := mesh.NewServer(demo.Handler("web", mesh.PeerID), serverOpts...)
	if err != nil {
		return nil, nil, err
	}
	gopts, err := mesh.GRPCServerOptions(serverOpts...)
	if err != nil {
		return nil, nil, err
	}
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, "web", mesh.PeerID)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		hl.Close()
		return nil, nil, err
	}
	done := make(chan struct{}, 2)
	go func() { _ = hs.Serve(hl); done <- struct{}{} }()
	go func() { _ = gs.Serve(gl); done <- struct{}{} }()
	stop := func() {
		hs.Close()
		gs.Stop()
		<-done
		<-done
	}
	d := &discovery.Static{}
	if err := errors.Join(
		d.Set("web", discovery.Endpoint{ID: "web-1", Addr: hl.Addr().String()}),
		d.Set("web-grpc", discovery.Endpoint{ID: "web-1", Addr: gl.Addr().String()}),
	); err != nil {
		stop()
		return nil, nil, err
	}
	return stop, d, nil
}

// calls makes one HTTP and one gRPC call as caller and prints what the
// service answered, or that it refused the caller.
func calls(ctx context.Context, out io.Writer, caller spiffeid.ID, c *mesh.Client) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, "http://web/", nil)
	if err != nil {
		return err
	}
	var httpAnswer string
	if resp, err := c.HTTPClient().Do(req); err != nil {
		httpAnswer = "refused (" + shortErr(err) + ")"
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		httpAnswer = fmt.Sprintf("%s %q", resp.Status, body)
	}
	cc, err := c.DialGRPC("web-grpc")
	if err != nil {
		return err
	}
	defer cc.Close()
	grpcAnswer, err := demo.Whoami(cctx, cc)
	if err != nil {
		grpcAnswer = "refused (" + shortErr(err) + ")"
	} else {
		grpcAnswer = fmt.Sprintf("%q", grpcAnswer)
	}
	fmt.Fprintf(out, "%s: HTTP %s; gRPC %s\n", caller, httpAnswer, grpcAnswer)
	return nil
}

// shortErr keeps the printed reason of a refusal to its last part.
func shortErr(err error) string {
	const max = 80
	s := err.Error()
	if len(s) > max {
		s = "…" + s[len(s)-max:]
	}
	return s
}
