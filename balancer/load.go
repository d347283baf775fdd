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
// The zero value is ready to use and reads the wall clock; a Balancer
// makes its Loads with its own clock ([WithClock]). Its methods are safe
// for concurrent use and take no lock.
type Load struct {
	inflight atomic.Int64

	// Peak EWMA of the latency, in nanoseconds as float64 bits; 0 means
	// no history yet. stamp is the clock reading of its last update.
	ewma  atomic.Uint64
	stamp atomic.Int64
	tau   atomic.Int64 // decay time constant in ns; 0 means DefaultDecay

	consecutive atomic.Int64 // consecutive failures
	successes   atomic.Int64 // since the last outlier sweep
	failures    atomic.Int64 // since the last outlier sweep

	ejectedUntil atomic.Int64 // clock reading; ejected while now < ejectedUntil
	ejections    atomic.Int64 // ejection multiplier (times ejected, decays)

	det atomic.Pointer[detector] // the outlier detector watching this load
	clk *clock
}

// InFlight returns the number of picked requests not yet done.
func (l *Load) InFlight() int64 { return l.inflight.Load() }

// Latency returns the peak-sensitive latency EWMA, decayed to now, and
// false when no request has completed yet.
func (l *Load) Latency() (time.Duration, bool) {
	bits := l.ewma.Load()
	if bits == 0 {
		return 0, false
	}
	return time.Duration(l.decayed(bits, l.clk.nanos())), true
}

// ConsecutiveFailures returns the number of failures since the last success.
func (l *Load) ConsecutiveFailures() int64 { return l.consecutive.Load() }

// Ejected reports whether the outlier detector has the endpoint ejected
// now. Ejection ends on its own when its time is up.
func (l *Load) Ejected() bool {
	u := l.ejectedUntil.Load()
	return u != 0 && l.clk.nanos() < u
}

func (l *Load) begin() { l.inflight.Add(1) }

func (l *Load) done(o Outcome) {
	l.inflight.Add(-1)
	if o.Result == Dropped {
		return
	}
	now := l.clk.nanos()
	l.observe(now, o.Latency)
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
	if d := l.det.Load(); d != nil {
		d.observe(l, o.Result, consecutive, now)
	}
}

func (l *Load) tauNanos() float64 {
	if t := l.tau.Load(); t > 0 {
		return float64(t)
	}
	return float64(DefaultDecay)
}

// observe folds a latency into the peak EWMA (Finagle's PeakEwma): a
// latency above the estimate replaces it at once; below, the estimate
// moves towards it with weight exp(-elapsed/tau). Concurrent observations
// race on a CAS; a lost race after a few tries drops the sample.
func (l *Load) observe(now int64, lat time.Duration) {
	rtt := float64(max(lat, 1))
	tau := l.tauNanos()
	for range 4 {
		old := l.ewma.Load()
		next := rtt
		if old != 0 {
			cost := math.Float64frombits(old)
			if rtt <= cost {
				w := math.Exp(-float64(max(now-l.stamp.Load(), 0)) / tau)
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
func (l *Load) decayed(bits uint64, now int64) float64 {
	v := math.Float64frombits(bits)
	if dt := now - l.stamp.Load(); dt > 0 {
		v *= math.Exp(-float64(dt) / l.tauNanos())
	}
	return v
}

// clock reads an injected or the real time as nanoseconds since an epoch.
// A nil *clock reads the wall clock.
type clock struct {
	now   func() time.Time // nil: the monotonic clock since epoch
	epoch time.Time
}

func newClock(now func() time.Time) *clock {
	if now == nil {
		return &clock{epoch: time.Now()}
	}
	return &clock{now: now, epoch: now()}
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
