package balancer

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Outlier returns a policy that wraps inner with outlier ejection
// (passive health checking, as Envoy and grpc-go do it):
//
//   - an endpoint is ejected after [WithConsecutiveFailures] failures in
//     a row (default 5), as the failing outcome is recorded;
//   - every [WithInterval] (default 10 s), endpoints whose success rate
//     is far below the others' are ejected ([WithSuccessRate]);
//   - an ejection lasts the base time × the number of times the endpoint
//     was ejected, capped ([WithEjectionTime], default 30 s and 300 s);
//     the multiplier goes down by one for every interval the endpoint
//     spends admitted. An ejected endpoint comes back on its own when its
//     time is up, without any goroutine or timer;
//   - at most [WithMaxEjected] of the endpoints (default 10%, at least
//     one) are ejected at once; further ejections are refused;
//   - when the share of endpoints not ejected falls below
//     [WithPanicThreshold] (default 50%), picks ignore ejection and
//     spread over all endpoints rather than pile onto a few.
//
// Ejected endpoints are hidden from inner through [Info.Skip], so every
// policy keeps its own fallback (P2C samples among the rest, a hash ring
// walks on). Time is the [Balancer]'s clock ([WithClock]). With nothing
// ejected, a pick costs one atomic load more than inner's; with some
// endpoints ejected and a caller's Skip set, the combined Skip comes from
// a sync.Pool, so picks still do not allocate.
//
// The detector's state (counts, ejections) lives in the endpoints' [Load]
// and follows them across rebuilds. Wrap the other wrappers with Outlier,
// not the reverse: Outlier(ZoneAware(zone, Subset(match, policy))).
func Outlier(inner Policy, opts ...Option) Policy {
	if inner == nil {
		inner = RoundRobin()
	}
	return &outlier{inner: inner, cfg: newConfig(opts)}
}

// Unwrap returns the policy the outlier detector wraps.
func (o *outlier) Unwrap() Policy { return o.inner }

type outlier struct {
	inner Policy
	cfg   config
}

func (o *outlier) readsInFlight() bool { return readsInFlight(o.inner) }

func (o *outlier) Build(eps []*Endpoint) Picker {
	var d *detector
	for _, e := range eps {
		if cand := e.Load.det.Load(); cand != nil && cand.owner == o {
			d = cand
			break
		}
	}
	if d == nil {
		d = &detector{owner: o, cfg: &o.cfg}
		d.nextSweep.Store(eps[0].Load.clk.nanos() + int64(o.cfg.interval))
	}
	d.setEndpoints(eps)
	return &outlierPicker{
		inner: o.inner.Build(eps),
		det:   d,
		clk:   eps[0].Load.clk,
		n:     len(eps),
	}
}

type outlierPicker struct {
	inner Picker
	det   *detector
	clk   *clock
	n     int
}

func (p *outlierPicker) Pick(info Info) (*Endpoint, error) {
	st := p.det.state.Load()
	if st == nil || len(st.until) == 0 {
		return p.inner.Pick(info)
	}
	now := p.clk.nanos()
	if now >= st.until[len(st.until)-1] {
		return p.inner.Pick(info) // every ejection is over
	}
	// until is sorted: the ejections still running are the tail after
	// the last one over.
	over, _ := slices.BinarySearch(st.until, now+1)
	ejected := len(st.until) - over
	if !info.NoPanic && float64(p.n-ejected) < p.det.cfg.panicThreshold*float64(p.n) {
		return p.inner.Pick(info) // panic: spread over all endpoints
	}
	if info.Skip == nil {
		info.Skip = skipEjected
		return p.inner.Pick(info)
	}
	s := skipPool.Get().(*ejectedOrSkipped)
	s.skip = info.Skip
	info.Skip = s.fn
	e, err := p.inner.Pick(info)
	s.skip = nil
	skipPool.Put(s)
	return e, err
}

func skipEjected(e *Endpoint) bool { return e.Load.Ejected() }

// ejectedOrSkipped combines ejection with a caller's Skip; fn is its
// method value, made once per pooled value.
type ejectedOrSkipped struct {
	skip func(*Endpoint) bool
	fn   func(*Endpoint) bool
}

func (s *ejectedOrSkipped) test(e *Endpoint) bool {
	return e.Load.Ejected() || s.skip(e)
}

var skipPool = sync.Pool{New: func() any {
	s := new(ejectedOrSkipped)
	s.fn = s.test
	return s
}}

// detector is the outlier detection state of one Balancer's endpoint set.
// Outcomes arrive concurrently through Load.done; ejection decisions and
// sweeps, which are rare, are serialised by mu. Picks read state only.
type detector struct {
	owner *outlier
	cfg   *config

	mu      sync.Mutex
	eps     []*Endpoint
	members map[*Load]struct{}
	rates   []float64 // sweep scratch

	state     atomic.Pointer[ejectState]
	nextSweep atomic.Int64
}

// ejectState lists the ends of the ejections of current endpoints,
// sorted; picks use it to know, without a lock, whether any ejection is
// running and how many.
type ejectState struct {
	until []int64
}

func (d *detector) setEndpoints(eps []*Endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.eps = eps
	d.members = make(map[*Load]struct{}, len(eps))
	for _, e := range eps {
		d.members[e.Load] = struct{}{}
		if e.Load.det.Load() != d {
			e.Load.det.Store(d)
		}
	}
	d.publish(eps[0].Load.clk.nanos())
}

// publish rebuilds the ejection state from the endpoints' loads. d.mu is held.
func (d *detector) publish(now int64) {
	var until []int64
	for _, e := range d.eps {
		if u := e.Load.ejectedUntil.Load(); u > now {
			until = append(until, u)
		}
	}
	slices.Sort(until)
	d.state.Store(&ejectState{until: until})
}

// observe is called by Load.done after each outcome that is not dropped.
func (d *detector) observe(l *Load, r Result, consecutive, now int64) {
	if r == Failure && consecutive >= d.cfg.consecutive && l.ejectedUntil.Load() <= now {
		d.eject(l, now)
	}
	if next := d.nextSweep.Load(); now >= next && d.nextSweep.CompareAndSwap(next, now+int64(d.cfg.interval)) {
		d.sweep(now)
	}
}

// eject ejects l unless it left the set, is ejected already, or the
// maximum share of ejected endpoints is reached.
func (d *detector) eject(l *Load, now int64) {
	d.mu.Lock()
	e, ok := d.ejectLocked(l, now)
	if ok {
		d.publish(now)
	}
	d.mu.Unlock()
	if ok {
		l.clk.ejected(e)
	}
}

// ejectLocked ejects l, reporting which endpoint for how long, unless l
// left the set, is ejected already, or the maximum share of ejected
// endpoints is reached. d.mu is held.
func (d *detector) ejectLocked(l *Load, now int64) (Ejection, bool) {
	if _, ok := d.members[l]; !ok || l.ejectedUntil.Load() > now {
		return Ejection{}, false
	}
	ejected := 0
	for _, e := range d.eps {
		if e.Load.ejectedUntil.Load() > now {
			ejected++
		}
	}
	if ejected >= max(1, int(d.cfg.maxEjected*float64(len(d.eps)))) {
		return Ejection{}, false
	}
	times := l.ejections.Add(1)
	dur := min(time.Duration(times)*d.cfg.baseEjection, d.cfg.maxEjection)
	if times > int64(d.cfg.maxEjection/d.cfg.baseEjection)+1 {
		l.ejections.Store(int64(d.cfg.maxEjection/d.cfg.baseEjection) + 1) // no overflow
	}
	l.ejectedUntil.Store(now + int64(dur))
	l.consecutive.Store(0)
	e := Ejection{Duration: dur}
	for _, ep := range d.eps {
		if ep.Load == l {
			e.ID = ep.ID
			break
		}
	}
	return e, true
}

// sweep runs once per interval: it decays the ejection multiplier of
// admitted endpoints and applies success-rate ejection.
func (d *detector) sweep(now int64) {
	d.mu.Lock()
	ejections := d.sweepLocked(now)
	var clk *clock
	if len(d.eps) > 0 {
		clk = d.eps[0].Load.clk
	}
	d.mu.Unlock()
	for _, e := range ejections {
		clk.ejected(e)
	}
}

// sweepLocked is sweep with d.mu held; it returns the ejections it made.
func (d *detector) sweepLocked(now int64) []Ejection {
	d.rates = d.rates[:0]
	for _, e := range d.eps {
		l := e.Load
		ok, failed := l.successes.Swap(0), l.failures.Swap(0)
		// Like Envoy, a multiplier goes down once per interval spent
		// admitted; readmission itself does not count.
		if l.ejectedUntil.Load() <= now-int64(d.cfg.interval) && l.ejections.Load() > 0 {
			l.ejections.Add(-1)
		}
		rate := -1.0
		if d.cfg.srMinRequests > 0 && ok+failed >= d.cfg.srMinRequests {
			rate = float64(ok) / float64(ok+failed)
		}
		d.rates = append(d.rates, rate)
	}
	if d.cfg.srMinRequests <= 0 {
		return nil
	}
	var n, sum, sq float64
	for _, r := range d.rates {
		if r >= 0 {
			n++
			sum += r
			sq += r * r
		}
	}
	if n < float64(d.cfg.srMinHosts) {
		return nil
	}
	mean := sum / n
	stdev := math.Sqrt(max(sq/n-mean*mean, 0))
	threshold := mean - d.cfg.srStdevFactor*stdev
	var ejections []Ejection
	for i, r := range d.rates {
		if r < 0 || r >= threshold {
			continue
		}
		if e, ok := d.ejectLocked(d.eps[i].Load, now); ok {
			ejections = append(ejections, e)
		}
	}
	if len(ejections) > 0 {
		d.publish(now)
	}
	return ejections
}
