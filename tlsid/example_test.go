package tlsid_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/tlsid"
)

// A development CA issues SVIDs to a server and a client, which then
// authenticate each other over mutual TLS 1.3.
func ExampleServerConfig() {
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		panic(err)
	}
	serverID := spiffeid.RequireFromString("spiffe://example.org/payments")
	clientID := spiffeid.RequireFromString("spiffe://example.org/web")
	serverSrc, _ := ca.Source(serverID)
	clientSrc, _ := ca.Source(clientID)

	serverCfg, _ := tlsid.ServerConfig(serverSrc, tlsid.AuthorizeID(clientID))
	clientCfg, _ := tlsid.ClientConfig(clientSrc, tlsid.AuthorizeID(serverID))

	ln, _ := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if tc.Handshake() == nil {
			state := tc.ConnectionState()
			peer, _ := tlsid.PeerID(&state)
			fmt.Fprintf(tc, "hello %s", peer)
		}
	}()

	conn, err := tls.Dial("tcp", ln.Addr().String(), clientCfg)
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	msg, _ := io.ReadAll(conn)
	fmt.Println(string(msg))
	// Output: hello spiffe://example.org/web
}

// Allow and deny rules for requests: deny wins, and what no rule allows
// is denied.
func ExampleNewPolicy() {
	p, err := tlsid.NewPolicy(
		tlsid.Rule{Name: "web reads orders", Peers: []string{"spiffe://example.org/web"}, Methods: []string{"GET"}, Paths: []string{"/orders"}},
		tlsid.Rule{Name: "prod calls the gRPC API", Peers: []string{"spiffe://example.org/ns/prod/*"}, Paths: []string{"/shop.v1.Orders"}},
		tlsid.Rule{Name: "nobody reaches admin", Deny: true, Paths: []string{"/orders/admin"}},
	)
	if err != nil {
		panic(err)
	}
	web := spiffeid.RequireFromString("spiffe://example.org/web")
	api := spiffeid.RequireFromString("spiffe://example.org/ns/prod/api")
	for _, r := range []tlsid.Request{
		{Peer: web, Method: "GET", Path: "/orders/42"},
		{Peer: web, Method: "GET", Path: "/orders/42/../admin"},
		{Peer: web, Method: "DELETE", Path: "/orders/42"},
		{Peer: api, Method: "POST", Path: "/shop.v1.Orders/Get"},
	} {
		err := p.AuthorizeRequest(context.Background(), r)
		fmt.Println(r.Method, r.Path, errors.Is(err, tlsid.ErrUnauthorized))
	}
	// Output:
	// GET /orders/42 false
	// GET /orders/42/../admin true
	// DELETE /orders/42 true
	// POST /shop.v1.Orders/Get false
}

// SPIFFE IDs are parsed by go-spiffe, with weft's limits on top.
func ExampleParseWorkloadID() {
	for _, s := range []string{
		"spiffe://example.org/web",
		"spiffe://example.org",
		"spiffe://Example.org/web",
		"spiffe://example.org/a/../web",
	} {
		_, err := tlsid.ParseWorkloadID(s)
		fmt.Println(s, errors.Is(err, tlsid.ErrBadID), errors.Is(err, tlsid.ErrRootPathID))
	}
	// Output:
	// spiffe://example.org/web false false
	// spiffe://example.org false true
	// spiffe://Example.org/web true false
	// spiffe://example.org/a/../web true false
}

// Rotating the development CA's root: both roots are trusted during the
// overlap, and sources move to the new root on their next handshake.
func ExampleDevCA_RotateRoot() {
	ca, _ := tlsid.NewDevCA("example.org")
	src, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/web"))
	changed := src.Changed()
	_ = ca.RotateRoot(10 * time.Minute)
	<-changed
	fmt.Println("roots during the overlap:", len(ca.Bundle().X509Authorities()))
	svid, _ := src.GetX509SVID()
	fmt.Println("renewed:", src.Renewals(), svid.ID)
	// Output:
	// roots during the overlap: 2
	// renewed: 1 spiffe://example.org/web
}

// An SVID in files, as a SPIFFE helper or cert-manager writes them; the
// source reloads them when they change.
func ExampleNewFileSource() {
	ca, _ := tlsid.NewDevCA("example.org")
	svid, _ := ca.Issue(spiffeid.RequireFromString("spiffe://example.org/batch"))
	certPEM, keyPEM, _ := svid.Marshal()
	bundlePEM, _ := ca.Bundle().Marshal()
	dir, _ := os.MkdirTemp("", "svid")
	defer os.RemoveAll(dir)
	cert, key, bundle := filepath.Join(dir, "svid.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "bundle.pem")
	_ = os.WriteFile(cert, certPEM, 0o600)
	_ = os.WriteFile(key, keyPEM, 0o600)
	_ = os.WriteFile(bundle, bundlePEM, 0o600)

	src, err := tlsid.NewFileSource(cert, key, bundle, tlsid.WithPollInterval(time.Second))
	if err != nil {
		panic(err)
	}
	defer src.Close()
	got, _ := src.GetX509SVID()
	fmt.Println(got.ID)
	// Output: spiffe://example.org/batch
}

// Identities from Consul's Connect CA, and Consul's intentions as the
// request policy of the "payments" service.
func ExampleNewConsulSource() {
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := tlsid.NewConsulSource(ctx, client, "payments")
	if err != nil {
		fmt.Println("no Consul agent:", err)
		return
	}
	defer src.Close()
	intentions, _ := tlsid.NewConsulIntentions(client, "payments")
	serverCfg, _ := tlsid.ServerConfig(src, tlsid.AuthorizeMemberOf(src.TrustDomain()))
	_, _ = serverCfg, intentions // pass intentions to mesh.WithAccessPolicy
}

// Identities from a SPIRE agent's Workload API. The server admits peers
// of its own trust domain and of a federated one whose bundle the agent
// sends along.
func ExampleNewWorkloadSource() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	src, err := tlsid.NewWorkloadSource(ctx, tlsid.WithWorkloadAddr("unix:///run/spire/agent.sock"))
	if err != nil {
		fmt.Println("no SPIRE agent:", err)
		return
	}
	defer src.Close()
	partner := spiffeid.RequireTrustDomainFromString("partner.example")
	own := tlsid.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString("example.org"))
	serverCfg, _ := tlsid.ServerConfig(src, func(peer spiffeid.ID) error {
		if peer.MemberOf(partner) {
			return nil
		}
		return own(peer)
	})
	_ = serverCfg // or pass src to mesh.WithIdentity
}

// Several processes of a local system share one development CA kept in a
// directory; each loads it and issues its SVID files for a FileSource.
func ExampleLoadDevCA() {
	dir, _ := os.MkdirTemp("", "weft-ca")
	defer os.RemoveAll(dir)
	first, _ := tlsid.NewDevCA("example.org")
	if err := first.Save(filepath.Join(dir, "ca")); err != nil {
		panic(err)
	}
	// In another process:
	ca, err := tlsid.LoadDevCA(filepath.Join(dir, "ca"))
	if err != nil {
		panic(err)
	}
	svid, _ := ca.Issue(spiffeid.RequireFromString("spiffe://example.org/worker"))
	if err := tlsid.WriteSVIDFiles(filepath.Join(dir, "worker"), svid, ca.Bundle()); err != nil {
		panic(err)
	}
	id, err := tlsid.Verify(svid.Certificates, first.Bundle(), time.Time{})
	fmt.Println(id, err)
	// Output: spiffe://example.org/worker <nil>
}

// Consul's Connect CA names a service's identity after the cluster's
// trust domain.
func ExampleConsulServiceID() {
	roots := &api.CARootList{TrustDomain: "7a1c3f0e-2b4d-4e5f-8a9b-0c1d2e3f4a5b.consul"}
	id, _ := tlsid.ConsulServiceID(roots, "dc1", "payments")
	fmt.Println(id)
	// Output: spiffe://7a1c3f0e-2b4d-4e5f-8a9b-0c1d2e3f4a5b.consul/ns/default/dc/dc1/svc/payments
}
