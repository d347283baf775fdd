package mesh

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/weftmesh/weft/balancer"
)

// hedged is one attempt of a hedged HTTP call: req goes to an endpoint,
// and when no good answer came after the hedge delay, a copy of orig goes
// to another endpoint (budget permitting). The first good answer wins and
// the other attempt is cancelled; the winner's context lives until its
// body is closed. When both fail, the last failure is returned.
func (cl *cluster) hedged(ctx context.Context, req, orig *http.Request, tried []*balancer.Endpoint) attemptResult {
	g := cl.guard
	results := make(chan hedgeResult, 2)
	var cancels []context.CancelFunc // of the attempts launched
	launch := func(r *http.Request, tried []*balancer.Endpoint) *balancer.Endpoint {
		actx, cancel := context.WithCancel(ctx)
		ep, err := cl.pick(ctx, r, tried)
		if err != nil {
			cancel()
			closeBody(r)
			results <- hedgeResult{a: attemptResult{err: err}, cancel: cancel, idx: -1}
			return nil
		}
		idx := len(cancels)
		cancels = append(cancels, cancel)
		go func() {
			a, admitted := cl.send(ctx, actx, r, ep)
			if !admitted {
				a.err = fmt.Errorf("mesh: %q: %w", cl.service, ErrCircuitOpen)
			}
			results <- hedgeResult{a: a, cancel: cancel, idx: idx}
		}()
		return ep
	}
	first := launch(req, tried)
	pending := 1
	timer := time.NewTimer(g.hedgeDelay())
	defer timer.Stop()
	hedgeSent := first == nil
	var last hedgeResult
	for {
		select {
		case res := <-results:
			pending--
			if hedgeGood(res.a) || pending == 0 {
				if pending > 0 {
					// Cancel the loser now (its cancel is idempotent;
					// the winner's is not called here), and release it
					// when it returns.
					for i, c := range cancels {
						if i != res.idx {
							c()
						}
					}
					go func() {
						for range pending {
							lr := <-results
							lr.cancel()
							discard(lr.a.resp)
						}
					}()
				}
				last.release()
				if res.a.resp != nil {
					res.a.resp.Body = &cancelBody{ReadCloser: res.a.resp.Body, cancel: res.cancel}
				} else {
					res.cancel()
				}
				return res.a
			}
			last.release()
			last = res
		case <-timer.C:
			if hedgeSent {
				continue
			}
			hedgeSent = true
			if !retryAllowed(ctx, g, cl.tel) {
				continue
			}
			r2, err := replay(orig)
			if err != nil {
				continue
			}
			if ep := launch(r2, append(slices.Clip(tried), first)); ep != nil {
				pending++
			} else {
				<-results // the failed launch
			}
		}
	}
}

type hedgeResult struct {
	a      attemptResult
	cancel context.CancelFunc
	idx    int // index of the attempt in launch order; -1: none launched
}

func (h *hedgeResult) release() {
	if h.cancel != nil {
		discard(h.a.resp)
		h.cancel()
	}
}

// hedgeGood reports whether a is an answer a hedged call returns at once.
func hedgeGood(a attemptResult) bool {
	return a.err == nil && !retryableStatus(a.resp.StatusCode)
}

// pick picks an endpoint for r, avoiding tried ones when it can, for a
// hedge.
func (cl *cluster) pick(ctx context.Context, r *http.Request, tried []*balancer.Endpoint) (*balancer.Endpoint, error) {
	g := cl.guard
	skip := g.skipOpen
	if len(tried) > 0 {
		skip = skipping(g.skipOpen, tried, nil)
	}
	ep, err := cl.balancer.Pick(balancer.Info{Context: ctx, HTTP: r, Skip: skip})
	if errors.Is(err, balancer.ErrAllSkipped) && len(tried) > 0 {
		ep, err = cl.balancer.Pick(balancer.Info{Context: ctx, HTTP: r, Skip: g.skipOpen})
	}
	if errors.Is(err, balancer.ErrAllSkipped) {
		err = ErrCircuitOpen
	}
	if err != nil {
		return nil, fmt.Errorf("mesh: %q: %w", cl.service, err)
	}
	return ep, nil
}

// hedgeDelay returns how long a hedged call waits before hedging.
func (g *guard) hedgeDelay() time.Duration {
	if g.hedge.Delay > 0 {
		return g.hedge.Delay
	}
	if d, ok := g.latency.p95(); ok {
		return d
	}
	return DefaultHedgeDelay
}

// latencyWindow keeps the latencies of the last successful calls of a
// service and their 95th percentile. It is safe for concurrent use.
type latencyWindow struct {
	mu      sync.Mutex
	samples [256]time.Duration
	n       int // samples recorded, ever
	p       time.Duration
	stale   int // samples since p was computed
}

func (w *latencyWindow) observe(d time.Duration) {
	w.mu.Lock()
	w.samples[w.n%len(w.samples)] = d
	w.n++
	w.stale++
	w.mu.Unlock()
}

// p95 returns the 95th percentile of the window, recomputed every 16
// samples, and false before there are enough samples.
func (w *latencyWindow) p95() (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.n < hedgeMinObservations {
		return 0, false
	}
	if w.p == 0 || w.stale >= 16 {
		n := min(w.n, len(w.samples))
		s := make([]time.Duration, n)
		copy(s, w.samples[:n])
		slices.Sort(s)
		w.p = s[(n*95)/100]
		w.stale = 0
	}
	return w.p, true
}
