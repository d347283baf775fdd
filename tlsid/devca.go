package tlsid

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultSVIDTTL is the lifetime of SVIDs a [DevCA] issues unless
// [WithSVIDTTL] says otherwise.
const DefaultSVIDTTL = time.Hour

// DevCA is an in-process certificate authority for one trust domain. It
// issues X.509-SVIDs with no outside service, for development, tests and
// the quickstart. Its root key lives in memory only.
//
// A DevCA is safe for concurrent use.
type DevCA struct {
	td    spiffeid.TrustDomain
	ttl   time.Duration
	now   func() time.Time
	root  *x509.Certificate
	key   *ecdsa.PrivateKey
	roots *x509bundle.Bundle
}

// DevCAOption configures a [DevCA].
type DevCAOption interface{ apply(*DevCA) }

type devCAOptionFunc func(*DevCA)

func (f devCAOptionFunc) apply(ca *DevCA) { f(ca) }

// WithSVIDTTL sets the lifetime of issued SVIDs. Values ≤ 0 are ignored.
func WithSVIDTTL(ttl time.Duration) DevCAOption {
	return devCAOptionFunc(func(ca *DevCA) {
		if ttl > 0 {
			ca.ttl = ttl
		}
	})
}

// WithClock sets the clock the CA reads to date certificates and decide
// renewals. A nil clock is ignored.
func WithClock(now func() time.Time) DevCAOption {
	return devCAOptionFunc(func(ca *DevCA) {
		if now != nil {
			ca.now = now
		}
	})
}

// NewDevCA creates a CA for trustDomain (such as "example.org") with a
// fresh P-256 root key.
func NewDevCA(trustDomain string, opts ...DevCAOption) (*DevCA, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("tlsid: dev CA: %w", err)
	}
	ca := &DevCA{td: td, ttl: DefaultSVIDTTL, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o.apply(ca)
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsid: dev CA: %w", err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"weft development CA"}, CommonName: td.String()},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("tlsid: dev CA: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsid: dev CA: %w", err)
	}
	ca.root, ca.key = root, key
	ca.roots = x509bundle.FromX509Authorities(td, []*x509.Certificate{root})
	return ca, nil
}

// TrustDomain returns the CA's trust domain.
func (ca *DevCA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Bundle returns the CA's trust bundle: the roots peers are verified
// against.
func (ca *DevCA) Bundle() *x509bundle.Bundle { return ca.roots }

// GetX509BundleForTrustDomain implements [x509bundle.Source]: the CA's
// bundle for its own trust domain, an error for any other.
func (ca *DevCA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != ca.td {
		return nil, fmt.Errorf("tlsid: dev CA: no bundle for trust domain %q", td)
	}
	return ca.roots, nil
}

// Issue signs a new SVID for id, valid from now for the CA's SVID TTL.
// id must belong to the CA's trust domain and name a workload (a non-root
// path).
func (ca *DevCA) Issue(id spiffeid.ID) (*x509svid.SVID, error) {
	if id.IsZero() {
		return nil, errors.New("tlsid: dev CA: issue: zero ID")
	}
	if !id.MemberOf(ca.td) {
		return nil, fmt.Errorf("tlsid: dev CA: issue %s: not in trust domain %s", id, ca.td)
	}
	if id.Path() == "" {
		return nil, fmt.Errorf("tlsid: dev CA: issue %s: %w", id, ErrRootPathID)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tlsid: dev CA: issue: %w", err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"weft"}},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(ca.ttl),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.root, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("tlsid: dev CA: issue: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("tlsid: dev CA: issue: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}, nil
}

// Source returns a [Source] that serves an SVID for id, issued at once,
// and renews it at a random point between 50% and 90% of its lifetime. The
// renewal happens on the handshake that finds the SVID due, so the source
// runs no goroutine. Its bundles are the CA's.
func (ca *DevCA) Source(id spiffeid.ID) (*DevSource, error) {
	svid, err := ca.Issue(id)
	if err != nil {
		return nil, err
	}
	s := &DevSource{ca: ca, id: id}
	s.install(svid)
	return s, nil
}

// DevSource is the [Source] a [DevCA] gives to one workload. It is safe
// for concurrent use.
type DevSource struct {
	ca *DevCA
	id spiffeid.ID

	mu      sync.Mutex // serialises renewals
	current atomic.Pointer[issued]
}

type issued struct {
	svid    *x509svid.SVID
	renewAt time.Time
}

func (s *DevSource) install(svid *x509svid.SVID) {
	leaf := svid.Certificates[0]
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	frac := 0.5 + 0.4*mrand.Float64()
	s.current.Store(&issued{svid: svid, renewAt: leaf.NotBefore.Add(time.Duration(float64(life) * frac))})
}

// GetX509SVID implements [x509svid.Source], renewing the SVID first when
// it is due.
func (s *DevSource) GetX509SVID() (*x509svid.SVID, error) {
	cur := s.current.Load()
	if s.ca.now().Before(cur.renewAt) {
		return cur.svid, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur = s.current.Load(); s.ca.now().Before(cur.renewAt) {
		return cur.svid, nil
	}
	svid, err := s.ca.Issue(s.id)
	if err != nil {
		// Keep serving the current SVID while it is still valid.
		if s.ca.now().Before(cur.svid.Certificates[0].NotAfter) {
			return cur.svid, nil
		}
		return nil, err
	}
	s.install(svid)
	return svid, nil
}

// GetX509BundleForTrustDomain implements [x509bundle.Source] with the
// CA's bundle.
func (s *DevSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.ca.GetX509BundleForTrustDomain(td)
}

// ID returns the workload ID the source serves.
func (s *DevSource) ID() spiffeid.ID { return s.id }

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil || n.Sign() == 0 {
		return big.NewInt(1 + mrand.Int64N(1<<62))
	}
	return n
}
