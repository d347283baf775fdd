package tlsid

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrWorkloadAPI reports a Workload API that cannot serve this process: no
// address, a malformed one, no answer before the context ended, or an
// answer weft cannot use (no SVID with the wanted ID, an SVID that breaks
// the X.509-SVID rules, no bundle for the SVID's own trust domain).
var ErrWorkloadAPI = errors.New("tlsid: workload API")

// WorkloadOption configures a [WorkloadSource].
type WorkloadOption interface{ applyWorkload(*workloadOptions) }

type workloadOptionFunc func(*workloadOptions)

func (f workloadOptionFunc) applyWorkload(o *workloadOptions) { f(o) }

type workloadOptions struct {
	addr   string
	id     spiffeid.ID
	client []workloadapi.ClientOption
}

// WithWorkloadAddr sets the address of the Workload API, such as
// "unix:///run/spire/agent.sock". The default is the
// SPIFFE_ENDPOINT_SOCKET environment variable. An empty address is
// ignored.
func WithWorkloadAddr(addr string) WorkloadOption {
	return workloadOptionFunc(func(o *workloadOptions) {
		if addr != "" {
			o.addr = addr
		}
	})
}

// WithWorkloadID makes a [WorkloadSource] serve the SVID with this ID
// when the Workload API hands the workload several (one per registration
// entry that matches it). The default is the first SVID, the Workload
// API's default identity. A zero ID is ignored.
func WithWorkloadID(id spiffeid.ID) WorkloadOption {
	return workloadOptionFunc(func(o *workloadOptions) {
		if !id.IsZero() {
			o.id = id
		}
	})
}

// WithWorkloadClientOptions passes options to go-spiffe's Workload API
// client, such as workloadapi.WithLogger or
// workloadapi.WithBackoffStrategy (how soon a refused or broken watch is
// retried). Nil options are ignored.
func WithWorkloadClientOptions(opts ...workloadapi.ClientOption) WorkloadOption {
	return workloadOptionFunc(func(o *workloadOptions) {
		for _, c := range opts {
			if c != nil {
				o.client = append(o.client, c)
			}
		}
	})
}

// WorkloadSource is a [Source] fed by the SPIFFE Workload API, as a SPIRE
// agent serves it, through go-spiffe's workloadapi client. It keeps one
// watch open: each update the agent pushes (a rotated SVID, a new or
// changed bundle of any trust domain) is checked and applied from the
// next handshake on, with no restart, and Changed fires. Its bundles are
// those of every trust domain the agent sends: the workload's own and
// those of the trust domains it federates with, so peers of any of them
// verify (whether they may connect is the authorizer's call).
//
// An update that weft cannot use (no SVID with the ID of
// [WithWorkloadID], an SVID that breaks the X.509-SVID rules, no bundle
// for the SVID's trust domain) is not applied in part: the source keeps
// what it had and [WorkloadSource.Err] reports the problem until a later
// update applies. A broken watch is retried by go-spiffe with backoff.
//
// go-spiffe's own workloadapi.X509Source is a [Source] too and plugs into
// the TLS configs directly; WorkloadSource adds the checks above,
// rotation notices for any number of callers and the choice of SVID.
//
// The zero value is not usable; build one with [NewWorkloadSource] and
// stop it with [WorkloadSource.Close]. It is safe for concurrent use.
type WorkloadSource struct {
	want spiffeid.ID

	state   atomic.Pointer[workloadState]
	changes notifier
	updates atomic.Uint64
	lastErr atomic.Pointer[error]
	first   chan struct{}
	once    sync.Once

	client *workloadapi.Client
	cancel context.CancelFunc
	done   chan struct{}
	closed sync.Once
}

type workloadState struct {
	svid    *x509svid.SVID
	bundles *x509bundle.Set
}

// NewWorkloadSource connects to the Workload API and waits for its first
// usable answer, failing with [ErrWorkloadAPI] if ctx ends first (the
// agent may refuse a workload it has no registration entry for yet; the
// watch is retried meanwhile). It then watches for updates until
// [WorkloadSource.Close]. It reads [WithWorkloadAddr], [WithWorkloadID]
// and [WithWorkloadClientOptions].
func NewWorkloadSource(ctx context.Context, opts ...WorkloadOption) (*WorkloadSource, error) {
	var o workloadOptions
	for _, opt := range opts {
		if opt != nil {
			opt.applyWorkload(&o)
		}
	}
	addr := o.addr
	if addr == "" {
		if addr, _ = workloadapi.GetDefaultAddress(); addr == "" {
			return nil, fmt.Errorf("%w: no address: set SPIFFE_ENDPOINT_SOCKET or use WithWorkloadAddr", ErrWorkloadAPI)
		}
	}
	if err := workloadapi.ValidateAddress(addr); err != nil {
		return nil, fmt.Errorf("%w: address %q: %v", ErrWorkloadAPI, truncate(addr), err)
	}
	client, err := workloadapi.New(ctx, append([]workloadapi.ClientOption{workloadapi.WithAddr(addr)}, o.client...)...)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWorkloadAPI, err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s := &WorkloadSource{want: o.id, first: make(chan struct{}), client: client, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		_ = client.WatchX509Context(wctx, workloadWatcher{s})
	}()
	select {
	case <-s.first:
		return s, nil
	case <-ctx.Done():
		_ = s.Close()
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("%w: no usable SVID: %w (last: %w)", ErrWorkloadAPI, ctx.Err(), err)
		}
		return nil, fmt.Errorf("%w: no SVID: %w", ErrWorkloadAPI, ctx.Err())
	}
}

// workloadWatcher receives the watch's updates, keeping the callbacks off
// WorkloadSource's exported methods.
type workloadWatcher struct{ s *WorkloadSource }

func (w workloadWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	if err := w.s.apply(c); err != nil {
		w.s.setErr(err)
	}
}

func (w workloadWatcher) OnX509ContextWatchError(err error) {
	if status.Code(err) == codes.Canceled {
		return // Close
	}
	w.s.setErr(fmt.Errorf("%w: watch: %v", ErrWorkloadAPI, err))
}

func (s *WorkloadSource) setErr(err error) { s.lastErr.Store(&err) }

// apply checks an update and installs it whole, or not at all.
func (s *WorkloadSource) apply(c *workloadapi.X509Context) error {
	if c == nil || len(c.SVIDs) == 0 {
		return fmt.Errorf("%w: update without SVIDs", ErrWorkloadAPI)
	}
	svid := c.SVIDs[0]
	if !s.want.IsZero() {
		svid = nil
		for _, x := range c.SVIDs {
			if x != nil && x.ID == s.want {
				svid = x
				break
			}
		}
		if svid == nil {
			return fmt.Errorf("%w: no SVID for %s among %d", ErrWorkloadAPI, s.want, len(c.SVIDs))
		}
	}
	if svid == nil || len(svid.Certificates) == 0 || svid.PrivateKey == nil {
		return fmt.Errorf("%w: %w", ErrWorkloadAPI, ErrNoSVID)
	}
	if err := CheckWorkloadID(svid.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrWorkloadAPI, err)
	}
	if err := checkLeaf(svid.Certificates[0]); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrWorkloadAPI, svid.ID, err)
	}
	td := svid.ID.TrustDomain()
	if c.Bundles == nil {
		return fmt.Errorf("%w: %w %s", ErrWorkloadAPI, ErrNoBundle, td)
	}
	if b, ok := c.Bundles.Get(td); !ok || b.Empty() {
		return fmt.Errorf("%w: %w %s", ErrWorkloadAPI, ErrNoBundle, td)
	}
	s.state.Store(&workloadState{svid: svid, bundles: c.Bundles})
	s.lastErr.Store(nil)
	s.updates.Add(1)
	s.once.Do(func() { close(s.first) })
	s.changes.notify()
	return nil
}

// GetX509SVID implements [x509svid.Source]: the SVID of the last update
// applied.
func (s *WorkloadSource) GetX509SVID() (*x509svid.SVID, error) {
	return s.state.Load().svid, nil
}

// GetX509BundleForTrustDomain implements [x509bundle.Source]: the bundle
// of td among those of the last update, an error wrapping [ErrNoBundle]
// for a trust domain the agent sent none for.
func (s *WorkloadSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if b, ok := s.state.Load().bundles.Get(td); ok {
		return b, nil
	}
	return nil, fmt.Errorf("%w %s", ErrNoBundle, td)
}

// Bundles returns the bundles of the last update applied, one per trust
// domain. The set must not be modified.
func (s *WorkloadSource) Bundles() *x509bundle.Set { return s.state.Load().bundles }

// Changed implements [Notifier]: the channel is closed when an update is
// applied.
func (s *WorkloadSource) Changed() <-chan struct{} { return s.changes.changed() }

// Updates returns how many updates the source has applied, the first
// included.
func (s *WorkloadSource) Updates() uint64 { return s.updates.Load() }

// Err returns why the last update or watch attempt failed, or nil when
// the last update applied.
func (s *WorkloadSource) Err() error {
	if e := s.lastErr.Load(); e != nil {
		return *e
	}
	return nil
}

// Close ends the watch and closes the client, waiting for the watch to
// end. The source keeps serving what it last applied. Close is
// idempotent.
func (s *WorkloadSource) Close() error {
	var err error
	s.closed.Do(func() {
		s.cancel()
		<-s.done
		err = s.client.Close()
	})
	return err
}
