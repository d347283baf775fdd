package discovery

import (
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"
)

// fakeTimers is an injected clock for HoldLastSet: armed timers wait
// until the test fires them.
type fakeTimers struct {
	mu      sync.Mutex
	now     time.Time
	pending []*fakeTimer
}

type fakeTimer struct {
	d     time.Duration
	f     func()
	state int // 0 armed, 1 fired, 2 stopped
}

func (c *fakeTimers) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeTimers) AfterFunc(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{d: d, f: f}
	c.pending = append(c.pending, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		if t.state != 0 {
			return false
		}
		t.state = 2
		return true
	}
}

// Advance moves the clock on by d and runs, on a goroutine of their own
// as time.AfterFunc does, the timers due; it waits for them.
func (c *fakeTimers) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due []func()
	for _, t := range c.pending {
		if t.state == 0 {
			if t.d -= d; t.d <= 0 {
				t.state = 1
				due = append(due, t.f)
			}
		}
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range due {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	wg.Wait()
}

func (c *fakeTimers) armed() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.pending {
		if t.state == 0 {
			n++
		}
	}
	return n
}

// TestHoldLastSet: an empty set is replaced by the last non-empty one,
// marked HeldSince, for the hold time; then the empty set goes out. A
// non-empty set ends the hold at once; without a hold, empty sets pass
// as they are (fail fast).
func TestHoldLastSet(t *testing.T) {
	leaktest.Check(t)
	a := Endpoint{ID: "a", Addr: "10.0.0.1:80"}
	b := Endpoint{ID: "b", Addr: "10.0.0.2:80"}
	static, err := NewStatic(map[string][]Endpoint{"svc": {a}})
	if err != nil {
		t.Fatal(err)
	}
	if got := HoldLastSet(static, 0); got != Watcher(static) {
		t.Errorf("HoldLastSet with no hold = %T, want the watcher itself (fail fast)", got)
	}
	clk := &fakeTimers{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	w := HoldLastSet(static, 10*time.Second, WithHoldClock(clk.Now, clk.AfterFunc), nil)
	r, stop := watch(t, w, "svc")
	defer stop()
	r.waitFor(t, 10*time.Second, "the first set", hasIDs("a"))

	// Empty: the last set is held.
	emptiedAt := clk.Now()
	if err := static.Set("svc"); err != nil {
		t.Fatal(err)
	}
	u, _ := r.waitFor(t, 10*time.Second, "the held set", func(u Update) bool { return !u.HeldSince.IsZero() })
	if !hasIDs("a")(u) || !u.HeldSince.Equal(emptiedAt) {
		t.Errorf("held update = %+v, want set [a] held since %v", u, emptiedAt)
	}
	clk.Advance(9 * time.Second)
	if u, _ := r.last(); !hasIDs("a")(u) {
		t.Errorf("before the hold ends: %+v, want [a] still", u)
	}
	// A non-empty set ends the hold at once and disarms its timer.
	if err := static.Set("svc", b); err != nil {
		t.Fatal(err)
	}
	u, _ = r.waitFor(t, 10*time.Second, "the new set", hasIDs("b"))
	if !u.HeldSince.IsZero() || clk.armed() != 0 {
		t.Errorf("after a non-empty set: %+v with %d timers armed", u, clk.armed())
	}
	clk.Advance(time.Hour) // the old timer must not fire into the new set
	if u, _ := r.last(); !hasIDs("b")(u) {
		t.Errorf("after the old hold's time: %+v, want [b]", u)
	}

	// Empty again, for longer than the hold: the empty set goes out.
	if err := static.Set("svc"); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, 10*time.Second, "the held set", func(u Update) bool { return hasIDs("b")(u) && !u.HeldSince.IsZero() })
	clk.Advance(10 * time.Second)
	u, _ = r.waitFor(t, 10*time.Second, "the empty set once the hold is over", func(u Update) bool { return len(u.Endpoints) == 0 })
	if !u.HeldSince.IsZero() || u.Err != nil {
		t.Errorf("after the hold: %+v, want a plain empty set", u)
	}
	// A subscriber that joins while the set is empty gets it empty: there
	// is nothing it saw to hold.
	r2, stop2 := watch(t, w, "svc")
	defer stop2()
	r2.waitFor(t, 10*time.Second, "the empty set", func(u Update) bool { return len(u.Endpoints) == 0 && u.HeldSince.IsZero() })
	stop()
	stop() // twice is fine
}
