package tlsid

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/internal/leaktest"
)

// swapSource is a Source whose SVID and bundle a test replaces; the
// certificates in it are real.
type swapSource struct {
	svid    atomic.Pointer[x509svid.SVID]
	bundles atomic.Pointer[x509bundle.Set]
	changes notifier
}

func newSwapSource(svid *x509svid.SVID, bundles ...*x509bundle.Bundle) *swapSource {
	s := &swapSource{}
	s.svid.Store(svid)
	s.bundles.Store(x509bundle.NewSet(bundles...))
	return s
}

func (s *swapSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid.Load(), nil }
func (s *swapSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundles.Load().GetX509BundleForTrustDomain(td)
}
func (s *swapSource) Changed() <-chan struct{} { return s.changes.changed() }
func (s *swapSource) setBundles(b ...*x509bundle.Bundle) {
	s.bundles.Store(x509bundle.NewSet(b...))
	s.changes.notify()
}

type handshakeResult struct {
	server, client       tls.ConnectionState
	serverErr, clientErr error
	got                  string // what the client read
}

// dial runs one connection over loopback TCP: a full or resumed handshake,
// the server writing "hello" (which also delivers session tickets) and the
// client reading it.
func dial(t *testing.T, server, client *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var res handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			res.serverErr = err
			return
		}
		res.server = tc.ConnectionState()
		_, _ = tc.Write([]byte("hello"))
		_, _ = io.Copy(io.Discard, tc) // until the client closes
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	if err := tc.Handshake(); err != nil {
		res.clientErr = err
	} else {
		buf := make([]byte, 5)
		if _, err := io.ReadFull(tc, buf); err != nil {
			res.clientErr = err
		} else {
			res.got = string(buf)
			res.client = tc.ConnectionState()
		}
	}
	tc.Close()
	<-done
	return res
}

func devPair(t *testing.T, opts ...DevCAOption) (*DevCA, *DevSource, *DevSource) {
	t.Helper()
	ca, err := NewDevCA("example.org", opts...)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/server"))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/client"))
	if err != nil {
		t.Fatal(err)
	}
	return ca, srv, cli
}

func configs(t *testing.T, srv, cli Source, sa, ca Authorizer, opts ...ConfigOption) (*tls.Config, *tls.Config) {
	t.Helper()
	s, err := ServerConfig(srv, sa, opts...)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ClientConfig(cli, ca, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func TestMutualTLS(t *testing.T) {
	leaktest.Check(t)
	_, srv, cli := devPair(t)
	s, c := configs(t, srv, cli, AuthorizeID(cli.ID()), AuthorizeID(srv.ID()))
	res := dial(t, s, c)
	if res.serverErr != nil || res.clientErr != nil {
		t.Fatalf("handshake: server %v, client %v", res.serverErr, res.clientErr)
	}
	if res.server.Version != tls.VersionTLS13 {
		t.Errorf("version %x, want TLS 1.3", res.server.Version)
	}
	if id, err := PeerID(&res.server); err != nil || id != cli.ID() {
		t.Errorf("server sees peer %v (%v), want %v", id, err, cli.ID())
	}
	if id, err := PeerID(&res.client); err != nil || id != srv.ID() {
		t.Errorf("client sees peer %v (%v), want %v", id, err, srv.ID())
	}
}

func TestMinVersionTLS13(t *testing.T) {
	leaktest.Check(t)
	_, srv, cli := devPair(t)
	s, c := configs(t, srv, cli, AuthorizeAny(), AuthorizeAny())
	c.MaxVersion = tls.VersionTLS12
	res := dial(t, s, c)
	if res.serverErr == nil || res.clientErr == nil {
		t.Fatalf("a TLS 1.2 client was accepted: server %v, client %v", res.serverErr, res.clientErr)
	}
}

func TestClientWithoutCertificate(t *testing.T) {
	leaktest.Check(t)
	_, srv, cli := devPair(t)
	s, c := configs(t, srv, cli, AuthorizeAny(), AuthorizeAny())
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	res := dial(t, s, c)
	if !errors.Is(res.serverErr, ErrNoPeerID) {
		t.Fatalf("server error %v, want ErrNoPeerID", res.serverErr)
	}
	if res.clientErr == nil {
		t.Fatal("client read data from a server that refused it")
	}
}

func TestHandshakeAuthorizer(t *testing.T) {
	leaktest.Check(t)
	_, srv, cli := devPair(t)
	other := spiffeid.RequireFromString("spiffe://example.org/other")
	t.Run("server refuses client", func(t *testing.T) {
		s, c := configs(t, srv, cli, AuthorizeID(other), AuthorizeAny())
		res := dial(t, s, c)
		if !errors.Is(res.serverErr, ErrUnauthorized) || res.clientErr == nil {
			t.Fatalf("server %v, client %v; want ErrUnauthorized and a failed client", res.serverErr, res.clientErr)
		}
	})
	t.Run("client refuses server", func(t *testing.T) {
		s, c := configs(t, srv, cli, AuthorizeAny(), AuthorizeOneOf(other, cli.ID()))
		res := dial(t, s, c)
		if !errors.Is(res.clientErr, ErrUnauthorized) {
			t.Fatalf("client %v, want ErrUnauthorized", res.clientErr)
		}
	})
	t.Run("nil authorizer refuses all", func(t *testing.T) {
		s, c := configs(t, srv, cli, nil, AuthorizeAny())
		if res := dial(t, s, c); !errors.Is(res.serverErr, ErrUnauthorized) {
			t.Fatalf("server %v, want ErrUnauthorized", res.serverErr)
		}
	})
	t.Run("other trust domain refused", func(t *testing.T) {
		evil := newTestCA(t, "example.org.evil", nil)
		esrc := newSwapSource(evil.svid(t, "spiffe://example.org.evil/client"), evil.bundle(), srv.ca.Bundle())
		// The server trusts both domains but admits only example.org.
		ssrc := newSwapSource(mustSVID(t, srv), srv.ca.Bundle(), evil.bundle())
		s, c := configs(t, ssrc, esrc, AuthorizeMemberOf(srv.ca.TrustDomain()), AuthorizeAny())
		if res := dial(t, s, c); !errors.Is(res.serverErr, ErrUnauthorized) {
			t.Fatalf("server %v, want ErrUnauthorized", res.serverErr)
		}
	})
}

func mustSVID(t *testing.T, s Source) *x509svid.SVID {
	t.Helper()
	v, err := s.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestResumptionAfterBundleChange checks that a session resumed after the
// server's bundle changed is verified against the new bundle: the client's
// certificate, stored in the session ticket, no longer chains to it, so
// the resumption is refused (the pitfall of CVE-2025-68121).
func TestResumptionAfterBundleChange(t *testing.T) {
	leaktest.Check(t)
	ca1 := newTestCA(t, "example.org", nil)
	ca2 := newTestCA(t, "example.org", nil)
	ssrc := newSwapSource(ca1.svid(t, "spiffe://example.org/server"), ca1.bundle())
	csrc := newSwapSource(ca1.svid(t, "spiffe://example.org/client"), ca1.bundle())
	s, c := configs(t, ssrc, csrc, AuthorizeAny(), AuthorizeAny())
	c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	c.ServerName = "server.test" // the session cache key; each dial has a new port

	first := dial(t, s, c)
	if first.serverErr != nil || first.clientErr != nil || first.got != "hello" {
		t.Fatalf("first connection: server %v, client %v", first.serverErr, first.clientErr)
	}
	second := dial(t, s, c)
	if second.serverErr != nil || second.clientErr != nil {
		t.Fatalf("second connection: server %v, client %v", second.serverErr, second.clientErr)
	}
	if !second.server.DidResume {
		t.Fatal("second connection did not resume: the test would prove nothing")
	}
	// The server's bundle changes: ca1 is no longer trusted. The server
	// keeps its own certificate (the client still trusts ca1).
	ssrc.setBundles(ca2.bundle())
	third := dial(t, s, c)
	if !errors.Is(third.serverErr, ErrUntrusted) {
		t.Fatalf("resumption after bundle change: server error %v, want ErrUntrusted", third.serverErr)
	}
	if third.got == "hello" {
		t.Fatal("the client got data over a session the server should have refused")
	}
}

// TestBundleChangeForcesFullHandshake checks that session tickets are
// tied to the bundle: after a change that still trusts the client, the
// next connection makes a full handshake instead of resuming.
func TestBundleChangeForcesFullHandshake(t *testing.T) {
	leaktest.Check(t)
	ca1 := newTestCA(t, "example.org", nil)
	ca2 := newTestCA(t, "example.org", nil)
	ssrc := newSwapSource(ca1.svid(t, "spiffe://example.org/server"), ca1.bundle())
	csrc := newSwapSource(ca1.svid(t, "spiffe://example.org/client"), ca1.bundle())
	s, c := configs(t, ssrc, csrc, AuthorizeAny(), AuthorizeAny())
	c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	c.ServerName = "server.test"
	dial(t, s, c)
	if r := dial(t, s, c); r.serverErr != nil || !r.server.DidResume {
		t.Fatalf("no resumption before the change (%v): the test would prove nothing", r.serverErr)
	}
	ssrc.setBundles(x509bundle.FromX509Authorities(ca1.td, []*x509.Certificate{ca1.cert, ca2.cert}))
	r := dial(t, s, c)
	if r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("after the change: server %v, client %v", r.serverErr, r.clientErr)
	}
	if r.server.DidResume {
		t.Fatal("a session from the old bundle was resumed")
	}
	if r := dial(t, s, c); !r.server.DidResume {
		t.Fatal("no resumption under the new bundle")
	}
}

// TestResumedSessionReauthorized checks that the authorizer runs again on
// a resumed session, so a peer refused since its first connection cannot
// resume its way back in.
func TestResumedSessionReauthorized(t *testing.T) {
	leaktest.Check(t)
	ca := newTestCA(t, "example.org", nil)
	ssrc := newSwapSource(ca.svid(t, "spiffe://example.org/server"), ca.bundle())
	csrc := newSwapSource(ca.svid(t, "spiffe://example.org/client"), ca.bundle())
	var allow atomic.Bool
	var calls atomic.Int64
	allow.Store(true)
	authz := func(id spiffeid.ID) error {
		calls.Add(1)
		if allow.Load() {
			return nil
		}
		return fmt.Errorf("%w: revoked", ErrUnauthorized)
	}
	s, c := configs(t, ssrc, csrc, authz, AuthorizeAny())
	c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	c.ServerName = "server.test"
	dial(t, s, c)
	before := calls.Load()
	if r := dial(t, s, c); r.serverErr != nil || !r.server.DidResume || calls.Load() != before+1 {
		t.Fatalf("resumed: %v, authorizer calls %d → %d", r.serverErr, before, calls.Load())
	}
	allow.Store(false)
	if r := dial(t, s, c); !errors.Is(r.serverErr, ErrUnauthorized) {
		t.Fatalf("after revocation: %v, want ErrUnauthorized", r.serverErr)
	}
}

// TestClientResumptionAfterBundleChange is the client side: a client
// whose bundle changed refuses to resume a session with a server whose
// certificate no longer chains to it.
func TestClientResumptionAfterBundleChange(t *testing.T) {
	leaktest.Check(t)
	ca1 := newTestCA(t, "example.org", nil)
	ca2 := newTestCA(t, "example.org", nil)
	ssrc := newSwapSource(ca1.svid(t, "spiffe://example.org/server"), ca1.bundle())
	csrc := newSwapSource(ca1.svid(t, "spiffe://example.org/client"), ca1.bundle())
	s, c := configs(t, ssrc, csrc, AuthorizeAny(), AuthorizeAny())
	c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	c.ServerName = "server.test"
	if r := dial(t, s, c); r.clientErr != nil {
		t.Fatal(r.clientErr)
	}
	if r := dial(t, s, c); r.clientErr != nil || !r.client.DidResume {
		t.Fatalf("no resumption before the change (%v): the test would prove nothing", r.clientErr)
	}
	csrc.setBundles(ca2.bundle())
	if r := dial(t, s, c); !errors.Is(r.clientErr, ErrUntrusted) {
		t.Fatalf("client resumption after its bundle changed: %v, want ErrUntrusted", r.clientErr)
	}
}

// TestRotationNextHandshake checks that a renewed SVID is presented from
// the next handshake on.
func TestRotationNextHandshake(t *testing.T) {
	leaktest.Check(t)
	clock := newFakeClock()
	_, srv, cli := devPair(t, WithClock(clock.Now))
	s, c := configs(t, srv, cli, AuthorizeAny(), AuthorizeAny(), WithClock(clock.Now))
	first := dial(t, s, c)
	if first.clientErr != nil {
		t.Fatal(first.clientErr)
	}
	clock.Advance(55 * time.Minute) // past 90% of the 1 h TTL
	second := dial(t, s, c)
	if second.clientErr != nil || second.serverErr != nil {
		t.Fatalf("after renewal: server %v, client %v", second.serverErr, second.clientErr)
	}
	a, b := first.client.PeerCertificates[0], second.client.PeerCertificates[0]
	if a.SerialNumber.Cmp(b.SerialNumber) == 0 {
		t.Fatal("the server presented the same certificate after its renewal point")
	}
	if srv.Renewals() != 1 || cli.Renewals() != 1 {
		t.Fatalf("renewals: server %d, client %d, want 1 each", srv.Renewals(), cli.Renewals())
	}
}

// TestResumptionBypassesVerifyPeerCertificate is the control for
// TestResumptionAfterBundleChange: a config that verifies in
// VerifyPeerCertificate (go-spiffe's tlsconfig hooks) accepts the same
// resumption, because crypto/tls does not call that hook on resumed
// sessions. It is why weft verifies in VerifyConnection.
func TestResumptionBypassesVerifyPeerCertificate(t *testing.T) {
	leaktest.Check(t)
	ca1 := newTestCA(t, "example.org", nil)
	ca2 := newTestCA(t, "example.org", nil)
	ssrc := newSwapSource(ca1.svid(t, "spiffe://example.org/server"), ca1.bundle())
	csrc := newSwapSource(ca1.svid(t, "spiffe://example.org/client"), ca1.bundle())
	s := tlsconfig.MTLSServerConfig(ssrc, ssrc, tlsconfig.AuthorizeAny())
	_, c := configs(t, ssrc, csrc, AuthorizeAny(), AuthorizeAny())
	c.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	c.ServerName = "server.test"
	if r := dial(t, s, c); r.serverErr != nil || r.clientErr != nil {
		t.Fatalf("first connection: %v %v", r.serverErr, r.clientErr)
	}
	ssrc.setBundles(ca2.bundle())
	r := dial(t, s, c)
	if r.serverErr != nil || !r.server.DidResume {
		t.Fatalf("crypto/tls now refuses this resumption itself (%v): update the docs of ServerConfig", r.serverErr)
	}
	t.Logf("VerifyPeerCertificate-only config resumed a session whose client chain no longer verifies")
}
