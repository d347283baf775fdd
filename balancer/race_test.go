package balancer_test

import (
	"errors"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/leaktest"
)

// window returns the endpoint set of generation g: IDs g..g+9, so each
// update removes the lowest ID and adds a new one.
func window(g int) []discovery.Endpoint {
	eps := make([]discovery.Endpoint, 10)
	for i := range eps {
		id := g + i
		eps[i] = discovery.Endpoint{
			ID:     strconv.Itoa(id),
			Addr:   "10.0.0.1:" + strconv.Itoa(1000+id%60000),
			Weight: uint32(id%3 + 1),
			Zone:   []string{"z1", "z2"}[id%2],
		}
		if id%3 == 0 {
			eps[i].Tags = []string{"canary"}
		}
	}
	return eps
}

// TestStormOfPicksRacingUpdates: under -race, pickers never see a panic,
// an unexpected error, or an endpoint that was not in a set current
// during their pick: generation g's set is published before gen = g, so a
// pick that starts after reading gen = before and ends before reading
// gen = after used a set of generation s in [before, after+1], whose IDs
// are in [s, s+9].
func TestStormOfPicksRacingUpdates(t *testing.T) {
	leaktest.Check(t)
	const updates = 300
	for _, p := range allPolicies() {
		t.Run(p.name, func(t *testing.T) {
			// A smaller Maglev table keeps 300 rebuilds quick under -race.
			b := balancer.New(p.new(balancer.WithTableSize(4099)))
			var gen atomic.Int64
			b.Update(window(0))
			var stop atomic.Bool
			var wg sync.WaitGroup
			var picks atomic.Int64
			errs := make(chan error, 4)
			for w := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					skipOdd := func(e *balancer.Endpoint) bool { return e.ID[len(e.ID)-1]%2 == 1 }
					for i := 0; !stop.Load(); i++ {
						info := balancer.Info{Method: strconv.Itoa(i % 64)}
						if i%3 == 0 {
							info.Skip = skipOdd
						}
						before := gen.Load()
						e, err := b.Pick(info)
						after := gen.Load()
						if err != nil {
							if errors.Is(err, balancer.ErrAllSkipped) && info.Skip != nil ||
								errors.Is(err, balancer.ErrNoEndpoints) {
								continue // the empty sets in between
							}
							errs <- err
							return
						}
						id, _ := strconv.Atoi(e.ID)
						if int64(id) < before || int64(id) > after+10 {
							errs <- errors.New("picked endpoint " + e.ID + " outside the sets of generations " +
								strconv.FormatInt(before, 10) + ".." + strconv.FormatInt(after+1, 10))
							return
						}
						if info.Skip != nil && info.Skip(e) {
							errs <- errors.New("picked skipped endpoint " + e.ID)
							return
						}
						r := balancer.Success
						if (i+w)%7 == 0 {
							r = balancer.Failure
						}
						e.Done(balancer.Outcome{Latency: time.Duration(id%5+1) * time.Millisecond, Result: r})
						picks.Add(1)
					}
				}()
			}
			deadline := time.Now().Add(3 * time.Second)
			for g := 1; g <= updates; g++ {
				// Let the pickers make some picks on every set (bounded
				// by the deadline on a loaded machine).
				for picks.Load() < int64(g*20) && time.Now().Before(deadline) {
					runtime.Gosched()
				}
				b.Update(window(g))
				gen.Store(int64(g))
				if g%50 == 0 {
					b.Update(nil) // empty sets in between
					b.Update(window(g))
				}
			}
			stop.Store(true)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if picks.Load() == 0 {
				t.Fatal("no pick succeeded")
			}
			t.Logf("%d picks across %d updates", picks.Load(), updates)
		})
	}
}
