package leaktest

import (
	"strings"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps the errors reported to it and
// runs cleanups when told.
type recorder struct {
	testing.TB
	errs     []string
	cleanups []func()
}

func (r *recorder) Helper()                   {}
func (r *recorder) Cleanup(f func())          { r.cleanups = append(r.cleanups, f) }
func (r *recorder) Errorf(f string, a ...any) { r.errs = append(r.errs, f) }
func (r *recorder) run() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
}

func TestCheck(t *testing.T) {
	defer func(w time.Duration) { wait = w }(wait)
	wait = 100 * time.Millisecond
	for _, tc := range []struct {
		name string
		leak bool
	}{
		{"goroutine ended", false},
		{"goroutine leaked", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &recorder{TB: t}
			Check(r)
			stop, done := make(chan struct{}), make(chan struct{})
			go func() { defer close(done); <-stop }()
			if !tc.leak {
				close(stop)
				<-done
			}
			r.run()
			if tc.leak {
				close(stop)
				<-done
			}
			if got := len(r.errs) > 0; got != tc.leak {
				t.Fatalf("reported %v, want %v", r.errs, tc.leak)
			}
			if tc.leak && !strings.Contains(r.errs[0], "outlived") {
				t.Fatalf("report %q", r.errs[0])
			}
		})
	}
}
