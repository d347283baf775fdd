package tlsid

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// DefaultPollInterval is how often a [FileSource] looks at its files
// unless [WithPollInterval] says otherwise.
const DefaultPollInterval = 5 * time.Second

// ErrBadFiles reports SVID or bundle files that cannot be read or do not
// hold a valid SVID (chain and matching key) and a non-empty bundle.
var ErrBadFiles = errors.New("tlsid: bad SVID files")

// WithPollInterval sets how often a [FileSource] reads its files to see
// whether they changed. Values ≤ 0 are ignored.
func WithPollInterval(d time.Duration) FileOption {
	return fileOptionFunc(func(s *FileSource) {
		if d > 0 {
			s.interval = d
		}
	})
}

// FileSource is a [Source] backed by three PEM files: the SVID's
// certificate chain (leaf first), its private key (PKCS#8) and the trust
// bundle of its trust domain. It reads them every poll interval and, when
// their contents changed and still form a valid SVID and bundle, serves
// the new ones from the next handshake on. Files caught half-written (a
// new certificate with the old key) are not applied: the previous SVID
// stays until a later poll finds a consistent set.
//
// The zero value is not usable; build one with [NewFileSource] and stop it
// with [FileSource.Close]. It is safe for concurrent use.
type FileSource struct {
	certFile, keyFile, bundleFile string
	interval                      time.Duration
	now                           func() time.Time

	mu      sync.Mutex // serialises reloads
	raw     [3][]byte  // contents last applied
	current atomic.Pointer[fileState]
	lastErr atomic.Pointer[error]
	changes notifier

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type fileState struct {
	svid   *x509svid.SVID
	bundle *x509bundle.Bundle
}

// NewFileSource loads the SVID from certFile and keyFile and the bundle of
// its trust domain from bundleFile, failing with [ErrBadFiles] if they do
// not form a valid set, and starts watching them. It reads
// [WithPollInterval] and [WithClock].
func NewFileSource(certFile, keyFile, bundleFile string, opts ...FileOption) (*FileSource, error) {
	s := &FileSource{
		certFile: certFile, keyFile: keyFile, bundleFile: bundleFile,
		interval: DefaultPollInterval, now: time.Now,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for _, o := range opts {
		if o != nil {
			o.applyFile(s)
		}
	}
	if _, err := s.Reload(); err != nil {
		return nil, err
	}
	go s.poll()
	return s, nil
}

func (s *FileSource) poll() {
	defer close(s.done)
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			_, _ = s.Reload()
		}
	}
}

// Reload reads the files now and applies them if they changed and are
// valid, reporting whether it applied a change. On error the source keeps
// serving what it had, and [FileSource.Err] returns the error until a
// later reload succeeds.
func (s *FileSource) Reload() (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed, err := s.reload()
	if err != nil {
		s.lastErr.Store(&err)
		return false, err
	}
	s.lastErr.Store(nil)
	if changed {
		s.changes.notify()
	}
	return changed, nil
}

func (s *FileSource) reload() (bool, error) {
	var raw [3][]byte
	for i, name := range []string{s.certFile, s.keyFile, s.bundleFile} {
		b, err := os.ReadFile(name)
		if err != nil {
			return false, fmt.Errorf("%w: %v", ErrBadFiles, err)
		}
		raw[i] = b
	}
	if s.current.Load() != nil && bytes.Equal(raw[0], s.raw[0]) && bytes.Equal(raw[1], s.raw[1]) && bytes.Equal(raw[2], s.raw[2]) {
		return false, nil
	}
	svid, err := x509svid.Parse(raw[0], raw[1])
	if err != nil {
		return false, fmt.Errorf("%w: %s, %s: %v", ErrBadFiles, s.certFile, s.keyFile, err)
	}
	if err := CheckWorkloadID(svid.ID); err != nil {
		return false, fmt.Errorf("%w: %s: %w", ErrBadFiles, s.certFile, err)
	}
	if err := checkLeaf(svid.Certificates[0]); err != nil {
		return false, fmt.Errorf("%w: %s: %w", ErrBadFiles, s.certFile, err)
	}
	if leaf := svid.Certificates[0]; !s.now().Before(leaf.NotAfter) {
		return false, fmt.Errorf("%w: %s: the SVID expired at %s", ErrBadFiles, s.certFile, leaf.NotAfter.Format(time.RFC3339))
	}
	bundle, err := x509bundle.Parse(svid.ID.TrustDomain(), raw[2])
	if err != nil {
		return false, fmt.Errorf("%w: %s: %v", ErrBadFiles, s.bundleFile, err)
	}
	if bundle.Empty() {
		return false, fmt.Errorf("%w: %s: %w", ErrBadFiles, s.bundleFile, ErrNoBundle)
	}
	s.raw = raw
	s.current.Store(&fileState{svid: svid, bundle: bundle})
	return true, nil
}

// Err returns the error of the last reload, or nil if it succeeded.
func (s *FileSource) Err() error {
	if e := s.lastErr.Load(); e != nil {
		return *e
	}
	return nil
}

// GetX509SVID implements [x509svid.Source].
func (s *FileSource) GetX509SVID() (*x509svid.SVID, error) {
	return s.current.Load().svid, nil
}

// GetX509BundleForTrustDomain implements [x509bundle.Source]: the bundle
// file's roots for the SVID's trust domain, an error wrapping
// [ErrNoBundle] for any other.
func (s *FileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	st := s.current.Load()
	if td != st.bundle.TrustDomain() {
		return nil, fmt.Errorf("%w %s", ErrNoBundle, td)
	}
	return st.bundle, nil
}

// Changed implements [Source]: the channel is closed when a reload
// applies new files.
func (s *FileSource) Changed() <-chan struct{} { return s.changes.changed() }

// Close stops watching the files and waits for the watcher to end. The
// source keeps serving what it last loaded. Close is idempotent.
func (s *FileSource) Close() error {
	s.once.Do(func() { close(s.stop) })
	<-s.done
	return nil
}
