// Package clocktest is a fake clock for weft's tests: time stands still
// until the test moves it, and timers fire when it does, so tests of
// waits (backoff, Retry-After, hedge delays, open breakers) never sleep
// through real time.
package clocktest

import (
	"sync"
	"testing"
	"time"
)

// Clock is a fake clock. Its zero value is not usable; call [New]. It is
// safe for concurrent use.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*timer
}

type timer struct {
	at time.Time
	c  chan time.Time
}

// New returns a clock that reads t0 until it is moved.
func New(t0 time.Time) *Clock { return &Clock{now: t0} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Timer returns a channel that receives the clock's time once the clock
// has been moved d past now, and a function that stops the timer. A d
// of zero or less fires at once.
func (c *Clock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &timer{at: c.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		t.c <- c.now
		return t.c, func() bool { return false }
	}
	c.timers = append(c.timers, t)
	return t.c, func() bool { return c.stop(t) }
}

func (c *Clock) stop(t *timer) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, x := range c.timers {
		if x == t {
			c.timers = append(c.timers[:i], c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves the clock d forward and fires the timers that are due.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	kept := c.timers[:0]
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			t.c <- c.now
			continue
		}
		kept = append(kept, t)
	}
	c.timers = kept
}

// Waiting returns the number of timers that have not fired or been
// stopped.
func (c *Clock) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// AwaitWaiting polls, up to 30 s, until at least n timers are waiting,
// and fails the test if they never are.
func (c *Clock) AwaitWaiting(t testing.TB, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.Waiting() < n {
		if time.Now().After(deadline) {
			t.Fatalf("clocktest: %d timers waiting after 30 s, want %d", c.Waiting(), n)
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for state
	}
}
