package breaker

import (
	"context"
	"errors"
	"math"
	"sync"
	"time"
)

// ErrShed is returned when a concurrency limit refuses a call: a
// sheddable call found too many calls in flight, or a critical call found
// the limit reached and could not wait for a slot.
var ErrShed = errors.New("breaker: load shed")

// Priority is the class of a call for load shedding.
type Priority uint8

// The priority classes. The zero value is Sheddable.
const (
	// Sheddable calls are admitted only while there is headroom, and are
	// the first refused under load.
	Sheddable Priority = iota
	// Critical calls may use the whole limit, may wait briefly for a
	// slot, and are handed freed slots before any sheddable call.
	Critical
)

// String returns "sheddable" or "critical".
func (p Priority) String() string {
	if p == Critical {
		return "critical"
	}
	return "sheddable"
}

// ParsePriority parses "critical" (any case); anything else is
// [Sheddable].
func ParsePriority(s string) Priority {
	if len(s) == len("critical") && (s == "critical" || equalFoldASCII(s, "critical")) {
		return Critical
	}
	return Sheddable
}

func equalFoldASCII(a, b string) bool {
	for i := 0; i < len(a); i++ {
		c := a[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != b[i] {
			return false
		}
	}
	return true
}

// Defaults of [ConcurrencySettings].
const (
	DefaultConcurrency     = 100
	DefaultCriticalReserve = 0.2
	DefaultCriticalWait    = 100 * time.Millisecond
)

// ConcurrencySettings configure a [ConcurrencyLimiter]. The zero value
// gives the defaults: 100 calls in flight, the last 20% of them reserved
// for critical calls, which may wait up to 100 ms for a slot.
type ConcurrencySettings struct {
	// Limit is the most calls in flight. Zero means [DefaultConcurrency].
	// With Adaptive set, it is the starting limit.
	Limit int
	// CriticalReserve is the fraction of the limit that only critical
	// calls may use: sheddable calls are refused once in-flight calls
	// reach Limit × (1 − CriticalReserve). Zero means
	// [DefaultCriticalReserve]; a negative value means no reserve.
	CriticalReserve float64
	// CriticalWait is how long a critical call may queue for a slot when
	// the limit is reached (bounded by its context). Zero means
	// [DefaultCriticalWait]; a negative value means no queueing.
	CriticalWait time.Duration
	// Adaptive, when not nil, adjusts the limit to observed latency.
	Adaptive *AIMD
}

// AIMD adapts a concurrency limit to latency: each call completing
// within Target while the limiter is busy adds 1/limit to the limit
// (about +1 per round of calls); a call slower than Target, or failed,
// multiplies it by Backoff (at most once per Target). The limit stays in
// [Min, Max]. In the zero value, Target is zero, so every call counts as
// slow and the limit sinks to Min: set Target.
type AIMD struct {
	// Min and Max bound the limit. Zero Min means 1; zero Max means
	// 10 × the starting limit.
	Min, Max int
	// Target is the latency above which the limit is cut.
	Target time.Duration
	// Backoff is the factor applied on a cut. Zero means 0.9.
	Backoff float64
}

// ConcurrencyLimiter caps the calls in flight, with priority classes:
// sheddable calls get only the part of the limit outside the critical
// reserve and are refused at once (fast 503 / Unavailable); critical
// calls may use the whole limit and briefly queue for a slot, and a freed
// slot goes to a waiting critical call first.
//
// A ConcurrencyLimiter is safe for concurrent use; an admitted call takes
// one uncontended lock and does not allocate. The zero value is not
// usable; build one with [NewConcurrencyLimiter].
type ConcurrencyLimiter struct {
	reserve float64
	wait    time.Duration
	aimd    *AIMD

	mu       sync.Mutex
	limit    float64
	inflight int
	waiters  []*waiter // critical calls waiting, oldest first
	lastCut  time.Time
}

type waiter struct {
	ch      chan struct{}
	granted bool
}

// NewConcurrencyLimiter returns a limiter configured by s.
func NewConcurrencyLimiter(s ConcurrencySettings) *ConcurrencyLimiter {
	if s.Limit <= 0 {
		s.Limit = DefaultConcurrency
	}
	if s.CriticalReserve == 0 {
		s.CriticalReserve = DefaultCriticalReserve
	}
	if s.CriticalWait == 0 {
		s.CriticalWait = DefaultCriticalWait
	}
	l := &ConcurrencyLimiter{
		reserve: min(max(s.CriticalReserve, 0), 1),
		wait:    max(s.CriticalWait, 0),
		limit:   float64(s.Limit),
	}
	if s.Adaptive != nil {
		a := *s.Adaptive
		if a.Min <= 0 {
			a.Min = 1
		}
		if a.Max <= 0 {
			a.Max = 10 * s.Limit
		}
		a.Max = max(a.Max, a.Min)
		if a.Backoff <= 0 || a.Backoff >= 1 {
			a.Backoff = 0.9
		}
		l.aimd = &a
		l.limit = min(max(l.limit, float64(a.Min)), float64(a.Max))
	}
	return l
}

// Limit returns the current limit.
func (l *ConcurrencyLimiter) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.limit)
}

// InFlight returns the number of admitted calls not yet released.
func (l *ConcurrencyLimiter) InFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inflight
}

// Acquire admits a call of priority p or returns [ErrShed]. A critical
// call may wait for a slot up to the configured wait or until ctx ends.
// Every nil return must be matched by one [ConcurrencyLimiter.Release].
func (l *ConcurrencyLimiter) Acquire(ctx context.Context, p Priority) error {
	l.mu.Lock()
	limit := int(l.limit)
	if p == Critical {
		if l.inflight < limit {
			l.inflight++
			l.mu.Unlock()
			return nil
		}
	} else if l.inflight < int(math.Ceil(float64(limit)*(1-l.reserve))) && len(l.waiters) == 0 {
		l.inflight++
		l.mu.Unlock()
		return nil
	}
	if p != Critical || l.wait <= 0 {
		l.mu.Unlock()
		return ErrShed
	}
	w := &waiter{ch: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()

	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case <-w.ch:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.granted {
		return nil
	}
	for i, x := range l.waiters {
		if x == w {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			break
		}
	}
	return ErrShed
}

// Release ends an admitted call that took rtt; ok is false when it
// failed. With an adaptive limit, rtt and ok move the limit.
func (l *ConcurrencyLimiter) Release(rtt time.Duration, ok bool) {
	l.mu.Lock()
	if a := l.aimd; a != nil {
		if !ok || rtt > a.Target {
			now := time.Now()
			if now.Sub(l.lastCut) >= a.Target {
				l.lastCut = now
				l.limit = max(l.limit*a.Backoff, float64(a.Min))
			}
		} else if float64(l.inflight) >= l.limit/2 {
			l.limit = min(l.limit+1/l.limit, float64(a.Max))
		}
	}
	// Hand the slot to the oldest waiting critical call, if the limit
	// still allows it.
	if len(l.waiters) > 0 && l.inflight <= int(l.limit) {
		w := l.waiters[0]
		l.waiters[0] = nil
		l.waiters = l.waiters[1:]
		w.granted = true
		close(w.ch)
		l.mu.Unlock()
		return
	}
	l.inflight--
	l.mu.Unlock()
}
