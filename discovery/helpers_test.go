package discovery

import (
	"io"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"
)

// recorder is a subscriber callback that keeps every update it gets and
// lets a test wait for one that satisfies a condition.
type recorder struct {
	mu      sync.Mutex
	updates []Update
	changed chan struct{}
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{}, 1)} }

func (r *recorder) fn(u Update) {
	r.mu.Lock()
	r.updates = append(r.updates, u)
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []Update {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Update(nil), r.updates...)
}

func (r *recorder) last() (Update, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.updates) == 0 {
		return Update{}, false
	}
	return r.updates[len(r.updates)-1], true
}

// stateWait bounds a wait for a state, generous for a loaded 2-core
// machine: a test fails only when the state never comes.
const stateWait = 30 * time.Second

// waitFor waits until the latest update satisfies ok, failing the test
// after max. It returns that update and when it was seen.
func (r *recorder) waitFor(t testing.TB, max time.Duration, what string, ok func(Update) bool) (Update, time.Time) {
	t.Helper()
	u, at, err := r.waitErr(max, ok)
	if err != nil {
		t.Fatalf("waiting for %s: %v; updates: %+v", what, err, r.all())
	}
	return u, at
}

type timeoutError struct{ max time.Duration }

func (e timeoutError) Error() string { return "not seen within " + e.max.String() }

func (r *recorder) waitErr(max time.Duration, ok func(Update) bool) (Update, time.Time, error) {
	timer := time.NewTimer(max)
	defer timer.Stop()
	for {
		if u, have := r.last(); have && ok(u) {
			return u, time.Now(), nil
		}
		select {
		case <-r.changed:
		case <-timer.C:
			if u, have := r.last(); have && ok(u) {
				return u, time.Now(), nil
			}
			return Update{}, time.Time{}, timeoutError{max}
		}
	}
}

// ids returns the endpoint IDs of u in order.
func ids(u Update) []string {
	out := make([]string, len(u.Endpoints))
	for i, e := range u.Endpoints {
		out[i] = e.ID
	}
	return out
}

func hasIDs(want ...string) func(Update) bool {
	return func(u Update) bool {
		if u.Err != nil || len(u.Endpoints) != len(want) {
			return false
		}
		got := map[string]bool{}
		for _, e := range u.Endpoints {
			got[e.ID] = true
		}
		for _, w := range want {
			if !got[w] {
				return false
			}
		}
		return true
	}
}

// noKeepAlive is the transport of the tests' counting wrappers: no idle
// connection (and its goroutines) outlives a test.
var noKeepAlive = &http.Transport{DisableKeepAlives: true}

func newTextLogger(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }
