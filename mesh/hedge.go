package mesh

import (
	"slices"
	"sync"
	"time"
)

// hedgeDelay returns how long a call hedged by p waits before hedging:
// p's delay, or the service's observed p95 latency.
func (g *guard) hedgeDelay(p *HedgePolicy) time.Duration {
	if p.Delay > 0 {
		return p.Delay
	}
	if g.latency != nil {
		if d, ok := g.latency.p95(); ok {
			return d
		}
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
