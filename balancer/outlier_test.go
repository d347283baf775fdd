package balancer_test

import (
	"testing"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/leaktest"
)

// picksOf returns how many of n picks went to each endpoint.
func picksOf(t *testing.T, b *balancer.Balancer, n int) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for i := range n {
		e, err := b.Pick(balancer.Info{Method: keyOf(i)})
		if err != nil {
			t.Fatalf("pick: %v", err)
		}
		seen[e.ID]++
		e.Done(balancer.Outcome{Latency: time.Millisecond, Result: balancer.Success})
	}
	return seen
}

func TestOutlierConsecutiveFailuresEjectAndReadmit(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.Outlier(balancer.RoundRobin()), clk.option())
	b.Update(endpoints(10))
	l := loadOf(b, "ep-1")

	failAll(t, b, "ep-1", 4)
	if l.Ejected() {
		t.Fatal("ejected after 4 failures, threshold is 5")
	}
	// A success resets the count.
	only := func(e *balancer.Endpoint) bool { return e.ID != "ep-1" }
	e, _ := b.Pick(balancer.Info{Skip: only})
	e.Done(balancer.Outcome{Result: balancer.Success})
	failAll(t, b, "ep-1", 4)
	if l.Ejected() {
		t.Fatal("ejected after a success and 4 failures")
	}
	failAll(t, b, "ep-1", 1)
	if !l.Ejected() {
		t.Fatal("not ejected after 5 consecutive failures")
	}
	if got := picksOf(t, b, 1000)["ep-1"]; got != 0 {
		t.Fatalf("ejected endpoint got %d picks", got)
	}
	// The first ejection lasts the base time, 30 s.
	clk.Advance(30*time.Second - time.Nanosecond)
	if !l.Ejected() || picksOf(t, b, 100)["ep-1"] != 0 {
		t.Fatal("readmitted before 30 s")
	}
	clk.Advance(time.Nanosecond)
	if l.Ejected() {
		t.Fatal("still ejected after 30 s")
	}
	if got := picksOf(t, b, 100)["ep-1"]; got != 10 {
		t.Fatalf("readmitted endpoint got %d of 100 round-robin picks, want 10", got)
	}
	// The second ejection lasts twice as long.
	failAll(t, b, "ep-1", 5)
	clk.Advance(60*time.Second - time.Nanosecond)
	if !l.Ejected() {
		t.Fatal("second ejection ended before 60 s")
	}
	clk.Advance(time.Nanosecond)
	if l.Ejected() {
		t.Fatal("second ejection lasted more than 60 s")
	}
}

func TestOutlierEjectionTimeIsCapped(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.Outlier(balancer.RoundRobin(), balancer.WithEjectionTime(30*time.Second, 100*time.Second)), clk.option())
	b.Update(endpoints(10))
	l := loadOf(b, "ep-2")
	for i, want := range []time.Duration{30, 60, 90, 100, 100, 100} {
		failAll(t, b, "ep-2", 5)
		if !l.Ejected() {
			t.Fatalf("ejection %d did not happen", i+1)
		}
		clk.Advance(want*time.Second - 1)
		if !l.Ejected() {
			t.Fatalf("ejection %d ended before %v s", i+1, want)
		}
		clk.Advance(1)
		if l.Ejected() {
			t.Fatalf("ejection %d lasted more than %v s", i+1, want)
		}
	}
}

func TestOutlierMultiplierDecaysWhileHealthy(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.Outlier(balancer.RoundRobin(), balancer.WithSuccessRate(0, 0, 0)), clk.option())
	b.Update(endpoints(10))
	l := loadOf(b, "ep-3")
	failAll(t, b, "ep-3", 5) // 1st: 30 s
	clk.Advance(30 * time.Second)
	failAll(t, b, "ep-3", 5) // 2nd: 60 s
	clk.Advance(60 * time.Second)
	// Three healthy intervals bring the multiplier back to zero; a sweep
	// runs on the first outcome after each interval.
	for range 3 {
		clk.Advance(balancer.DefaultInterval)
		picksOf(t, b, 10)
	}
	failAll(t, b, "ep-3", 5)
	clk.Advance(30*time.Second - 1)
	if !l.Ejected() {
		t.Fatal("ejection ended early")
	}
	clk.Advance(1)
	if l.Ejected() {
		t.Fatal("after healthy intervals an ejection should last the base time again")
	}
}

func TestOutlierNeverEjectsMoreThanTheMaximum(t *testing.T) {
	leaktest.Check(t)
	for _, c := range []struct {
		n, max int
		share  float64
	}{{10, 1, balancer.DefaultMaxEjected}, {5, 1, balancer.DefaultMaxEjected}, {40, 4, balancer.DefaultMaxEjected}, {10, 3, 0.3}} {
		clk := newFakeClock()
		b := balancer.New(balancer.Outlier(balancer.LeastRequest(balancer.WithSeed(1)), balancer.WithMaxEjected(c.share)), clk.option())
		b.Update(endpoints(c.n))
		most := 0
		// Every endpoint fails every request for 20 simulated minutes.
		for range 12_000 {
			clk.Advance(100 * time.Millisecond)
			e, err := b.Pick(balancer.Info{})
			if err != nil {
				t.Fatal(err)
			}
			e.Done(balancer.Outcome{Latency: time.Millisecond, Result: balancer.Failure})
			ejected := 0
			for _, e := range b.Endpoints() {
				if e.Load.Ejected() {
					ejected++
				}
			}
			most = max(most, ejected)
			if ejected > c.max {
				t.Fatalf("n=%d share=%.2f: %d endpoints ejected at once, max %d", c.n, c.share, ejected, c.max)
			}
		}
		if most != c.max {
			t.Errorf("n=%d share=%.2f: at most %d ejected at once, want the maximum %d reached", c.n, c.share, most, c.max)
		}
	}
}

func TestOutlierPanicThreshold(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.Outlier(balancer.RoundRobin(), balancer.WithMaxEjected(1)), clk.option())
	b.Update(endpoints(10))
	for i := range 5 {
		failAll(t, b, "ep-"+string(rune('0'+i)), 5)
	}
	// 5 of 10 left: 50% is not below the threshold, ejection holds.
	seen := picksOf(t, b, 1000)
	for i := range 5 {
		if n := seen["ep-"+string(rune('0'+i))]; n != 0 {
			t.Fatalf("ejected ep-%d got %d picks above the panic threshold", i, n)
		}
	}
	failAll(t, b, "ep-5", 5)
	// 4 of 10 left: panic, picks spread over all ten.
	seen = picksOf(t, b, 1000)
	if len(seen) != 10 {
		t.Fatalf("in panic, picks went to %d endpoints, want all 10: %v", len(seen), seen)
	}
	for id, n := range seen {
		if n != 100 {
			t.Fatalf("in panic, round robin gave %s %d of 1000 picks, want 100", id, n)
		}
	}
	// When the ejections end, every endpoint is back.
	clk.Advance(30 * time.Second)
	if got := len(picksOf(t, b, 100)); got != 10 {
		t.Fatalf("after the ejections, %d endpoints get picks, want 10", got)
	}
	// Panic can be switched off.
	b = balancer.New(balancer.Outlier(balancer.RoundRobin(), balancer.WithMaxEjected(1), balancer.WithPanicThreshold(0)), clk.option())
	b.Update(endpoints(4))
	for i := range 3 {
		failAll(t, b, "ep-"+string(rune('0'+i)), 5)
	}
	if seen := picksOf(t, b, 100); seen["ep-3"] != 100 {
		t.Fatalf("without panic, picks went to %v, want all to ep-3", seen)
	}
}

func TestOutlierSuccessRateEjection(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.Outlier(balancer.RoundRobin()), clk.option())
	b.Update(endpoints(10))
	// ep-7 fails every other request: never 5 in a row, but a success
	// rate of 50% against 100% for the others.
	for i := range 2000 {
		clk.Advance(5 * time.Millisecond) // 10 s in all
		e, err := b.Pick(balancer.Info{})
		if err != nil {
			t.Fatal(err)
		}
		r := balancer.Success
		if e.ID == "ep-7" && i%20 < 10 {
			r = balancer.Failure
		}
		e.Done(balancer.Outcome{Latency: time.Millisecond, Result: r})
		if e.Load.ConsecutiveFailures() >= 5 {
			t.Fatal("the test's failure pattern reached the consecutive threshold")
		}
	}
	if !loadOf(b, "ep-7").Ejected() {
		t.Fatal("an endpoint at 50% success among endpoints at 100% was not ejected at the interval")
	}
	for _, e := range b.Endpoints() {
		if e.ID != "ep-7" && e.Load.Ejected() {
			t.Fatalf("healthy %s ejected", e.ID)
		}
	}
}

func TestOutlierStateSurvivesRebuild(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.Outlier(balancer.RoundRobin()), clk.option())
	b.Update(endpoints(10))
	failAll(t, b, "ep-4", 5)
	b.Update(endpoints(12))
	if got := picksOf(t, b, 1200)["ep-4"]; got != 0 {
		t.Fatalf("ejected endpoint got %d picks after a rebuild", got)
	}
	clk.Advance(30 * time.Second)
	if got := picksOf(t, b, 1200)["ep-4"]; got != 100 {
		t.Fatalf("readmitted endpoint got %d picks, want 100", got)
	}
}

func TestZoneAware(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	eps := endpoints(6)
	for i := range eps {
		eps[i].Zone = []string{"z1", "z2"}[i/3] // ep-0..2 local
	}
	local := func(seen map[string]int) int { return seen["ep-0"] + seen["ep-1"] + seen["ep-2"] }
	// Success-rate ejection is off: ep-0's 5 failures in ~1000 requests
	// would otherwise eject it again among endpoints at 100%.
	b := balancer.New(balancer.Outlier(
		balancer.ZoneAware("z1", balancer.RoundRobin(), balancer.WithSeed(3)),
		balancer.WithMaxEjected(1), balancer.WithPanicThreshold(0), balancer.WithSuccessRate(0, 0, 0)), clk.option())
	b.Update(eps)
	if seen := picksOf(t, b, 3000); local(seen) != 3000 {
		t.Fatalf("healthy local zone: %v, want every pick local", seen)
	}
	// The caller's Skip ruling out every local endpoint spills over at once.
	skipLocal := func(e *balancer.Endpoint) bool { return e.Zone == "z1" }
	if e, err := b.Pick(balancer.Info{Skip: skipLocal}); err != nil || e.Zone != "z2" {
		t.Fatalf("local zone skipped: %v, %v; want a z2 endpoint", e, err)
	}
	// One of three local endpoints ejected: 2/3 healthy < 70%, the local
	// zone keeps (2/3)/0.7 ≈ 95% of the traffic, the rest goes to all.
	failAll(t, b, "ep-0", 5)
	const n = 20_000
	seen := picksOf(t, b, n)
	if seen["ep-0"] != 0 {
		t.Fatalf("ejected ep-0 got %d picks", seen["ep-0"])
	}
	// The spill-over goes to all 5 admitted endpoints evenly.
	wantLocal := (2.0 / 3 / 0.7) + (1-2.0/3/0.7)*2/5
	if got := float64(local(seen)) / n; got < wantLocal-0.01 || got > wantLocal+0.01 {
		t.Errorf("local share %.3f, want %.3f ± 0.01", got, wantLocal)
	}
	// Two ejected: 1/3 healthy.
	failAll(t, b, "ep-1", 5)
	seen = picksOf(t, b, n)
	wantLocal = (1.0 / 3 / 0.7) + (1-1.0/3/0.7)*1/4
	if got := float64(local(seen)) / n; got < wantLocal-0.01 || got > wantLocal+0.01 {
		t.Errorf("local share %.3f, want %.3f ± 0.01", got, wantLocal)
	}
	// Ejections over: all local again.
	clk.Advance(30 * time.Second)
	if seen := picksOf(t, b, 3000); local(seen) != 3000 {
		t.Fatalf("after the ejections: %v, want every pick local", seen)
	}
}

func TestOutlierEjectionHook(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	var got []balancer.Ejection
	b := balancer.New(balancer.Outlier(balancer.RoundRobin()), clk.option(),
		balancer.WithEjectionHook(func(e balancer.Ejection) { got = append(got, e) }))
	b.Update(endpoints(10))

	failAll(t, b, "ep-3", 4)
	if len(got) != 0 {
		t.Fatalf("hook called before the threshold: %v", got)
	}
	failAll(t, b, "ep-3", 1)
	if len(got) != 1 || got[0].ID != "ep-3" || got[0].Duration != 30*time.Second {
		t.Fatalf("after 5 failures: hook got %+v, want one 30 s ejection of ep-3", got)
	}
	// Second ejection of the same endpoint: twice the base time.
	clk.Advance(30 * time.Second)
	failAll(t, b, "ep-3", 5)
	if len(got) != 2 || got[1].ID != "ep-3" || got[1].Duration != 60*time.Second {
		t.Fatalf("second ejection: hook got %+v", got)
	}
}
