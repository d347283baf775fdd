package tlsid

import (
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source serves this process's current X.509-SVID and the trust bundles
// against which peers are verified. Both methods are called on every TLS
// handshake, from many goroutines at once, and must be cheap.
type Source interface {
	x509svid.Source
	x509bundle.Source
}

// StaticSource is a [Source] with one fixed SVID and fixed bundles.
type StaticSource struct {
	svid    *x509svid.SVID
	bundles x509bundle.Source
}

// NewStaticSource returns a source that always serves svid and verifies
// peers against bundles.
func NewStaticSource(svid *x509svid.SVID, bundles x509bundle.Source) *StaticSource {
	return &StaticSource{svid: svid, bundles: bundles}
}

// GetX509SVID implements [x509svid.Source].
func (s *StaticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

// GetX509BundleForTrustDomain implements [x509bundle.Source].
func (s *StaticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundles.GetX509BundleForTrustDomain(td)
}
