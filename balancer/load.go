package balancer

import (
	"math"
	"sync/atomic"
	"time"
)

// Load is the load state of one endpoint: requests in flight, a
// peak-sensitive latency EWMA, recent outcomes and outlier ejection. A
// [Balancer] keeps one Load per endpoint ID across rebuilds.
//
// The zero value is ready to use, reads the wall clock and does not count
// requests in flight; a Balancer makes its Loads with its own clock
// ([WithClock]), counting in flight as its policy needs. Its methods are safe
// for concurrent use and take no lock.
type Load struct {
	// Read on the pick path: kept together at the front.
	inflight     atomic.Int64
	ewma         atomic.Uint64 // peak EWMA latency, ns as float64 bits; 0: no history
	stamp        atomic.Int64  // clock reading of the last EWMA update
	tau          atomic.Int64  // EWMA decay time constant in ns, set by PeakEWMA; 0: not tracked
	ejectedUntil atomic.Int64  // clock reading; ejected while now < ejectedUntil
	clk          *clock
	counted      bool // in-flight requests are counted (set before first use)

	consecutive atomic.Int64 // consecutive failures
	successes   atomic.Int64 // since the last outlier sweep
	failures    atomic.Int64 // since the last outlier sweep
	ejections   atomic.Int64 // ejection multiplier (times ejected, decays)

	det atomic.Pointer[detector] // the outlier detector watching this load

	// joined is the clock reading when the endpoint joined a balancer
	// that already had endpoints (for [WithSlowStart]); 0 for endpoints
	// of the first set and for Loads made elsewhere. Set before the Load
	// is published, read-only after.
	joined int64

	_ [128 - 13*8]byte // 128 bytes: in a slab, the hot fields share one cache line
}

// InFlight returns the number of picked requests not yet done. It is
// counted when the Balancer's policy balances on it ([LeastRequest],
// [PeakEWMA], wrappers around them, and every policy from outside this
// package); with the others it stays 0, so their picks and Done write no
// shared counter.
func (l *Load) InFlight() int64 { return l.inflight.Load() }

// Latency returns the peak-sensitive latency EWMA, decayed to now, and
// false when there is none: latency is tracked while a [PeakEWMA] policy
// balances the endpoint, once a request has completed.
func (l *Load) Latency() (time.Duration, bool) {
	bits := l.ewma.Load()
	if bits == 0 {
		return 0, false
	}
	return time.Duration(l.decayed(bits, l.clk.nanos(), 1/l.tauNanos())), true
}

// ConsecutiveFailures returns the number of failures since the last
// success, counted while an [Outlier] detector watches the endpoint.
func (l *Load) ConsecutiveFailures() int64 { return l.consecutive.Load() }

// Ejected reports whether the outlier detector has the endpoint ejected
// now. Ejection ends on its own when its time is up.
func (l *Load) Ejected() bool {
	u := l.ejectedUntil.Load()
	return u != 0 && l.clk.nanos() < u
}

func (l *Load) begin() {
	if l.counted {
		l.inflight.Add(1)
	}
}

func (l *Load) done(o Outcome) {
	if l.counted {
		l.inflight.Add(-1)
	}
	if o.Result == Dropped {
		return
	}
	// Latency is tracked for PeakEWMA (which sets tau), outcomes for an
	// Outlier detector; without either, Done is one atomic add.
	d := l.det.Load()
	tracked := l.tau.Load() != 0
	if d == nil && !tracked {
		return
	}
	now := l.clk.nanos()
	if tracked {
		l.clk.advance(now)
		l.observe(now, o.Latency)
	}
	if d == nil {
		return
	}
	var consecutive int64
	if o.Result == Success {
		l.successes.Add(1)
		if l.consecutive.Load() != 0 {
			l.consecutive.Store(0)
		}
	} else {
		l.failures.Add(1)
		consecutive = l.consecutive.Add(1)
	}
	d.observe(l, o.Result, consecutive, now)
}

func (l *Load) tauNanos() float64 {
	if t := l.tau.Load(); t > 0 {
		return float64(t)
	}
	return float64(DefaultDecay)
}

// sampleWeight is the least weight a latency below the estimate gets.
// Finagle's weight, 1 − exp(−elapsed/τ), is about 0 for an endpoint
// answering every millisecond, so one peak (a pause of the caller's
// process, which hits every endpoint at once) stayed in its estimate for
// about τ, and the endpoints that were really slow looked no worse than
// the ones that had answered during the pause. With this floor a lone
// peak fades within a few samples, while an endpoint that stays slow
// keeps renewing its own.
const sampleWeight = 0.3

// observe folds a latency into the peak EWMA (Finagle's PeakEwma): a
// latency above the estimate replaces it at once; below, the estimate
// moves towards it with weight max(1 − exp(−elapsed/tau), sampleWeight).
// Concurrent observations race on a CAS; a lost race after a few tries
// drops the sample.
func (l *Load) observe(now int64, lat time.Duration) {
	rtt := float64(max(lat, 1))
	tau := l.tauNanos()
	for range 4 {
		old := l.ewma.Load()
		next := rtt
		if old != 0 {
			cost := math.Float64frombits(old)
			if rtt <= cost {
				w := 1 - sampleWeight
				if x := float64(max(now-l.stamp.Load(), 0)) / tau; x > 0.3567 {
					w = min(w, math.Exp(-x)) // exp(-0.3567) = 0.7: the call only when it can matter
				}
				next = cost*w + rtt*(1-w)
			}
		}
		if l.ewma.CompareAndSwap(old, math.Float64bits(next)) {
			l.stamp.Store(now)
			return
		}
	}
}

// decayed returns the EWMA held in bits decayed towards zero for the time
// since its last update, as Finagle and linkerd2-proxy do when reading
// the cost: an endpoint that is not picked becomes cheap again and is
// probed.
func (l *Load) decayed(bits uint64, now int64, invTau float64) float64 {
	v := math.Float64frombits(bits)
	if dt := now - l.stamp.Load(); dt > 0 {
		x := float64(dt) * invTau
		if x < 1e-3 {
			return v * (1 - x) // exp(-x) within 5e-7, without the call
		}
		v *= math.Exp(-x)
	}
	return v
}

// clock reads an injected or the real time as nanoseconds since an epoch.
// A nil *clock reads the wall clock.
//
// coarse is a cheaper reading for the pick path: the latest time an
// outcome was reported, kept within a millisecond while outcomes arrive.
type clock struct {
	now   func() time.Time // nil: the monotonic clock since epoch
	epoch time.Time
	// onEject is the balancer's ejection hook ([WithEjectionHook]); the
	// clock is the one state every Load of a balancer shares.
	onEject func(Ejection)
	_       [64]byte // keep last off the line of the fields above
	latest  atomic.Int64
}

// coarseStep is how far the real time runs ahead of coarse readings
// before an outcome moves them on.
const coarseStep = int64(time.Millisecond)

// advance moves coarse readings on to now, at most once per coarseStep
// for real time (so outcomes on many cores rarely write the shared word).
func (c *clock) advance(now int64) {
	if c == nil {
		return
	}
	step := coarseStep
	if c.now != nil {
		step = 0 // an injected clock is followed exactly
	}
	if last := c.latest.Load(); last == 0 || now > last+step {
		c.latest.CompareAndSwap(last, now)
	}
}

// coarse returns the time of the latest outcome, or the time now when no
// outcome was reported yet.
func (c *clock) coarse() int64 {
	if c == nil {
		return c.nanos()
	}
	if t := c.latest.Load(); t != 0 {
		return t
	}
	return c.nanos()
}

func newClock(now func() time.Time, onEject func(Ejection)) *clock {
	if now == nil {
		return &clock{epoch: time.Now(), onEject: onEject}
	}
	return &clock{now: now, epoch: now(), onEject: onEject}
}

// ejected tells the balancer's ejection hook, if any, of e.
func (c *clock) ejected(e Ejection) {
	if c != nil && c.onEject != nil {
		c.onEject(e)
	}
}

func (c *clock) nanos() int64 {
	switch {
	case c == nil:
		return time.Now().UnixNano()
	case c.now == nil:
		return int64(time.Since(c.epoch))
	}
	return int64(c.now().Sub(c.epoch))
}
