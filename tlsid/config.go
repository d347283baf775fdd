package tlsid

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	// ErrNoPeerID is returned by [PeerID] when the connection carries no
	// verified peer SVID, and by handshakes whose peer sent no certificate.
	ErrNoPeerID = errors.New("tlsid: no peer SPIFFE ID")

	// ErrRootPathID reports an ID with no path where a workload ID is
	// required: such an ID names a trust domain, not a workload, and weft
	// refuses it as a peer identity (go-spiffe's verification accepts it).
	ErrRootPathID = errors.New("tlsid: ID has no path")

	// ErrNoSVID reports a source that has no SVID to present.
	ErrNoSVID = errors.New("tlsid: no SVID")

	// ErrNilSource reports a nil [Source] given to a config builder.
	ErrNilSource = errors.New("tlsid: nil source")
)

// ServerConfig returns a TLS 1.3 server configuration that presents the
// current SVID of src, requires a client certificate, verifies it as an
// X.509-SVID (see [Verify]) against src's bundles and admits only clients
// that authorize allows. A nil authorize refuses every client: say
// [AuthorizeAny] to admit all.
//
// The SVID is read through GetCertificate and the peer verified in
// VerifyConnection on every handshake, resumed ones included, so a new
// SVID is presented from the next handshake on and a session resumed
// after a bundle change is verified against the new bundle. Beyond that,
// session tickets are tied to the bundle they were issued under: after a
// bundle change the server ignores older tickets, so the client makes a
// full handshake with its current SVID rather than failing.
//
// A client that sends no certificate fails the handshake with
// [ErrNoPeerID]. The only options read are [WithClock].
func ServerConfig(src Source, authorize Authorizer, opts ...ConfigOption) (*tls.Config, error) {
	if src == nil {
		return nil, fmt.Errorf("tlsid: server config: %w", ErrNilSource)
	}
	p := newPeerVerifier(src, authorize, opts)
	cfg := &tls.Config{
		MinVersion:       tls.VersionTLS13,
		ClientAuth:       tls.RequestClientCert, // verified in VerifyConnection
		GetCertificate:   func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.certificate() },
		VerifyConnection: p.verifyConnection,
		Time:             p.now,
	}
	// Session tickets carry the fingerprint of the bundle the client was
	// verified against; a ticket from another bundle is ignored, so the
	// client falls back to a full handshake (and presents its current
	// SVID) instead of failing. The ticket keys are those of cfg itself,
	// so the callbacks work on clones (net/http clones the config).
	cfg.WrapSession = func(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
		if len(cs.PeerCertificates) > 0 {
			if id, err := peerIDFromCert(cs.PeerCertificates[0]); err == nil {
				ss.Extra = append(ss.Extra, p.bundleTag(id.TrustDomain()))
			}
		}
		return cfg.EncryptTicket(cs, ss)
	}
	cfg.UnwrapSession = func(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
		ss, err := cfg.DecryptTicket(identity, cs)
		if err != nil || ss == nil || len(ss.Extra) == 0 {
			return nil, err
		}
		tag := ss.Extra[len(ss.Extra)-1]
		name, _, ok := bytes.Cut(tag, []byte{0})
		if !ok {
			return nil, nil
		}
		td, err := spiffeid.TrustDomainFromString(string(name))
		if err != nil || !bytes.Equal(tag, p.bundleTag(td)) {
			return nil, nil // another bundle: full handshake
		}
		return ss, nil
	}
	return cfg, nil
}

// bundleTag names the current bundle of td: the trust domain, a zero
// byte and the SHA-256 of its roots. Sessions are tied to it.
func (p *peerVerifier) bundleTag(td spiffeid.TrustDomain) []byte {
	tag := append([]byte(td.Name()), 0)
	b, err := p.src.GetX509BundleForTrustDomain(td)
	if err != nil || b == nil {
		return tag
	}
	h := sha256.New()
	for _, c := range b.X509Authorities() {
		h.Write(c.Raw)
	}
	return h.Sum(tag)
}

// ClientConfig returns a TLS 1.3 client configuration that presents the
// current SVID of src and accepts only a server whose X.509-SVID verifies
// against src's bundles (see [Verify]) and whose ID authorize allows. A
// nil authorize refuses every server.
//
// Host names are not checked: the server's identity is its SPIFFE ID.
// As with [ServerConfig], the SVID is read and the peer verified on every
// handshake, resumed ones included.
//
// The config has no ClientSessionCache, so the client does not resume
// sessions. If you set one, know that crypto/tls skips its own freshness
// check of a cached server certificate when it does not verify chains
// itself: a session outliving the server's SVID, or one from before a
// bundle change, is then refused by the verification (the handshake
// fails) rather than replaced by a full handshake.
func ClientConfig(src Source, authorize Authorizer, opts ...ConfigOption) (*tls.Config, error) {
	if src == nil {
		return nil, fmt.Errorf("tlsid: client config: %w", ErrNilSource)
	}
	p := newPeerVerifier(src, authorize, opts)
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The standard verification would check host names against a
		// public-PKI view of the chain; the SPIFFE verification replaces
		// it, in VerifyConnection, which also runs on resumption.
		InsecureSkipVerify:   true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return p.certificate() },
		VerifyConnection:     p.verifyConnection,
		Time:                 p.now,
	}, nil
}

// peerVerifier is the state behind one tls.Config: the source, the
// authorizer and the last SVID converted to a tls.Certificate.
type peerVerifier struct {
	src       Source
	authorize Authorizer
	now       func() time.Time
	cert      atomic.Pointer[certEntry]
}

type certEntry struct {
	svid *x509svid.SVID
	cert *tls.Certificate
}

func newPeerVerifier(src Source, authorize Authorizer, opts []ConfigOption) *peerVerifier {
	o := configOptions{now: time.Now}
	for _, opt := range opts {
		if opt != nil {
			opt.applyConfig(&o)
		}
	}
	return &peerVerifier{src: src, authorize: authorize, now: o.now}
}

// certificate returns the source's current SVID as a tls.Certificate,
// converting it only when the source hands out a new SVID.
func (p *peerVerifier) certificate() (*tls.Certificate, error) {
	svid, err := p.src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("tlsid: get SVID: %w", err)
	}
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return nil, fmt.Errorf("tlsid: get SVID: %w", ErrNoSVID)
	}
	if e := p.cert.Load(); e != nil && e.svid == svid {
		return e.cert, nil
	}
	c := &tls.Certificate{
		Certificate: make([][]byte, len(svid.Certificates)),
		PrivateKey:  svid.PrivateKey,
		Leaf:        svid.Certificates[0],
	}
	for i, x := range svid.Certificates {
		c.Certificate[i] = x.Raw
	}
	p.cert.Store(&certEntry{svid: svid, cert: c})
	return c, nil
}

func (p *peerVerifier) verifyConnection(cs tls.ConnectionState) error {
	id, err := Verify(cs.PeerCertificates, p.src, p.now())
	if err != nil {
		return err
	}
	if p.authorize == nil {
		return fmt.Errorf("%w: no authorizer configured", ErrUnauthorized)
	}
	return p.authorize(id)
}

// PeerID returns the SPIFFE ID of the peer of a TLS connection whose
// handshake verified it (a connection made with [ServerConfig] or
// [ClientConfig]). It re-reads the ID from the leaf without verifying the
// chain again. It fails with [ErrNoPeerID] when there is no peer
// certificate or its ID is not a valid workload ID.
func PeerID(state *tls.ConnectionState) (spiffeid.ID, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoPeerID
	}
	id, err := peerIDFromCert(state.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %w", ErrNoPeerID, err)
	}
	return id, nil
}

func peerIDFromCert(c *x509.Certificate) (spiffeid.ID, error) {
	if c == nil {
		return spiffeid.ID{}, ErrBadSVID
	}
	return leafID(c)
}
