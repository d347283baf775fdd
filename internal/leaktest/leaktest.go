// Package leaktest checks, per test, that no goroutine a test started
// outlives it, so that a leak names the test that caused it.
package leaktest

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// wait is how long [Check] waits for a test's goroutines to end before
// it reports them: goroutines that are stopping may need a while to be
// scheduled on a loaded machine.
var wait = 10 * time.Second

// Check registers a cleanup that fails t if a goroutine that was not
// running when Check was called is still running once t and its other
// cleanups are done, waiting up to 10 s for such goroutines to end. Call it first in a test, so that its cleanup runs
// last. opts add goleak options, such as goleak.IgnoreTopFunction for a
// known long-lived goroutine. Check is meant for tests that do not call
// t.Parallel: goroutines of tests running alongside would be counted.
func Check(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	opts = append(opts, goleak.IgnoreCurrent())
	t.Cleanup(func() {
		t.Helper()
		deadline := time.Now().Add(wait)
		for {
			// Find itself retries for a fraction of a second.
			err := goleak.Find(opts...)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("goroutines outlived the test: %v", err)
				return
			}
		}
	})
}
