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

// devRootTTL is the lifetime of a DevCA root.
const devRootTTL = 365 * 24 * time.Hour

// ErrWrongTrustDomain reports an ID outside the trust domain a CA or
// source serves.
var ErrWrongTrustDomain = errors.New("tlsid: wrong trust domain")

// DevCA is an in-process certificate authority for one trust domain. It
// issues X.509-SVIDs with no outside service, for development, tests and
// the quickstart, and can rotate its root ([DevCA.RotateRoot]). Its keys
// live in memory only.
//
// The zero value is not usable; build one with [NewDevCA]. A DevCA is
// safe for concurrent use.
type DevCA struct {
	td  spiffeid.TrustDomain
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex // serialises rotations and the end of overlaps
	state   atomic.Pointer[caState]
	changes notifier
}

// caState is one immutable generation of the CA's keys and bundle.
type caState struct {
	root   *x509.Certificate // signs new SVIDs
	key    *ecdsa.PrivateKey
	bundle *x509bundle.Bundle // root, plus the previous root until overlapEnd
	// previous root, trusted until overlapEnd; nil outside an overlap.
	previous   *x509.Certificate
	overlapEnd time.Time
}

// NewDevCA creates a CA for trustDomain (such as "example.org") with a
// fresh P-256 root key. It reads [WithSVIDTTL] and [WithClock].
func NewDevCA(trustDomain string, opts ...DevCAOption) (*DevCA, error) {
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("tlsid: dev CA: %w: %v", ErrBadID, err)
	}
	if len(td.Name()) > MaxTrustDomainLength {
		return nil, fmt.Errorf("tlsid: dev CA: %w", ErrIDTooLong)
	}
	ca := &DevCA{td: td, ttl: DefaultSVIDTTL, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o.applyDevCA(ca)
		}
	}
	root, key, err := ca.newRoot()
	if err != nil {
		return nil, err
	}
	ca.state.Store(&caState{root: root, key: key, bundle: x509bundle.FromX509Authorities(td, []*x509.Certificate{root})})
	return ca, nil
}

func (ca *DevCA) newRoot() (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsid: dev CA: %w", err)
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{"weft development CA"}, CommonName: ca.td.String()},
		URIs:                  []*url.URL{ca.td.ID().URL()},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(devRootTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsid: dev CA: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsid: dev CA: %w", err)
	}
	return root, key, nil
}

// RotateRoot replaces the CA's root with a fresh key. From the call on,
// new SVIDs are signed by the new root, and every [DevSource] renews its
// SVID on its next use; the bundle holds both roots until overlap has
// passed (on the CA's clock), so SVIDs signed by the old root stay valid
// meanwhile, and then the old root only. overlap ≤ 0 drops the old root
// at once. A rotation during an overlap ends that overlap.
func (ca *DevCA) RotateRoot(overlap time.Duration) error {
	root, key, err := ca.newRoot()
	if err != nil {
		return err
	}
	ca.mu.Lock()
	old := ca.state.Load()
	next := &caState{root: root, key: key}
	if overlap > 0 {
		next.previous = old.root
		next.overlapEnd = ca.now().Add(overlap)
		next.bundle = x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{root, old.root})
	} else {
		next.bundle = x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{root})
	}
	ca.state.Store(next)
	ca.mu.Unlock()
	ca.changes.notify()
	return nil
}

// current returns the CA's state, ending an overlap whose time is up.
func (ca *DevCA) current() *caState {
	st := ca.state.Load()
	if st.previous == nil || ca.now().Before(st.overlapEnd) {
		return st
	}
	ca.mu.Lock()
	st = ca.state.Load()
	ended := false
	if st.previous != nil && !ca.now().Before(st.overlapEnd) {
		st = &caState{root: st.root, key: st.key, bundle: x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{st.root})}
		ca.state.Store(st)
		ended = true
	}
	ca.mu.Unlock()
	if ended {
		ca.changes.notify()
	}
	return st
}

// TrustDomain returns the CA's trust domain.
func (ca *DevCA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Bundle returns the CA's current trust bundle: the roots peers are
// verified against (two during a rotation's overlap).
func (ca *DevCA) Bundle() *x509bundle.Bundle { return ca.current().bundle }

// GetX509BundleForTrustDomain implements [x509bundle.Source]: the CA's
// bundle for its own trust domain, an error wrapping [ErrNoBundle] for any
// other.
func (ca *DevCA) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != ca.td {
		return nil, fmt.Errorf("%w %s: dev CA serves %s", ErrNoBundle, td, ca.td)
	}
	return ca.current().bundle, nil
}

// Changed returns a channel closed at the CA's next change: a root
// rotation, the end of an overlap, or the renewal of an SVID of one of
// its sources.
func (ca *DevCA) Changed() <-chan struct{} { return ca.changes.changed() }

// Issue signs a new SVID for id, valid from now for the CA's SVID TTL.
// id must belong to the CA's trust domain (else [ErrWrongTrustDomain]) and
// name a workload (else [ErrRootPathID]).
func (ca *DevCA) Issue(id spiffeid.ID) (*x509svid.SVID, error) {
	svid, _, err := ca.issue(id)
	return svid, err
}

func (ca *DevCA) issue(id spiffeid.ID) (*x509svid.SVID, *caState, error) {
	if err := CheckWorkloadID(id); err != nil {
		return nil, nil, fmt.Errorf("tlsid: dev CA: issue: %w", err)
	}
	if !id.MemberOf(ca.td) {
		return nil, nil, fmt.Errorf("tlsid: dev CA: issue %s: %w: the CA serves %s", id, ErrWrongTrustDomain, ca.td)
	}
	st := ca.current()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsid: dev CA: issue: %w", err)
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
	der, err := x509.CreateCertificate(rand.Reader, tmpl, st.root, &key.PublicKey, st.key)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsid: dev CA: issue: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("tlsid: dev CA: issue: %w", err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}, st, nil
}

// Source returns a [Source] that serves an SVID for id, issued at once,
// renewed at a random point between 50% and 90% of its lifetime and
// after every root rotation. Its bundles are the CA's.
//
// Renewal is lazy: the source runs no goroutine, and the handshake that
// finds the SVID due (on the CA's clock) renews it before presenting it.
// So there is nothing to stop, time is fully under [WithClock], and an
// SVID is never presented past its renewal point; an idle source just
// renews on its next use.
func (ca *DevCA) Source(id spiffeid.ID) (*DevSource, error) {
	svid, st, err := ca.issue(id)
	if err != nil {
		return nil, err
	}
	s := &DevSource{ca: ca, id: id}
	s.install(svid, st)
	return s, nil
}

// DevSource is the [Source] a [DevCA] gives to one workload. The zero
// value is not usable; get one from [DevCA.Source]. It is safe for
// concurrent use.
type DevSource struct {
	ca *DevCA
	id spiffeid.ID

	mu      sync.Mutex // serialises renewals
	current atomic.Pointer[issued]
	renewed atomic.Uint64
}

type issued struct {
	svid    *x509svid.SVID
	signer  *caState
	renewAt time.Time
}

func (s *DevSource) install(svid *x509svid.SVID, st *caState) {
	leaf := svid.Certificates[0]
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	frac := 0.5 + 0.4*mrand.Float64()
	s.current.Store(&issued{svid: svid, signer: st, renewAt: leaf.NotBefore.Add(time.Duration(float64(life) * frac))})
}

func (s *DevSource) fresh(cur *issued) bool {
	return s.ca.now().Before(cur.renewAt) && cur.signer.root == s.ca.current().root
}

// GetX509SVID implements [x509svid.Source], renewing the SVID first when
// it is due or signed by a root that has been rotated out of signing.
// When a renewal fails, the current SVID is served while still valid.
func (s *DevSource) GetX509SVID() (*x509svid.SVID, error) {
	cur := s.current.Load()
	if s.fresh(cur) {
		return cur.svid, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur = s.current.Load(); s.fresh(cur) {
		return cur.svid, nil
	}
	svid, st, err := s.ca.issue(s.id)
	if err != nil {
		if s.ca.now().Before(cur.svid.Certificates[0].NotAfter) {
			return cur.svid, nil
		}
		return nil, err
	}
	s.install(svid, st)
	s.renewed.Add(1)
	s.ca.changes.notify()
	return svid, nil
}

// GetX509BundleForTrustDomain implements [x509bundle.Source] with the
// CA's bundle.
func (s *DevSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.ca.GetX509BundleForTrustDomain(td)
}

// Changed implements [Source]: it is the CA's [DevCA.Changed].
func (s *DevSource) Changed() <-chan struct{} { return s.ca.Changed() }

// ID returns the workload ID the source serves.
func (s *DevSource) ID() spiffeid.ID { return s.id }

// Renewals returns how many times the source has renewed its SVID.
func (s *DevSource) Renewals() uint64 { return s.renewed.Load() }

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil || n.Sign() == 0 {
		return big.NewInt(1 + mrand.Int64N(1<<62))
	}
	return n
}
