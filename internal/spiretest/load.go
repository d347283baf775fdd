package spiretest

import (
	"context"
	"math/big"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// X509Source opens go-spiffe's own Workload API source on the agent for
// the workload id (the agent gives this process the SVIDs of all its
// entries; the source serves id's) and waits up to 60 s until it serves
// it. The source is closed when the test ends.
func (a *Agent) X509Source(t testing.TB, id spiffeid.ID) *workloadapi.X509Source {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pick := func(svids []*x509svid.SVID) *x509svid.SVID {
		for _, s := range svids {
			if s.ID == id {
				return s
			}
		}
		return svids[0]
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(a.Addr())), workloadapi.WithDefaultX509SVIDPicker(pick))
	if err != nil {
		t.Fatalf("spiretest: X509Source for %s: %v\n%s", id, err, a.Log())
	}
	t.Cleanup(func() { src.Close() })
	for {
		if svid, err := src.GetX509SVID(); err == nil && svid.ID == id {
			return src
		}
		select {
		case <-src.Updated():
		case <-ctx.Done():
			t.Fatalf("spiretest: X509Source never served %s\n%s", id, a.Log())
		}
	}
}

// Rotation watches SVID sources for the rotation of their certificates.
// The agent sends every SVID again on any change, so a rotation is a
// certificate with a new serial number, not a new value.
type Rotation struct {
	srcs  []x509svid.Source
	first []*big.Int
}

// NewRotation records the serial numbers of the SVIDs the sources serve
// now.
func NewRotation(srcs ...x509svid.Source) *Rotation {
	r := &Rotation{srcs: srcs}
	for _, s := range srcs {
		r.first = append(r.first, serialOf(s))
	}
	return r
}

func serialOf(s x509svid.Source) *big.Int {
	svid, err := s.GetX509SVID()
	if err != nil || svid == nil || len(svid.Certificates) == 0 {
		return nil
	}
	return svid.Certificates[0].SerialNumber
}

// Done reports whether every source serves another certificate than when
// the Rotation was made.
func (r *Rotation) Done() bool {
	for i, s := range r.srcs {
		if now := serialOf(s); now == nil || r.first[i] == nil || now.Cmp(r.first[i]) == 0 {
			return false
		}
	}
	return true
}

// Wait polls until [Rotation.Done] or max has passed, and reports
// whether every source rotated.
func (r *Rotation) Wait(max time.Duration) bool {
	deadline := time.Now().Add(max)
	for !r.Done() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond) // poll interval of the rotation wait
	}
	return true
}

// Load makes calls without end, each of its functions from a goroutine
// of its own with a short pause between calls, and counts the failures.
type Load struct {
	calls, failures atomic.Int64
	first           atomic.Pointer[error]
	stop            chan struct{}
	wg              sync.WaitGroup
}

// StartLoad starts calling each of calls every pace (plus the call's own
// time), each call with a 10 s deadline, until [Load.Stop].
func StartLoad(pace time.Duration, calls ...func(context.Context) error) *Load {
	l := &Load{stop: make(chan struct{})}
	for _, call := range calls {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			t := time.NewTicker(pace)
			defer t.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-t.C:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := call(ctx)
				cancel()
				l.calls.Add(1)
				if err != nil {
					l.failures.Add(1)
					l.first.CompareAndSwap(nil, &err)
				}
			}
		}()
	}
	return l
}

// Calls returns how many calls have ended so far.
func (l *Load) Calls() int64 { return l.calls.Load() }

// WaitCalls waits until n more calls have ended, or max has passed.
func (l *Load) WaitCalls(n int64, max time.Duration) {
	target, deadline := l.calls.Load()+n, time.Now().Add(max)
	for l.calls.Load() < target && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // poll interval while the load runs
	}
}

// Stop ends the load, waits for the calls in flight, and returns how many
// calls were made, how many failed and the first failure.
func (l *Load) Stop() (calls, failures int64, first error) {
	close(l.stop)
	l.wg.Wait()
	if e := l.first.Load(); e != nil {
		first = *e
	}
	return l.calls.Load(), l.failures.Load(), first
}
