package breaker

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"
)

// ErrCircuitOpen is returned when a circuit breaker refuses a call: it is
// open, or it is half-open and its probes are all taken. No I/O was done.
var ErrCircuitOpen = errors.New("breaker: circuit open")

// Result classifies the outcome of one call for a circuit breaker.
type Result uint8

// The results a call can have.
const (
	// Success: the callee answered (an application error is still an answer).
	Success Result = iota
	// Failure: the callee failed (transport error, 5xx, Unavailable...).
	Failure
	// Excluded: the outcome says nothing about the callee (the caller gave
	// up first); it counts neither way.
	Excluded
)

// State is the state of a circuit breaker.
type State uint8

// The states of a circuit breaker.
const (
	// Closed: calls flow; outcomes are counted against the trip policy.
	Closed State = iota
	// HalfOpen: a limited number of probe calls may test the callee.
	HalfOpen
	// Open: calls are refused until the open timeout passes.
	Open
)

// String returns "closed", "half-open" or "open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return "unknown"
}

func fromGobreaker(s gobreaker.State) State {
	switch s {
	case gobreaker.StateHalfOpen:
		return HalfOpen
	case gobreaker.StateOpen:
		return Open
	}
	return Closed
}

// Defaults of [Settings].
const (
	DefaultConsecutiveFailures = 5
	DefaultFailureRatio        = 0.5
	DefaultMinRequests         = 20
	DefaultWindow              = 10 * time.Second
	DefaultOpenTimeout         = 10 * time.Second
	DefaultHalfOpenProbes      = 1
)

// Settings configure circuit breakers. The zero value gives the defaults:
// trip after 5 consecutive failures, or when at least half of at least 20
// calls in a 10 s sliding window failed; stay open 10 s; then admit 1
// probe, which closes the breaker on success and re-opens it on failure.
type Settings struct {
	// ConsecutiveFailures trips the breaker after this many failures in a
	// row. Zero means [DefaultConsecutiveFailures].
	ConsecutiveFailures uint32
	// FailureRatio trips the breaker when this fraction of the calls in
	// the window failed, once the window holds MinRequests calls. Zero
	// means [DefaultFailureRatio]; a value above 1 turns the ratio off.
	FailureRatio float64
	// MinRequests is how many calls the window must hold before the
	// ratio is considered. Zero means [DefaultMinRequests].
	MinRequests uint32
	// Window is the sliding window over which calls are counted while
	// closed, in ten buckets. Zero means [DefaultWindow].
	Window time.Duration
	// OpenTimeout is how long the breaker stays open before it admits
	// probes. Zero means [DefaultOpenTimeout].
	OpenTimeout time.Duration
	// HalfOpenProbes is how many calls a half-open breaker admits; that
	// many consecutive successes close it. Zero means
	// [DefaultHalfOpenProbes].
	HalfOpenProbes uint32
	// OnStateChange, when not nil, is told of every state change. It is
	// called outside the breaker's lock, one change at a time and in
	// order, from the goroutine whose call caused the change; it may call
	// the breaker's methods but should not block.
	OnStateChange func(StateChange)
	// Now, when not nil, is the clock that times the open state (and
	// stamps [StateChange.At]): tests inject a fake one to move past
	// OpenTimeout without waiting. Nil means time.Now. The closed state's
	// sliding Window is gobreaker's and follows the real clock.
	Now func() time.Time
}

func (s Settings) withDefaults() Settings {
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if s.FailureRatio <= 0 {
		s.FailureRatio = DefaultFailureRatio
	}
	if s.MinRequests == 0 {
		s.MinRequests = DefaultMinRequests
	}
	if s.Window <= 0 {
		s.Window = DefaultWindow
	}
	if s.OpenTimeout <= 0 {
		s.OpenTimeout = DefaultOpenTimeout
	}
	if s.HalfOpenProbes == 0 {
		s.HalfOpenProbes = DefaultHalfOpenProbes
	}
	if s.Now == nil {
		s.Now = time.Now
	}
	return s
}

// StateChange reports that a breaker changed state.
type StateChange struct {
	// Name names the breaker: the endpoint ID for an endpoint's breaker,
	// the service name for a service's breaker.
	Name string
	// Service is the service the breaker belongs to.
	Service string
	// From and To are the old and new states.
	From, To State
	// At is when the change happened.
	At time.Time
}

// Breaker is one circuit breaker, a [gobreaker.CircuitBreaker] with
// weft's trip policy, outcome classes and state-change publication.
//
// A Breaker is safe for concurrent use. The zero value is not usable;
// build one with [New] or get one from a [Set].
type Breaker struct {
	cb      *gobreaker.CircuitBreaker[struct{}]
	name    string
	timeout time.Duration
	now     func() time.Time
	pub     *publisher

	// A mirror of the state, kept by the state-change hook, so that
	// [Breaker.Open] needs neither the breaker's lock nor the clock
	// while closed.
	state     atomic.Uint32
	openUntil atomic.Int64 // unix nanoseconds, on the breaker's clock

	// The open state is timed here, on the breaker's clock: gobreaker's
	// own open timeout is 1 ns, so gobreaker half-opens at the first call
	// it sees after tripping. Calls reach it only once openUntil has
	// passed, except those that raced the trip: gobreaker may half-open
	// for them early. Then the change is deferred (not mirrored nor
	// published) until openUntil passes, and the racing calls are refused
	// without running.
	deferMu  sync.Mutex  // serialises the publication of a deferred change
	deferred atomic.Bool // gobreaker half-opened before openUntil
}

// New returns a breaker named name (an endpoint ID, say) of service,
// configured by s.
func New(service, name string, s Settings) *Breaker {
	pub := &publisher{service: service}
	if s.OnStateChange != nil {
		pub.add(s.OnStateChange)
	}
	return newBreaker(name, s.withDefaults(), pub)
}

func newBreaker(name string, s Settings, pub *publisher) *Breaker {
	b := &Breaker{name: name, timeout: s.OpenTimeout, now: s.Now, pub: pub}
	consecutive, ratio, minReq := s.ConsecutiveFailures, s.FailureRatio, s.MinRequests
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         name,
		MaxRequests:  s.HalfOpenProbes,
		Interval:     s.Window,
		BucketPeriod: s.Window / 10,
		Timeout:      time.Nanosecond, // the open state is timed by b (see Breaker)
		ReadyToTrip: func(c gobreaker.Counts) bool {
			if c.ConsecutiveFailures >= consecutive {
				return true
			}
			n := c.TotalSuccesses + c.TotalFailures
			return n >= minReq && ratio <= 1 && float64(c.TotalFailures) >= ratio*float64(n)
		},
		// Runs under gobreaker's lock: only update the mirror and queue
		// the event; listeners run after the lock is released.
		OnStateChange: b.onStateChange,
		IsSuccessful:  func(err error) bool { return err == nil },
		IsExcluded:    func(err error) bool { return err == errExcluded || err == errStillOpen },
	})
	return b
}

var (
	errFailure  = errors.New("breaker: failure")
	errExcluded = errors.New("breaker: excluded")
	// errStillOpen is the outcome of a call gobreaker admitted although
	// the breaker's clock says it is still open: it did not run.
	errStillOpen = errors.New("breaker: still open")
)

var resultErr = [...]error{Success: nil, Failure: errFailure, Excluded: errExcluded}

func (b *Breaker) onStateChange(_ string, from, to gobreaker.State) {
	now := b.now()
	t := fromGobreaker(to)
	switch {
	case t == Open:
		b.openUntil.Store(now.Add(b.timeout).UnixNano())
	case t == HalfOpen && b.stillOpen(now):
		// A call that raced the trip made gobreaker half-open early.
		b.deferred.Store(true)
		return
	}
	b.state.Store(uint32(t))
	b.pub.queue(StateChange{Name: b.name, Service: b.pub.service, From: fromGobreaker(from), To: t, At: now})
}

// stillOpen reports whether the breaker's open timeout has yet to pass at
// now.
func (b *Breaker) stillOpen(now time.Time) bool { return now.UnixNano() < b.openUntil.Load() }

// gate reports whether the breaker is open on its own clock, so that a
// call must be refused without asking gobreaker. Once the open timeout
// has passed, it publishes a half-open change that gobreaker made early.
func (b *Breaker) gate() (open bool) {
	if State(b.state.Load()) != Open {
		return false
	}
	now := b.now()
	if b.stillOpen(now) {
		return true
	}
	if b.deferred.Load() {
		b.deferMu.Lock()
		if b.deferred.Load() {
			b.state.Store(uint32(HalfOpen))
			b.pub.queue(StateChange{Name: b.name, Service: b.pub.service, From: Open, To: HalfOpen, At: now})
			b.deferred.Store(false)
		}
		b.deferMu.Unlock()
	}
	return false
}

// Name returns the breaker's name.
func (b *Breaker) Name() string { return b.name }

// Do runs fn if the breaker admits a call and counts the result fn
// returns. It returns [ErrCircuitOpen], without running fn, when the
// breaker is open or half-open with every probe taken. Do does not
// allocate.
func (b *Breaker) Do(fn func() Result) error {
	if b.gate() {
		b.pub.flush()
		return ErrCircuitOpen
	}
	_, err := b.cb.Execute(func() (struct{}, error) {
		// A call that raced the trip: gobreaker may admit it as a probe.
		if b.gate() {
			return struct{}{}, errStillOpen
		}
		r := fn()
		if int(r) >= len(resultErr) {
			r = Excluded
		}
		return struct{}{}, resultErr[r]
	})
	b.pub.flush()
	if err == gobreaker.ErrOpenState || err == gobreaker.ErrTooManyRequests || err == errStillOpen {
		return ErrCircuitOpen
	}
	return nil
}

// Record counts a call that was made without asking the breaker first
// (a stream, say): as if [Breaker.Do] had run a call with result r. It
// reports false when the breaker would have refused the call; then r is
// not counted.
func (b *Breaker) Record(r Result) bool {
	return b.Do(func() Result { return r }) == nil
}

// State returns the breaker's state, moving an open breaker whose
// timeout has passed to half-open.
func (b *Breaker) State() State {
	if b.gate() {
		b.pub.flush()
		return Open
	}
	s := fromGobreaker(b.cb.State())
	b.pub.flush()
	if s != Closed && State(b.state.Load()) == Open {
		// gobreaker half-opened early for a call that raced a trip.
		return Open
	}
	return s
}

// Open reports whether the breaker is open and would refuse a call now.
// A half-open breaker is not open (it may still admit a probe). Open is
// cheap enough for every pick: while the breaker is closed it is one
// atomic load and does not read the clock.
func (b *Breaker) Open() bool {
	if State(b.state.Load()) != Open {
		return false
	}
	return b.stillOpen(b.now())
}

// publisher delivers the state changes of a set of breakers to its
// listeners, outside the breakers' locks and in order.
type publisher struct {
	service   string
	listeners atomic.Pointer[[]*func(StateChange)]
	lmu       sync.Mutex // serialises listener changes

	pending atomic.Int32
	qmu     sync.Mutex // guards q; a leaf lock taken under gobreaker's lock
	q       []StateChange
	deliver sync.Mutex // held while listeners run
}

func (p *publisher) add(fn func(StateChange)) (remove func()) {
	f := &fn
	p.lmu.Lock()
	defer p.lmu.Unlock()
	var cur []*func(StateChange)
	if l := p.listeners.Load(); l != nil {
		cur = *l
	}
	next := append(append([]*func(StateChange){}, cur...), f)
	p.listeners.Store(&next)
	return func() {
		p.lmu.Lock()
		defer p.lmu.Unlock()
		cur := *p.listeners.Load()
		next := make([]*func(StateChange), 0, len(cur))
		for _, g := range cur {
			if g != f {
				next = append(next, g)
			}
		}
		p.listeners.Store(&next)
	}
}

func (p *publisher) queue(c StateChange) {
	p.qmu.Lock()
	p.q = append(p.q, c)
	p.qmu.Unlock()
	p.pending.Add(1)
}

// flush delivers queued changes. If another goroutine is delivering, it
// will pick them up before it stops.
func (p *publisher) flush() {
	for p.pending.Load() > 0 {
		if !p.deliver.TryLock() {
			return
		}
		p.qmu.Lock()
		q := p.q
		p.q = nil
		p.pending.Add(-int32(len(q)))
		p.qmu.Unlock()
		if l := p.listeners.Load(); l != nil {
			for _, c := range q {
				for _, fn := range *l {
					(*fn)(c)
				}
			}
		}
		p.deliver.Unlock()
	}
}
