package balancer

import "time"

// EjectedFor returns how long the outlier detector keeps the endpoint
// ejected from now on: zero when it is not ejected. Like [Load.Ejected]
// it reads the Balancer's clock and writes nothing, so admin pages may
// call it at any time.
func (l *Load) EjectedFor() time.Duration {
	u := l.ejectedUntil.Load()
	if u == 0 {
		return 0
	}
	return time.Duration(max(u-l.clk.nanos(), 0))
}

// Outcomes returns the successes and failures recorded since the outlier
// detector's last sweep (every [WithInterval]), counted while an
// [Outlier] detector watches the endpoint; both are zero otherwise.
func (l *Load) Outcomes() (successes, failures int64) {
	return l.successes.Load(), l.failures.Load()
}
