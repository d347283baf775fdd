package breaker

// Counts are the calls a [Breaker] counted in its current window: the
// sliding [Settings.Window] while closed, the probes while half-open;
// none while open.
type Counts struct {
	// Requests is the number of calls admitted, excluded ones included.
	Requests uint32
	// Successes and Failures are the calls counted as such.
	Successes, Failures uint32
	// ConsecutiveFailures is the number of failures since the last
	// success.
	ConsecutiveFailures uint32
}

// Counts returns the calls counted in the breaker's current window. It
// takes the breaker's lock: it is for admin pages and tests, not for the
// call path.
func (b *Breaker) Counts() Counts {
	c := b.cb.Counts()
	return Counts{Requests: c.Requests, Successes: c.TotalSuccesses, Failures: c.TotalFailures, ConsecutiveFailures: c.ConsecutiveFailures}
}
