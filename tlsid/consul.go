package tlsid

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/time/rate"
)

// ErrConsul reports an answer from Consul's Connect CA that weft cannot
// use: roots without a trust domain or certificates, a leaf that is not a
// valid SVID.
var ErrConsul = errors.New("tlsid: unusable Consul CA answer")

// Defaults of the Consul watches and intentions cache.
const (
	// DefaultConsulWait is the wait of each blocking query (Consul's own
	// default; its maximum is 10 minutes).
	DefaultConsulWait = 5 * time.Minute
	// DefaultIntentionsTTL is how long an intentions decision is cached.
	DefaultIntentionsTTL = 10 * time.Second
	// MaxIntentionsTTL bounds [WithIntentionsTTL].
	MaxIntentionsTTL = time.Minute
	// DefaultIntentionsTimeout is how long a request waits for the agent's
	// decision when it is not cached.
	DefaultIntentionsTimeout = 5 * time.Second
	// maxIntentionsEntries bounds the cache; it is cleared when full.
	maxIntentionsEntries = 4096
)

type consulOptions struct {
	now          func() time.Time
	defaultAllow bool
	logger       *slog.Logger
	wait         time.Duration
	ttl          time.Duration
	backoff      time.Duration
	maxBackof    time.Duration
	timeout      time.Duration
}

func newConsulOptions(opts []ConsulOption) consulOptions {
	o := consulOptions{now: time.Now, logger: slog.New(slog.DiscardHandler), wait: DefaultConsulWait, ttl: DefaultIntentionsTTL, backoff: time.Second, maxBackof: 3 * time.Minute, timeout: DefaultIntentionsTimeout}
	for _, opt := range opts {
		if opt != nil {
			opt.applyConsul(&o)
		}
	}
	return o
}

// WithConsulWait sets the wait of the blocking queries of a
// [ConsulSource], at most 10 minutes. Values ≤ 0 are ignored.
func WithConsulWait(d time.Duration) ConsulOption {
	return consulOptionFunc(func(o *consulOptions) {
		if d > 0 {
			o.wait = min(d, 10*time.Minute)
		}
	})
}

// WithIntentionsDefault sets what [CompileIntentions] and
// [WatchConsulIntentions] decide for a caller that no intention names:
// deny (false, the default, as Consul does under an ACL default policy
// of deny) or allow (Consul under ACL default allow, or with ACLs off).
// Set it to match the cluster's ACL default policy. [ConsulIntentions]
// ignores it: the agent applies its own default.
func WithIntentionsDefault(allow bool) ConsulOption {
	return consulOptionFunc(func(o *consulOptions) { o.defaultAllow = allow })
}

// WithConsulLogger sets where [ConsulIntentionsWatch] logs: each
// [IntentionWarning] once, at warning level, and failed queries. The
// default discards. A nil logger is ignored.
func WithConsulLogger(l *slog.Logger) ConsulOption {
	return consulOptionFunc(func(o *consulOptions) {
		if l != nil {
			o.logger = l
		}
	})
}

// WithIntentionsTTL sets how long [ConsulIntentions] caches a decision,
// at most [MaxIntentionsTTL]. Values ≤ 0 are ignored.
func WithIntentionsTTL(d time.Duration) ConsulOption {
	return consulOptionFunc(func(o *consulOptions) {
		if d > 0 {
			o.ttl = min(d, MaxIntentionsTTL)
		}
	})
}

// WithIntentionsTimeout sets how long a request waits for the agent when
// [ConsulIntentions] has no cached decision; then the request is refused
// as unavailable. The default is [DefaultIntentionsTimeout]. Values ≤ 0
// are ignored.
func WithIntentionsTimeout(d time.Duration) ConsulOption {
	return consulOptionFunc(func(o *consulOptions) {
		if d > 0 {
			o.timeout = d
		}
	})
}

// ConsulSource is a [Source] fed by a Consul agent's Connect CA: the
// leaf certificate of one service (/v1/agent/connect/ca/leaf/<service>)
// and the CA roots (/v1/agent/connect/ca/roots), each watched with
// blocking queries. The trust domain is the roots' (<cluster-id>.consul);
// every root Consul lists, active or not, is trusted, so SVIDs signed
// before a root rotation keep verifying while Consul keeps the old root.
// A new leaf or new roots apply from the next handshake on.
//
// The watches follow Consul's rules: the index comes from the last
// answer and is never 0 once there is one; after a failed query or an
// index that went backwards the next read is a fresh, non-blocking one;
// queries are rate limited (one a second, burst 2), back off on errors
// (1 s × failures², at most 3 min) and are cancelled by
// [ConsulSource.Close].
//
// The zero value is not usable; build one with [NewConsulSource]. It is
// safe for concurrent use.
type ConsulSource struct {
	client  *api.Client
	service string
	opts    consulOptions

	svid    atomic.Pointer[x509svid.SVID]
	bundle  atomic.Pointer[x509bundle.Bundle]
	changes notifier
	lastErr atomic.Pointer[error]

	leaves, roots atomic.Uint64

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// NewConsulSource fetches the roots and the leaf certificate of service
// from the agent of client, failing if either is unusable or ctx ends
// first, then watches both until [ConsulSource.Close]. It reads
// [WithConsulWait]. If client's HTTP client has a timeout, it must exceed
// the wait plus the wait/16 of jitter Consul adds (api.DefaultConfig has
// none).
func NewConsulSource(ctx context.Context, client *api.Client, service string, opts ...ConsulOption) (*ConsulSource, error) {
	if client == nil {
		return nil, errors.New("tlsid: consul source: nil client")
	}
	if service == "" || strings.ContainsAny(service, "/?#%") {
		return nil, fmt.Errorf("tlsid: consul source: bad service name %q", truncate(service))
	}
	s := &ConsulSource{client: client, service: service, opts: newConsulOptions(opts)}
	rootsIdx, err := s.fetchRoots(&api.QueryOptions{}, ctx)
	if err != nil {
		return nil, fmt.Errorf("tlsid: consul source: %w", err)
	}
	leafIdx, err := s.fetchLeaf(&api.QueryOptions{}, ctx)
	if err != nil {
		return nil, fmt.Errorf("tlsid: consul source: %w", err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go s.watch(wctx, rootsIdx, s.fetchRoots)
	go s.watch(wctx, leafIdx, s.fetchLeaf)
	return s, nil
}

func (s *ConsulSource) fetchRoots(q *api.QueryOptions, ctx context.Context) (uint64, error) {
	list, meta, err := s.client.Agent().ConnectCARoots(q.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("roots: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(list.TrustDomain)
	if err != nil {
		return 0, fmt.Errorf("%w: roots trust domain %q: %v", ErrConsul, truncate(list.TrustDomain), err)
	}
	var certs []*x509.Certificate
	for _, r := range list.Roots {
		cs, err := parseCertsPEM(r.RootCertPEM)
		if err != nil {
			return 0, fmt.Errorf("%w: root %s: %v", ErrConsul, r.ID, err)
		}
		certs = append(certs, cs...)
	}
	if len(certs) == 0 {
		return 0, fmt.Errorf("%w: no roots", ErrConsul)
	}
	b := x509bundle.FromX509Authorities(td, certs)
	if old := s.bundle.Load(); old == nil || !old.Equal(b) {
		s.bundle.Store(b)
		s.roots.Add(1)
		s.changes.notify()
	}
	return meta.LastIndex, nil
}

func (s *ConsulSource) fetchLeaf(q *api.QueryOptions, ctx context.Context) (uint64, error) {
	leaf, meta, err := s.client.Agent().ConnectCALeaf(s.service, q.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("leaf %s: %w", s.service, err)
	}
	key, err := pkcs8PEM(leaf.PrivateKeyPEM)
	if err != nil {
		return 0, fmt.Errorf("%w: leaf %s key: %v", ErrConsul, s.service, err)
	}
	svid, err := x509svid.Parse([]byte(leaf.CertPEM), key)
	if err != nil {
		return 0, fmt.Errorf("%w: leaf %s: %v", ErrConsul, s.service, err)
	}
	if err := CheckWorkloadID(svid.ID); err != nil {
		return 0, fmt.Errorf("%w: leaf %s: %w", ErrConsul, s.service, err)
	}
	if err := checkLeaf(svid.Certificates[0]); err != nil {
		return 0, fmt.Errorf("%w: leaf %s: %w", ErrConsul, s.service, err)
	}
	if old := s.svid.Load(); old == nil || !old.Certificates[0].Equal(svid.Certificates[0]) {
		s.svid.Store(svid)
		s.leaves.Add(1)
		s.changes.notify()
	}
	return meta.LastIndex, nil
}

// watch runs one blocking-query loop of the source until ctx ends.
func (s *ConsulSource) watch(ctx context.Context, index uint64, fetch consulFetch) {
	defer s.wg.Done()
	// One query a second, burst 2: roots and leaves change rarely.
	watchConsul(ctx, max(index, 1), rate.Every(time.Second), s.opts, fetch, func(err error) { s.lastErr.Store(&err) })
}

// consulFetch runs one query with q, returning the index of its answer.
type consulFetch func(q *api.QueryOptions, ctx context.Context) (uint64, error)

// watchConsul runs one blocking-query loop until ctx ends, by Consul's
// rules: the index comes from the last answer and is never 0 after one,
// except that after a failed query or an index that went backwards (an
// agent back with its state wiped may answer with a lower index) the
// next read is a fresh one, with index 0, which does not block; queries
// wait o.wait; a token bucket (every,
// burst 2) keeps an agent that answers at once (index unchanged, errors)
// from making the loop spin; failures back off o.backoff × failures², at
// most o.maxBackof. report gets the error of each failed query and nil
// after each successful one.
func watchConsul(ctx context.Context, index uint64, every rate.Limit, o consulOptions, fetch consulFetch, report func(error)) {
	failures := 0
	limit := rate.NewLimiter(every, 2)
	for {
		if limit.Wait(ctx) != nil {
			return
		}
		next, err := fetch(&api.QueryOptions{WaitIndex: index, WaitTime: o.wait}, ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			report(err)
			index = 0
			failures++
			d := min(o.backoff*time.Duration(failures*failures), o.maxBackof)
			if !sleepCtx(ctx, d) {
				return
			}
			continue
		}
		report(nil)
		failures = 0
		switch {
		case next < index:
			index = 0 // the index went backwards: start over
		default:
			index = max(next, 1)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// GetX509SVID implements [x509svid.Source]: the latest leaf from Consul.
func (s *ConsulSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid.Load(), nil }

// GetX509BundleForTrustDomain implements [x509bundle.Source]: Consul's
// roots for its trust domain, an error wrapping [ErrNoBundle] for any
// other.
func (s *ConsulSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	b := s.bundle.Load()
	if td != b.TrustDomain() {
		return nil, fmt.Errorf("%w %s: Consul's trust domain is %s", ErrNoBundle, td, b.TrustDomain())
	}
	return b, nil
}

// Changed implements [Source]: the channel is closed when a new leaf or
// new roots arrive.
func (s *ConsulSource) Changed() <-chan struct{} { return s.changes.changed() }

// TrustDomain returns the trust domain of Consul's CA.
func (s *ConsulSource) TrustDomain() spiffeid.TrustDomain { return s.bundle.Load().TrustDomain() }

// Updates returns how many distinct leaves and root sets the source has
// applied, the first ones included.
func (s *ConsulSource) Updates() (leaves, roots uint64) { return s.leaves.Load(), s.roots.Load() }

// Err returns the error of the last failed query, or nil if the last
// query of each watch succeeded.
func (s *ConsulSource) Err() error {
	if e := s.lastErr.Load(); e != nil {
		return *e
	}
	return nil
}

// Close stops both watches and waits for them; the source keeps serving
// what it last received. Close is idempotent.
func (s *ConsulSource) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

func parseCertsPEM(s string) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := []byte(s)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in PEM")
	}
	return out, nil
}

// pkcs8PEM converts Consul's private key PEM (SEC 1 "EC PRIVATE KEY",
// PKCS#1 or PKCS#8) to the PKCS#8 PEM go-spiffe parses.
func pkcs8PEM(s string) ([]byte, error) {
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		return pem.EncodeToMemory(b), nil
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("unknown key type %q", b.Type)
	}
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ConsulIntentions is a [RequestPolicy] (and, through
// [ConsulIntentions.Authorizer], a handshake [Authorizer]) that asks a
// Consul agent's authorize endpoint (/v1/agent/connect/authorize) whether
// the caller's SPIFFE ID may call the target service under the
// operator's intentions. Decisions are cached per caller ID for the TTL
// of [WithIntentionsTTL] (default [DefaultIntentionsTTL], at most
// [MaxIntentionsTTL]), so an intention change takes effect within one TTL.
// A caller without an ID is denied. When the agent cannot be asked or
// does not answer in time, the request is refused with an error that does
// not wrap [ErrUnauthorized]. Give the api client an HTTP timeout: the
// agent's authorize call takes no context.
//
// For intentions with HTTP permissions, use [WatchConsulIntentions],
// which reads the intentions themselves and decides per request.
//
// The zero value is not usable; build one with [NewConsulIntentions]. It
// is safe for concurrent use.
type ConsulIntentions struct {
	client *api.Client
	target string
	opts   consulOptions

	mu      sync.Mutex
	cache   map[spiffeid.ID]intentionEntry
	pending map[spiffeid.ID]*intentionCall
}

type intentionEntry struct {
	err     error // nil: allowed
	expires time.Time
}

// NewConsulIntentions returns the intentions policy for calls to target,
// the Consul service name of this server. It reads [WithIntentionsTTL]
// and [WithClock].
func NewConsulIntentions(client *api.Client, target string, opts ...ConsulOption) (*ConsulIntentions, error) {
	if client == nil {
		return nil, errors.New("tlsid: consul intentions: nil client")
	}
	if target == "" {
		return nil, errors.New("tlsid: consul intentions: empty target")
	}
	return &ConsulIntentions{client: client, target: target, opts: newConsulOptions(opts),
		cache: map[spiffeid.ID]intentionEntry{}, pending: map[spiffeid.ID]*intentionCall{}}, nil
}

// AuthorizeRequest implements [RequestPolicy]; intentions are decided by
// caller only, whatever the method and path. When the decision is not
// cached, it waits for the agent at most until ctx ends or the timeout of
// [WithIntentionsTimeout] passes; concurrent requests of one caller share
// one query.
func (c *ConsulIntentions) AuthorizeRequest(ctx context.Context, r Request) error {
	return c.authorize(ctx, r.Peer)
}

// Authorizer returns the intentions as a handshake [Authorizer].
func (c *ConsulIntentions) Authorizer() Authorizer {
	return func(peer spiffeid.ID) error { return c.authorize(context.Background(), peer) }
}

// intentionCall is one query to the agent that concurrent requests of the
// same caller wait for.
type intentionCall struct {
	done chan struct{}
	err  error // the decision, or why there is none
}

func (c *ConsulIntentions) authorize(ctx context.Context, peer spiffeid.ID) error {
	if peer.IsZero() {
		return fmt.Errorf("%w: no peer ID", ErrUnauthorized)
	}
	now := c.opts.now()
	c.mu.Lock()
	if e, ok := c.cache[peer]; ok && now.Before(e.expires) {
		c.mu.Unlock()
		return e.err
	}
	call, running := c.pending[peer]
	if !running {
		call = &intentionCall{done: make(chan struct{})}
		c.pending[peer] = call
		go c.query(peer, call)
	}
	c.mu.Unlock()

	timer := time.NewTimer(c.opts.timeout)
	defer timer.Stop()
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return fmt.Errorf("tlsid: consul intentions: %w", ctx.Err())
	case <-timer.C:
		return fmt.Errorf("tlsid: consul intentions: no answer from the agent within %v", c.opts.timeout)
	}
}

// query asks the agent about peer and caches the decision. It runs on its
// own goroutine so that a request can stop waiting for a slow agent; the
// api client's own HTTP timeout bounds it.
func (c *ConsulIntentions) query(peer spiffeid.ID, call *intentionCall) {
	res, err := c.client.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: c.target, ClientCertURI: peer.String()})
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pending, peer)
	defer close(call.done)
	if err != nil {
		call.err = fmt.Errorf("tlsid: consul intentions: %w", err)
		return
	}
	e := intentionEntry{expires: c.opts.now().Add(c.opts.ttl)}
	if !res.Authorized {
		e.err = fmt.Errorf("%w: Consul intentions: %s", ErrUnauthorized, truncate(res.Reason))
	}
	if len(c.cache) >= maxIntentionsEntries {
		clear(c.cache)
	}
	c.cache[peer] = e
	call.err = e.err
}
