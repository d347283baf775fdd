package tlsid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// handshakeKeys are one CA and a server and a client leaf; the server
// leaf also names server.test, so plain crypto/tls can verify it.
func handshakeKeys(b *testing.B) (*testCA, *x509svid.SVID, *x509svid.SVID) {
	ca := newTestCA(b, "example.org", nil)
	srvLeaf, srvKey := ca.leaf(b, func(c *x509.Certificate) {
		c.URIs = []*url.URL{mustURL(b, "spiffe://example.org/server")}
		c.DNSNames = []string{"server.test"}
	})
	srv := &x509svid.SVID{ID: spiffeid.RequireFromString("spiffe://example.org/server"), Certificates: []*x509.Certificate{srvLeaf}, PrivateKey: srvKey}
	return ca, srv, ca.svid(b, "spiffe://example.org/client")
}

func runHandshakes(b *testing.B, server, client *tls.Config) {
	b.ReportAllocs()
	for b.Loop() {
		sc, cc := net.Pipe()
		errc := make(chan error, 1)
		go func() {
			s := tls.Server(sc, server)
			errc <- s.Handshake()
		}()
		c := tls.Client(cc, client)
		if err := c.Handshake(); err != nil {
			b.Fatal(err)
		}
		if err := <-errc; err != nil {
			b.Fatal(err)
		}
		// Close the pipes, not the TLS connections: a close_notify on an
		// unread pipe would block.
		sc.Close()
		cc.Close()
	}
}

// BenchmarkHandshakeWeft is a full TLS 1.3 mTLS handshake with weft's
// configs: certificates from callbacks, X.509-SVID verification of both
// sides and an authorizer.
func BenchmarkHandshakeWeft(b *testing.B) {
	ca, srv, cli := handshakeKeys(b)
	s, err := ServerConfig(newSwapSource(srv, ca.bundle()), AuthorizeID(cli.ID))
	if err != nil {
		b.Fatal(err)
	}
	c, err := ClientConfig(newSwapSource(cli, ca.bundle()), AuthorizeID(srv.ID))
	if err != nil {
		b.Fatal(err)
	}
	s.SessionTicketsDisabled = true
	runHandshakes(b, s, c)
}

// BenchmarkHandshakePlain is the same handshake with plain crypto/tls:
// the same keys, standard chain and host name verification.
func BenchmarkHandshakePlain(b *testing.B) {
	ca, srv, cli := handshakeKeys(b)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	toTLS := func(s *x509svid.SVID) tls.Certificate {
		return tls.Certificate{Certificate: [][]byte{s.Certificates[0].Raw}, PrivateKey: s.PrivateKey, Leaf: s.Certificates[0]}
	}
	s := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{toTLS(srv)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, SessionTicketsDisabled: true,
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{toTLS(cli)}, RootCAs: pool, ServerName: "server.test"}
	runHandshakes(b, s, c)
}

// BenchmarkVerify is the X.509-SVID verification of one peer chain.
func BenchmarkVerify(b *testing.B) {
	ca, _, cli := handshakeKeys(b)
	src := newSwapSource(cli, ca.bundle())
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(cli.Certificates, src, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPolicy is the per-request authorization check: a policy of
// five rules, an allowed and a denied request.
func BenchmarkPolicy(b *testing.B) {
	p, err := NewPolicy(
		Rule{Peers: []string{"spiffe://example.org/web"}, Methods: []string{"GET", "HEAD"}, Paths: []string{"/orders"}},
		Rule{Peers: []string{"spiffe://example.org/ns/prod/*"}, Methods: []string{"POST"}, Paths: []string{"/orders"}},
		Rule{Peers: []string{"spiffe://partner.org"}, Paths: []string{"/public"}},
		Rule{Peers: []string{"*"}, Paths: []string{"/weft.demo.v1.Demo"}},
		Rule{Deny: true, Paths: []string{"/orders/admin"}},
	)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	peer := spiffeid.RequireFromString("spiffe://example.org/ns/prod/api")
	for _, bc := range []struct {
		name string
		r    Request
	}{
		{"allow", Request{Peer: peer, Method: "POST", Path: "/orders/42"}},
		{"deny", Request{Peer: peer, Method: "POST", Path: "/orders/admin/x"}},
		{"default-deny", Request{Peer: peer, Method: "DELETE", Path: "/users"}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = p.AuthorizeRequest(ctx, bc.r)
			}
		})
	}
}
