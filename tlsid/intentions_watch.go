package tlsid

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/time/rate"
)

// IntentionsRate is the most queries a second a [ConsulIntentionsWatch]
// sends (in bursts of 2): an intention change applies at once, and even
// a run of changes waits at most a tenth of a second for the next query.
const IntentionsRate = rate.Limit(10)

// ConsulIntentionsWatch is a [RequestPolicy] that enforces Consul's
// service intentions, L4 and L7 (HTTP paths, methods and headers),
// in-process: it watches the service-intentions config entries with a
// blocking query and compiles those of its service and of "*" into
// [Intentions] on every change, which decide each request without asking
// Consul. It is the L7-capable counterpart of [ConsulIntentions], which
// asks the agent's authorize endpoint per caller and treats any L7
// intention as a deny; both sit side by side (ConsulIntentions also
// serves as a handshake [Authorizer] and needs no intentions:read ACL).
//
// The entries are listed (api.ConfigEntries.List of the kind
// "service-intentions"), not read one by one, because reading a missing
// entry is an error with no index to block on. The watch follows
// Consul's rules: the index comes from the last answer and is never 0
// once there is one; after a failed query or an index that went
// backwards the next read is a fresh, non-blocking one, which also
// rereads the CA's trust domain; queries are rate limited
// ([IntentionsRate], burst 2), back off on errors (1 s × failures², at
// most 3 min) and end with [ConsulIntentionsWatch.Close].
//
// It fails closed. Until the first entries are compiled, every request is
// refused with an error wrapping [ErrNoIntentions] (package mesh answers
// 503 / Unavailable). When Consul cannot be reached, the last compiled
// intentions keep deciding. Entries that do not compile
// ([ErrBadIntention]) never apply, not even in part: the last good
// intentions stay, and [ConsulIntentionsWatch.Err] reports the problem.
// A watch error never lets a request through that the last intentions
// refuse.
//
// The zero value is not usable; build one with [WatchConsulIntentions].
// It is safe for concurrent use; deciding a request reads one atomic
// pointer and does not allocate.
type ConsulIntentionsWatch struct {
	client *api.Client
	target string
	opts   consulOptions
	td     spiffeid.TrustDomain // of Consul's CA, read on each fresh read; watch goroutine only

	cur     atomic.Pointer[Intentions]
	updates atomic.Uint64
	changes notifier

	mu         sync.Mutex
	queryErr   error
	compileErr error
	logged     map[IntentionWarning]bool // warnings already logged

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// WatchConsulIntentions starts watching the intentions of target, the
// Consul service name of this server, through the agent of client, and
// returns at once; requests are refused until the first answer is
// compiled. The trust domain of callers is the agent's Connect CA's. It
// reads [WithIntentionsDefault], [WithConsulWait] and
// [WithConsulLogger]. If client's HTTP client has a timeout, it must
// exceed the wait plus the wait/16 of jitter Consul adds
// (api.DefaultConfig has none). The token of client needs intentions:read
// on target (service:read on target grants it).
func WatchConsulIntentions(client *api.Client, target string, opts ...ConsulOption) (*ConsulIntentionsWatch, error) {
	if client == nil {
		return nil, errors.New("tlsid: consul intentions watch: nil client")
	}
	if err := spiffeid.ValidatePathSegment(target); err != nil || target == "*" {
		return nil, fmt.Errorf("tlsid: consul intentions watch: bad service name %q", truncate(target))
	}
	w := &ConsulIntentionsWatch{client: client, target: target, opts: newConsulOptions(opts), logged: map[IntentionWarning]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		watchConsul(ctx, 0, IntentionsRate, w.opts, w.fetch, w.setQueryErr)
	}()
	return w, nil
}

// fetch reads the entries once (blocking with q) and compiles them.
func (w *ConsulIntentionsWatch) fetch(q *api.QueryOptions, ctx context.Context) (uint64, error) {
	if q.WaitIndex == 0 {
		// A fresh read (the first, or after an error or an index that
		// went back): Consul may have been rebuilt, with a new CA and so
		// a new trust domain for callers.
		if err := w.readTrustDomain(ctx); err != nil {
			return 0, err
		}
	}
	entries, meta, err := w.client.ConfigEntries().List(api.ServiceIntentions, q.WithContext(ctx))
	if err != nil {
		return 0, fmt.Errorf("tlsid: consul intentions watch: %w", err)
	}
	if meta.LastIndex == q.WaitIndex && w.cur.Load() != nil {
		return meta.LastIndex, nil // the wait ended with no change
	}
	in, err := compileIntentions(w.td, w.target, entries, intentionsConfig{defaultAllow: w.opts.defaultAllow})
	w.mu.Lock()
	w.compileErr = err
	w.mu.Unlock()
	if err != nil {
		// Not a query failure: block for the next change, keeping the
		// last good intentions.
		w.opts.logger.Warn("tlsid: Consul intentions not applied; the last good ones stay", "service", w.target, "index", meta.LastIndex, "error", err)
		return meta.LastIndex, nil
	}
	w.logWarnings(in.warnings)
	w.cur.Store(in)
	w.updates.Add(1)
	w.changes.notify()
	return meta.LastIndex, nil
}

// readTrustDomain reads the trust domain of Consul's Connect CA.
func (w *ConsulIntentionsWatch) readTrustDomain(ctx context.Context) error {
	roots, _, err := w.client.Agent().ConnectCARoots((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return fmt.Errorf("tlsid: consul intentions watch: roots: %w", err)
	}
	td, err := spiffeid.TrustDomainFromString(roots.TrustDomain)
	if err != nil {
		return fmt.Errorf("tlsid: consul intentions watch: %w: roots trust domain %q: %v", ErrConsul, truncate(roots.TrustDomain), err)
	}
	w.td = td
	return nil
}

// logWarnings logs each warning the first time it appears.
func (w *ConsulIntentionsWatch) logWarnings(ws []IntentionWarning) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, iw := range ws {
		if w.logged[iw] {
			continue
		}
		if len(w.logged) >= maxIntentionsEntries {
			clear(w.logged)
		}
		w.logged[iw] = true
		w.opts.logger.Warn("tlsid: Consul intention field not applied as Consul would", "service", w.target, "entry", iw.Entry, "field", iw.Field, "reason", iw.Reason)
	}
}

func (w *ConsulIntentionsWatch) setQueryErr(err error) {
	w.mu.Lock()
	prev := w.queryErr
	w.queryErr = err
	w.mu.Unlock()
	if err != nil && prev == nil {
		w.opts.logger.Warn("tlsid: Consul intentions watch failing; the last intentions keep deciding", "service", w.target, "error", err)
	}
}

// AuthorizeRequest implements [RequestPolicy] with the current
// [Intentions]; before the first ones are compiled it refuses r with an
// error wrapping [ErrNoIntentions], which does not wrap
// [ErrUnauthorized] (package mesh answers 503 / Unavailable), and which
// says why when the watch is failing.
func (w *ConsulIntentionsWatch) AuthorizeRequest(ctx context.Context, r Request) error {
	in := w.cur.Load()
	if in == nil {
		if err := w.Err(); err != nil {
			return fmt.Errorf("%w for %s: %w", ErrNoIntentions, w.target, err)
		}
		return fmt.Errorf("%w for %s: waiting for Consul's first answer", ErrNoIntentions, w.target)
	}
	return in.AuthorizeRequest(ctx, r)
}

// Intentions returns the intentions in force; nil before the first are
// compiled.
func (w *ConsulIntentionsWatch) Intentions() *Intentions { return w.cur.Load() }

// Warnings returns the warnings of the intentions in force (see
// [Intentions.Warnings]).
func (w *ConsulIntentionsWatch) Warnings() []IntentionWarning { return w.cur.Load().Warnings() }

// Updates returns how many sets of intentions the watch has applied,
// the first included.
func (w *ConsulIntentionsWatch) Updates() uint64 { return w.updates.Load() }

// Changed returns a channel closed when new intentions apply.
func (w *ConsulIntentionsWatch) Changed() <-chan struct{} { return w.changes.changed() }

// Err returns why the watch is not up to date: the error of the last
// query when it failed, else the error of the last entries read when
// they did not compile (wrapping [ErrBadIntention]); nil when the
// intentions in force are Consul's latest.
func (w *ConsulIntentionsWatch) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.queryErr != nil {
		return w.queryErr
	}
	return w.compileErr
}

// Close stops the watch and waits for it; the intentions in force keep
// deciding. Close is idempotent.
func (w *ConsulIntentionsWatch) Close() error {
	w.cancel()
	w.wg.Wait()
	return nil
}
