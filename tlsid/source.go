package tlsid

import (
	"fmt"
	"sync"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// SVIDSource serves this process's current X.509-SVID. It is go-spiffe's
// [x509svid.Source]: go-spiffe's own sources satisfy it, and a static
// [*x509svid.SVID] is its own source.
//
// GetX509SVID is called on every TLS handshake, from many goroutines at
// once, and must be cheap; the SVID it returns must not be modified by
// the caller.
type SVIDSource = x509svid.Source

// BundleSource serves the trust bundles against which peers are
// verified, one trust domain at a time. It is go-spiffe's
// [x509bundle.Source]: an [*x509bundle.Bundle] and an [*x509bundle.Set]
// are their own sources, and a set holding the bundles of several trust
// domains is how federation is expressed.
//
// GetX509BundleForTrustDomain is called on every TLS handshake, from many
// goroutines at once, and must be cheap.
type BundleSource = x509bundle.Source

// Source is what a TLS config needs: an [SVIDSource] to present and a
// [BundleSource] to verify peers against. go-spiffe's
// workloadapi.X509Source satisfies it as it is, and so does every source
// of this package; [Join] makes one of an SVID source and a bundle source
// given apart.
//
// Sources may also announce rotations by implementing [Notifier]; the
// configs of [ServerConfig] and [ClientConfig] do not need it, since they
// read the source on every handshake.
type Source interface {
	SVIDSource
	BundleSource
}

// Notifier is implemented by sources that say when their SVID or bundles
// change. It is optional: see [Changed].
//
// Changed returns a channel that is closed at the next change of the SVID
// or the bundles after the call; call it again for the change after that.
// It may fire for a change that leaves what a given caller sees as it
// was. A nil channel means the source never changes. It is there for
// callers that react to rotation (closing long-lived connections,
// logging, tests).
type Notifier interface {
	Changed() <-chan struct{}
}

// Changed returns src's rotation notice when src implements [Notifier],
// and nil (a channel that never fires) when it does not.
func Changed(src any) <-chan struct{} {
	if n, ok := src.(Notifier); ok {
		return n.Changed()
	}
	return nil
}

// Join returns a [Source] that presents the SVIDs of svids and verifies
// peers against bundles, such as an SVID from files with the bundles of a
// federation, or a fixed [*x509svid.SVID] with an [*x509bundle.Set]. Its
// Changed is that of svids when svids is a [Notifier], else that of
// bundles. Join fails with [ErrNilSource] when either is nil.
func Join(svids SVIDSource, bundles BundleSource) (Source, error) {
	if svids == nil || bundles == nil {
		return nil, fmt.Errorf("tlsid: join: %w", ErrNilSource)
	}
	return joined{SVIDSource: svids, BundleSource: bundles}, nil
}

type joined struct {
	SVIDSource
	BundleSource
}

func (j joined) Changed() <-chan struct{} {
	if n, ok := j.SVIDSource.(Notifier); ok {
		return n.Changed()
	}
	return Changed(j.BundleSource)
}

// StaticSource is a [Source] with one fixed SVID and fixed bundles; it
// never changes. It is safe for concurrent use; its zero value has no SVID
// and trusts nothing.
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
