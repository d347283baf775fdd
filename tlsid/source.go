package tlsid

import (
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Source serves this process's current X.509-SVID and the trust bundles
// against which peers are verified, and says when either changes.
//
// GetX509SVID and GetX509BundleForTrustDomain are called on every TLS
// handshake, from many goroutines at once, and must be cheap; the SVID
// they return must not be modified by the caller.
//
// Changed returns a channel that is closed at the next change of the SVID
// or the bundles after the call; call it again for the change after that.
// It may fire for a change that leaves what a given caller sees as it was.
// A nil channel means the source never changes. The configs of
// [ServerConfig] and [ClientConfig] do not need it: they read the source
// on every handshake. It is there for callers that react to rotation
// (closing long-lived connections, logging, tests).
type Source interface {
	x509svid.Source
	x509bundle.Source
	Changed() <-chan struct{}
}

// StaticSource is a [Source] with one fixed SVID and fixed bundles. It is
// safe for concurrent use; its zero value has no SVID and trusts nothing.
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
func (s *StaticSource) GetX509SVID() (*x509svid.SVID, error) {
	if s.svid == nil {
		return nil, ErrNoSVID
	}
	return s.svid, nil
}

// GetX509BundleForTrustDomain implements [x509bundle.Source].
func (s *StaticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if s.bundles == nil {
		return nil, ErrNoBundle
	}
	return s.bundles.GetX509BundleForTrustDomain(td)
}

// Changed returns nil: a static source never changes.
func (s *StaticSource) Changed() <-chan struct{} { return nil }

// notifier hands out channels closed at the next change. Its zero value
// is ready to use.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
