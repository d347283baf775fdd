package balancer_test

import (
	"strconv"
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/leaktest"
)

// weighted returns endpoints with the given weights.
func weighted(ws ...uint32) []discovery.Endpoint {
	eps := endpoints(len(ws))
	for i, w := range ws {
		eps[i].Weight = w
	}
	return eps
}

func shares(eps []discovery.Endpoint, useWeights bool) []float64 {
	out := make([]float64, len(eps))
	var sum float64
	for i, e := range eps {
		w := 1.0
		if useWeights {
			w = float64(e.EffectiveWeight())
		}
		out[i] = w
		sum += w
	}
	for i := range out {
		out[i] /= sum
	}
	return out
}

func count(t *testing.T, b *balancer.Balancer, eps []discovery.Endpoint, picks int, info func(int) balancer.Info) []int {
	t.Helper()
	idx := map[string]int{}
	for i, e := range eps {
		idx[e.ID] = i
	}
	counts := make([]int, len(eps))
	for i := range picks {
		e, err := b.Pick(info(i))
		if err != nil {
			t.Fatal(err)
		}
		counts[idx[e.ID]]++
		e.Done(balancer.Outcome{Result: balancer.Dropped})
	}
	return counts
}

// TestDistributionChiSquare checks that each policy's shares match the
// expected ones: Pearson's chi-square statistic below its p = 0.001
// critical value, with a fixed seed.
func TestDistributionChiSquare(t *testing.T) {
	leaktest.Check(t)
	uniform := endpoints(10)
	skewed := weighted(1, 2, 3, 4, 10, 0, 5, 25)
	cases := []struct {
		name       string
		policy     balancer.Policy
		eps        []discovery.Endpoint
		useWeights bool
	}{
		{"RoundRobin", balancer.RoundRobin(balancer.WithSeed(1)), uniform, false},
		{"RoundRobin ignores weights", balancer.RoundRobin(balancer.WithSeed(1)), skewed, false},
		{"WeightedRoundRobin", balancer.WeightedRoundRobin(balancer.WithSeed(1)), skewed, true},
		{"WeightedRoundRobin equal", balancer.WeightedRoundRobin(balancer.WithSeed(1)), uniform, true},
		{"Random", balancer.Random(balancer.WithSeed(1)), uniform, false},
		{"Random ignores weights", balancer.Random(balancer.WithSeed(2)), skewed, false},
		{"WeightedRandom", balancer.WeightedRandom(balancer.WithSeed(3)), skewed, true},
		{"LeastRequest idle", balancer.LeastRequest(balancer.WithSeed(4)), uniform, false},
		{"RingHash weighted", balancer.RingHash(methodKey, balancer.WithSeed(5), balancer.WithRingSize(1<<16)), weighted(1, 2, 3, 4), true},
		{"Maglev weighted", balancer.Maglev(methodKey, balancer.WithSeed(6)), weighted(1, 2, 3, 4), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := balancer.New(c.policy)
			b.Update(c.eps)
			const picks = 100_000
			counts := count(t, b, c.eps, picks, func(i int) balancer.Info {
				return balancer.Info{Method: "user-" + strconv.Itoa(i)}
			})
			stat, crit := chiSquare(counts, shares(c.eps, c.useWeights))
			t.Logf("counts %v: chi-square %.2f (critical %.2f)", counts, stat, crit)
			if stat > crit {
				t.Errorf("shares %v do not match: chi-square %.2f > %.2f", counts, stat, crit)
			}
		})
	}
}

// TestWeightedRoundRobinIsSmooth checks that no endpoint gets a long run
// of consecutive picks: with weights 5:1:1, the longest run of the heavy
// endpoint is at most its ideal spacing allows (nginx's smooth sequence
// has runs of 2, and across cycles at most 4).
func TestWeightedRoundRobinIsSmooth(t *testing.T) {
	leaktest.Check(t)
	eps := weighted(5, 1, 1)
	b := balancer.New(balancer.WeightedRoundRobin(balancer.WithSeed(9)))
	b.Update(eps)
	run, longest := 0, 0
	var last string
	for range 7000 {
		e, _ := b.Pick(balancer.Info{})
		e.Done(balancer.Outcome{Result: balancer.Dropped})
		if e.ID == last {
			run++
		} else {
			run = 1
		}
		last = e.ID
		longest = max(longest, run)
	}
	t.Logf("longest run of one endpoint: %d", longest)
	if longest > 4 {
		t.Errorf("longest run %d > 4: the schedule is bursty", longest)
	}
}

// keyMap maps keys to endpoint IDs through b.
func keyMap(t *testing.T, b *balancer.Balancer, keys int) map[string]string {
	t.Helper()
	m := make(map[string]string, keys)
	for i := range keys {
		k := "key-" + strconv.Itoa(i)
		e, err := b.Pick(balancer.Info{Method: k})
		if err != nil {
			t.Fatal(err)
		}
		e.Done(balancer.Outcome{Result: balancer.Dropped})
		m[k] = e.ID
	}
	return m
}

// TestConsistentHashKeyMovement: adding or removing one of N endpoints
// moves about 1/N of the keys; keys are stable while the set is not
// changed; a rebuild of the same set changes nothing.
func TestConsistentHashKeyMovement(t *testing.T) {
	leaktest.Check(t)
	const keys = 20_000
	for _, c := range []struct {
		name   string
		new    func() balancer.Policy
		slack  float64 // allowed moved share, in units of 1/N
		strict bool    // only keys to or from the changed endpoint move
	}{
		{"RingHash", func() balancer.Policy { return balancer.RingHash(methodKey) }, 1.5, true},
		{"Maglev", func() balancer.Policy { return balancer.Maglev(methodKey) }, 1.5, false},
	} {
		for _, n := range []int{5, 10, 50} {
			t.Run(c.name+"/N="+strconv.Itoa(n), func(t *testing.T) {
				b := balancer.New(c.new())
				b.Update(endpoints(n))
				before := keyMap(t, b, keys)
				if again := keyMap(t, b, keys); !equalMaps(before, again) {
					t.Fatal("keys moved without a change of the set")
				}
				b.Update(endpoints(n)) // rebuild, same set
				if again := keyMap(t, b, keys); !equalMaps(before, again) {
					t.Fatal("keys moved on a rebuild of the same set")
				}
				other := balancer.New(c.new()) // another client, same set
				other.Update(endpoints(n))
				if again := keyMap(t, other, keys); !equalMaps(before, again) {
					t.Fatal("two balancers map the same keys differently")
				}

				b.Update(endpoints(n + 1))
				added := keyMap(t, b, keys)
				movedAdd, toNew := 0, 0
				newID := "ep-" + strconv.Itoa(n)
				for k, id := range added {
					if id != before[k] {
						movedAdd++
						if id == newID {
							toNew++
						}
					}
				}
				b.Update(endpoints(n + 1)[1:]) // remove ep-0
				removed := keyMap(t, b, keys)
				movedRemove, fromGone := 0, 0
				for k, id := range removed {
					if id != added[k] {
						movedRemove++
						if added[k] == "ep-0" {
							fromGone++
						}
					}
				}
				addShare := float64(movedAdd) / keys * float64(n+1)
				removeShare := float64(movedRemove) / keys * float64(n+1)
				t.Logf("add: %.2f/N of keys moved (%d of %d to the new endpoint); remove: %.2f/N moved (%d of %d from the removed one)",
					addShare, toNew, movedAdd, removeShare, fromGone, movedRemove)
				if addShare > c.slack || addShare < 0.5 {
					t.Errorf("adding 1 of %d moved %.2f/N of the keys, want within [0.5, %.1f]", n+1, addShare, c.slack)
				}
				if removeShare > c.slack || removeShare < 0.5 {
					t.Errorf("removing 1 of %d moved %.2f/N of the keys, want within [0.5, %.1f]", n+1, removeShare, c.slack)
				}
				if c.strict && (toNew != movedAdd || fromGone != movedRemove) {
					t.Errorf("keys moved between endpoints that stayed: %d/%d on add, %d/%d on remove", movedAdd-toNew, movedAdd, movedRemove-fromGone, movedRemove)
				}
				if fromGone != countID(added, "ep-0") {
					t.Errorf("%d keys of the removed endpoint moved, want all %d", fromGone, countID(added, "ep-0"))
				}
			})
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func countID(m map[string]string, id string) int {
	n := 0
	for _, v := range m {
		if v == id {
			n++
		}
	}
	return n
}
