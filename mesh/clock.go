package mesh

import (
	"context"
	"time"
)

// Clock is the time a [Client] or [Server] reads: the current time (rate
// limits, retry budgets, Retry-After dates) and timers (backoff between
// retries, waits the server asked for, the hedge delay, per-try
// timeouts). Tests pass a fake one with [WithClock] so that nothing waits
// through real seconds; the default is the system clock.
//
// Deadlines of contexts are not read through the Clock: a context's
// deadline is wall-clock time, so the room left before it is too.
//
// Implementations must be safe for concurrent use.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// Timer returns a channel that receives once, when d has passed, and
	// a function that stops the timer (and reports whether it stopped it
	// before it fired). A d of zero or less fires at once.
	Timer(d time.Duration) (<-chan time.Time, func() bool)
}

// systemClock is the [Clock] of the time package.
type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) Timer(d time.Duration) (<-chan time.Time, func() bool) {
	t := time.NewTimer(d)
	return t.C, t.Stop
}

// clock is the Clock of a client or server with the waits built on it.
type clock struct{ Clock }

func newClock(c Clock) clock {
	if c == nil {
		return clock{systemClock{}}
	}
	return clock{c}
}

// timer is [Clock.Timer].
func (c clock) timer(d time.Duration) (<-chan time.Time, func() bool) {
	return c.Timer(d)
}

// sleep waits d, or until ctx ends; it returns ctx's error then.
func (c clock) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	ch, stop := c.Timer(d)
	defer stop()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// withTimeout is [context.WithTimeout] on the clock: with the system
// clock exactly that; with another clock the context is cancelled with
// [context.DeadlineExceeded] when the clock's timer fires.
func (c clock) withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if _, ok := c.Clock.(systemClock); ok {
		return context.WithTimeout(ctx, d)
	}
	tctx, cancel := context.WithCancelCause(ctx)
	fired, stop := c.Timer(d)
	go func() {
		defer stop()
		select {
		case <-fired:
			cancel(context.DeadlineExceeded)
		case <-tctx.Done():
		}
	}()
	return tctx, func() { cancel(context.Canceled) }
}
