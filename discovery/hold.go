package discovery

import (
	"sync"
	"time"
)

// HoldOption configures [HoldLastSet].
type HoldOption interface{ applyHold(*holdConfig) }

type holdOptionFunc func(*holdConfig)

func (f holdOptionFunc) applyHold(c *holdConfig) { f(c) }

type holdConfig struct {
	afterFunc func(time.Duration, func()) (stop func() bool)
	now       func() time.Time
}

// WithHoldClock replaces the clock [HoldLastSet] reads (now, for
// [Update.HeldSince]) and the timer it arms to end a hold (afterFunc, with
// the semantics of [time.AfterFunc]: it calls f once, from a goroutine of
// its own, after d, unless the returned stop is called first and returns
// true). For tests and simulations; nil functions are ignored.
func WithHoldClock(now func() time.Time, afterFunc func(d time.Duration, f func()) (stop func() bool)) HoldOption {
	return holdOptionFunc(func(c *holdConfig) {
		if now != nil {
			c.now = now
		}
		if afterFunc != nil {
			c.afterFunc = afterFunc
		}
	})
}

// HoldLastSet returns a [Watcher] that delivers what w delivers, except
// that when a service's set becomes empty it keeps delivering the last
// non-empty set, marked with [Update.HeldSince], for up to hold; the
// empty set is delivered once hold has passed without a non-empty set
// coming back. A non-empty set ends the hold at once. This is the
// "static stability" of Consul's stale reads and of Envoy's panic mode:
// when every instance looks unhealthy at once, the likelier cause is the
// health signal (a check that fails everywhere, an agent that lost its
// state), and trying the last known instances beats failing every call.
//
// Without it (the default, and with hold ≤ 0, which returns w itself) an
// empty set is delivered as it is, and callers fail fast with no
// endpoint. Choose a hold shorter than the time a broken instance may
// keep receiving calls; errors of w ([Update.Err]) pass through either
// way.
//
// The returned Watcher keeps the [Watcher] contract: stop waits for the
// hold's timer as well.
func HoldLastSet(w Watcher, hold time.Duration, opts ...HoldOption) Watcher {
	if hold <= 0 || w == nil {
		return w
	}
	c := holdConfig{
		now: time.Now,
		afterFunc: func(d time.Duration, f func()) func() bool {
			return time.AfterFunc(d, f).Stop
		},
	}
	for _, o := range opts {
		if o != nil {
			o.applyHold(&c)
		}
	}
	return &holdWatcher{inner: w, hold: hold, cfg: c}
}

type holdWatcher struct {
	inner Watcher
	hold  time.Duration
	cfg   holdConfig
}

// Watch implements [Watcher].
func (h *holdWatcher) Watch(service string, fn func(Update)) (stop func(), err error) {
	return h.watch(fn, func(inner func(Update)) (func(), error) { return h.inner.Watch(service, inner) })
}

// WatchTarget implements [TargetWatcher]: a target's set is held as a
// service's is. It fails with [ErrNoTargets] when the wrapped watcher
// does not watch targets.
func (h *holdWatcher) WatchTarget(t Target, fn func(Update)) (stop func(), err error) {
	return h.watch(fn, func(inner func(Update)) (func(), error) { return watchTarget(h.inner, t, inner) })
}

// watch subscribes fn, through the hold, with subscribe's watch.
func (h *holdWatcher) watch(fn func(Update), subscribe func(func(Update)) (func(), error)) (stop func(), err error) {
	s := &holdSub{h: h, fn: fn}
	innerStop, err := subscribe(s.update)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			innerStop()
			s.stop()
		})
	}, nil
}

// holdSub is one subscription: deliveries from w's goroutine and from the
// hold's timer are serialised by mu.
type holdSub struct {
	h  *holdWatcher
	fn func(Update)

	mu      sync.Mutex
	last    []Endpoint // the last non-empty set; nil once a hold expired
	latest  Update     // the latest update of w
	since   time.Time  // when the current hold began; zero when not holding
	gen     int        // counts holds, so a late timer cannot end a newer one
	cancel  func() bool
	timers  sync.WaitGroup // the hold's timer, until it ran or was stopped
	stopped bool
}

func (s *holdSub) update(u Update) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.latest = u
	switch {
	case len(u.Endpoints) > 0:
		s.last = u.Endpoints
		s.endHold()
		s.fn(u)
	case s.last == nil:
		s.fn(u) // nothing to hold, or the hold is over
	default:
		if s.since.IsZero() {
			s.since = s.h.cfg.now()
			s.gen++
			gen := s.gen
			s.timers.Add(1)
			s.cancel = s.h.cfg.afterFunc(s.h.hold, func() { s.expire(gen) })
		}
		s.fn(Update{Service: u.Service, Endpoints: s.last, Err: u.Err, HeldSince: s.since})
	}
}

// expire ends the hold: the empty set goes out.
func (s *holdSub) expire(gen int) {
	defer s.timers.Done()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped || s.since.IsZero() || s.gen != gen {
		return
	}
	s.since, s.cancel, s.last = time.Time{}, nil, nil
	s.fn(s.latest)
}

// endHold stops the hold's timer, if any. s.mu is held.
func (s *holdSub) endHold() {
	if s.cancel != nil && s.cancel() {
		s.timers.Done()
	}
	s.since, s.cancel = time.Time{}, nil
}

func (s *holdSub) stop() {
	s.mu.Lock()
	s.stopped = true
	s.endHold()
	s.mu.Unlock()
	s.timers.Wait()
}
