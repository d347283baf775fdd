package balancer_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/leaktest"
)

func TestEmptySetFailsAtOnce(t *testing.T) {
	leaktest.Check(t)
	for _, p := range allPolicies() {
		t.Run(p.name, func(t *testing.T) {
			b := balancer.New(p.new())
			if _, err := b.Pick(balancer.Info{}); !errors.Is(err, balancer.ErrNoEndpoints) {
				t.Fatalf("pick before any update: %v, want ErrNoEndpoints", err)
			}
			b.Update(endpoints(3))
			b.Update(nil)
			if _, err := b.Pick(balancer.Info{}); !errors.Is(err, balancer.ErrNoEndpoints) {
				t.Fatalf("pick of an empty set: %v, want ErrNoEndpoints", err)
			}
		})
	}
}

func TestLoadSurvivesRebuildByID(t *testing.T) {
	leaktest.Check(t)
	b := balancer.New(balancer.PeakEWMA()) // PeakEWMA tracks latency
	b.Update(endpoints(3))
	e, err := b.Pick(balancer.Info{})
	if err != nil {
		t.Fatal(err)
	}
	id, load := e.ID, e.Load
	if load.InFlight() != 1 {
		t.Fatalf("in flight after a pick = %d, want 1", load.InFlight())
	}
	b.Update(endpoints(4)) // same IDs plus one
	for _, ne := range b.Endpoints() {
		if ne.ID == id && ne.Load != load {
			t.Fatalf("endpoint %s lost its load state over a rebuild", id)
		}
	}
	e.Done(balancer.Outcome{Latency: time.Millisecond, Result: balancer.Success})
	if load.InFlight() != 0 {
		t.Fatalf("in flight after done = %d, want 0", load.InFlight())
	}
	if lat, ok := load.Latency(); !ok || lat <= 0 || lat > time.Millisecond {
		t.Fatalf("latency = %v, %v; want (0, 1ms], true", lat, ok)
	}
	// An ID that leaves and comes back starts afresh.
	b.Update(endpoints(1)[:0])
	b.Update(endpoints(3))
	for _, ne := range b.Endpoints() {
		if ne.ID == id && ne.Load == load {
			t.Fatalf("endpoint %s kept the load of a previous life", id)
		}
	}
}

func TestSkipIsHonouredByEveryPolicy(t *testing.T) {
	leaktest.Check(t)
	for _, p := range allPolicies() {
		t.Run(p.name, func(t *testing.T) {
			eps := endpoints(10)
			for i := range eps {
				eps[i].Zone = []string{"z1", "z2"}[i%2]
			}
			b := balancer.New(p.new(balancer.WithSeed(1)))
			b.Update(eps)
			allowed := map[string]bool{"ep-4": true, "ep-8": true} // both in zone z1
			skip := func(e *balancer.Endpoint) bool { return !allowed[e.ID] }
			seen := map[string]int{}
			for i := range 2000 {
				e, err := b.Pick(balancer.Info{Method: keyOf(i), Skip: skip})
				if err != nil {
					t.Fatalf("pick %d: %v", i, err)
				}
				if !allowed[e.ID] {
					t.Fatalf("pick %d returned skipped endpoint %s", i, e.ID)
				}
				seen[e.ID]++
				// Dropped keeps PeakEWMA without history, so it does not
				// settle on the first endpoint to answer.
				e.Done(balancer.Outcome{Result: balancer.Dropped})
			}
			if len(seen) != 2 {
				t.Errorf("picks went to %v, want both endpoints left", seen)
			}
			_, err := b.Pick(balancer.Info{Method: "k", Skip: func(*balancer.Endpoint) bool { return true }})
			if !errors.Is(err, balancer.ErrAllSkipped) {
				t.Fatalf("every endpoint skipped: %v, want ErrAllSkipped", err)
			}
		})
	}
}

func keyOf(i int) string {
	const digits = "0123456789abcdef"
	return "key-" + string(digits[i%16]) + string(digits[(i/16)%16]) + string(digits[(i/256)%16])
}

func TestPickDoesNotAllocate(t *testing.T) {
	leaktest.Check(t)
	for _, p := range allPolicies() {
		for _, n := range []int{1, 3, 100} {
			b := balancer.New(p.new())
			b.Update(endpoints(n))
			info := balancer.Info{Method: "user-42"}
			skipFirst := balancer.Info{Method: "user-42", Skip: func(e *balancer.Endpoint) bool { return e.ID == "ep-0" && n > 1 }}
			for name, in := range map[string]balancer.Info{"plain": info, "skip": skipFirst} {
				allocs := testing.AllocsPerRun(200, func() {
					e, err := b.Pick(in)
					if err != nil {
						t.Fatal(err)
					}
					e.Done(balancer.Outcome{Latency: time.Millisecond, Result: balancer.Success})
				})
				if allocs != 0 {
					t.Errorf("%s n=%d %s: %v allocs per pick+done, want 0", p.name, n, name, allocs)
				}
			}
		}
	}
}

func TestOutlierPickDoesNotAllocateWhileEjecting(t *testing.T) {
	leaktest.Check(t)
	clk := newFakeClock()
	b := balancer.New(balancer.Outlier(balancer.PeakEWMA(), balancer.WithMaxEjected(0.3)), clk.option())
	b.Update(endpoints(10))
	failAll(t, b, "ep-1", 5)
	if !loadOf(b, "ep-1").Ejected() {
		t.Fatal("ep-1 not ejected")
	}
	skip := func(e *balancer.Endpoint) bool { return e.ID == "ep-2" }
	for _, info := range []balancer.Info{{}, {Skip: skip}} {
		allocs := testing.AllocsPerRun(500, func() {
			e, err := b.Pick(info)
			if err != nil || e.ID == "ep-1" {
				t.Fatalf("pick = %v, %v during ejection of ep-1", e, err)
			}
			e.Done(balancer.Outcome{Latency: time.Millisecond})
		})
		if allocs != 0 {
			t.Errorf("skip=%v: %v allocs per pick, want 0", info.Skip != nil, allocs)
		}
	}
}

func TestHeaderAndCookieKeys(t *testing.T) {
	leaktest.Check(t)
	r, _ := http.NewRequest("GET", "http://svc/?user=dave&&team=a+b&team=c&bad=%zz&bad=ok&semi=1;x=2&%75id=7&empty", nil)
	r.Header.Set("X-User", "alice")
	r.Header.Add("Cookie", `theme=dark; session="s-123"; x=1`)
	cases := []struct {
		name string
		key  balancer.KeyFunc
		info balancer.Info
		want string
	}{
		{"header", balancer.HeaderKey("x-user"), balancer.Info{HTTP: r}, "alice"},
		{"header absent", balancer.HeaderKey("x-other"), balancer.Info{HTTP: r}, ""},
		{"cookie quoted", balancer.CookieKey("session"), balancer.Info{HTTP: r}, "s-123"},
		{"cookie plain", balancer.CookieKey("theme"), balancer.Info{HTTP: r}, "dark"},
		{"cookie absent", balancer.CookieKey("nope"), balancer.Info{HTTP: r}, ""},
		{"cookie on gRPC", balancer.CookieKey("session"), balancer.Info{Metadata: metadata.Pairs("cookie", "session=1")}, ""},
		{"metadata", balancer.HeaderKey("X-User"), balancer.Info{Metadata: metadata.Pairs("x-user", "bob")}, "bob"},
		{"context metadata", balancer.HeaderKey("x-user"), balancer.Info{Context: metadata.AppendToOutgoingContext(t.Context(), "x-user", "carol")}, "carol"},
		{"nothing", balancer.HeaderKey("x-user"), balancer.Info{}, ""},
		{"query", balancer.QueryKey("user"), balancer.Info{HTTP: r}, "dave"},
		{"query first value, decoded", balancer.QueryKey("team"), balancer.Info{HTTP: r}, "a b"},
		{"query bad escape skipped", balancer.QueryKey("bad"), balancer.Info{HTTP: r}, "ok"},
		{"query pair with a semicolon skipped", balancer.QueryKey("semi"), balancer.Info{HTTP: r}, ""},
		{"query name decoded", balancer.QueryKey("uid"), balancer.Info{HTTP: r}, "7"},
		{"query without value", balancer.QueryKey("empty"), balancer.Info{HTTP: r}, ""},
		{"query absent", balancer.QueryKey("nope"), balancer.Info{HTTP: r}, ""},
		{"query on gRPC", balancer.QueryKey("user"), balancer.Info{Metadata: metadata.Pairs("user", "dave")}, ""},
		{"query without URL", balancer.QueryKey("user"), balancer.Info{HTTP: &http.Request{}}, ""},
	}
	for _, c := range cases {
		if got := c.key(c.info); got != c.want {
			t.Errorf("%s: key = %q, want %q", c.name, got, c.want)
		}
	}
	for _, k := range []balancer.KeyFunc{balancer.HeaderKey("x-user"), balancer.CookieKey("session"), balancer.QueryKey("user")} {
		if a := testing.AllocsPerRun(100, func() { _ = k(balancer.Info{HTTP: r}) }); a != 0 {
			t.Errorf("key extraction allocates %v times", a)
		}
	}
}

func TestRingHashKeyFromHeaderIsSticky(t *testing.T) {
	leaktest.Check(t)
	for _, pol := range []balancer.Policy{balancer.RingHash(balancer.HeaderKey("x-user")), balancer.Maglev(balancer.CookieKey("session"))} {
		b := balancer.New(pol)
		b.Update(endpoints(7))
		r, _ := http.NewRequest("GET", "http://svc/", nil)
		r.Header.Set("X-User", "alice")
		r.Header.Set("Cookie", "session=alice")
		first, err := b.Pick(balancer.Info{HTTP: r})
		if err != nil {
			t.Fatal(err)
		}
		for range 50 {
			e, _ := b.Pick(balancer.Info{HTTP: r})
			if e != first {
				t.Fatalf("%T: key alice went to %s then %s", pol, first.ID, e.ID)
			}
		}
		// Without a key requests spread.
		seen := map[string]bool{}
		for range 200 {
			e, _ := b.Pick(balancer.Info{})
			seen[e.ID] = true
		}
		if len(seen) < 5 {
			t.Errorf("%T: keyless requests went to only %d endpoints", pol, len(seen))
		}
	}
}

func TestSubset(t *testing.T) {
	leaktest.Check(t)
	eps := endpoints(6)
	for i := range eps {
		if i%3 == 0 {
			eps[i].Tags = []string{"canary"}
			eps[i].Meta = map[string]string{"version": "v2"}
		} else {
			eps[i].Meta = map[string]string{"version": "v1"}
		}
	}
	cases := []struct {
		name  string
		match balancer.Match
		want  map[string]bool
	}{
		{"tags", balancer.MatchTags("canary"), map[string]bool{"ep-0": true, "ep-3": true}},
		{"meta", balancer.MatchMeta("version", "v1"), map[string]bool{"ep-1": true, "ep-2": true, "ep-4": true, "ep-5": true}},
		{"all", balancer.MatchAll(balancer.MatchTags("canary"), balancer.MatchMeta("version", "v2"), nil), map[string]bool{"ep-0": true, "ep-3": true}},
	}
	for _, c := range cases {
		b := balancer.New(balancer.Subset(c.match, balancer.RoundRobin()))
		b.Update(eps)
		seen := map[string]bool{}
		for range 100 {
			e, err := b.Pick(balancer.Info{})
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if !c.want[e.ID] {
				t.Fatalf("%s: picked %s outside the subset", c.name, e.ID)
			}
			seen[e.ID] = true
		}
		if len(seen) != len(c.want) {
			t.Errorf("%s: picks covered %v, want %v", c.name, seen, c.want)
		}
	}
	b := balancer.New(balancer.Subset(balancer.MatchMeta("version", "v3"), balancer.RoundRobin()))
	b.Update(eps)
	if _, err := b.Pick(balancer.Info{}); !errors.Is(err, balancer.ErrNoEndpoints) {
		t.Fatalf("empty subset: %v, want ErrNoEndpoints", err)
	}
	b = balancer.New(balancer.Subset(balancer.MatchMeta("version", "v3"), balancer.RoundRobin(), balancer.WithFallback()))
	b.Update(eps)
	if _, err := b.Pick(balancer.Info{}); err != nil {
		t.Fatalf("empty subset with fallback: %v", err)
	}
}

// loadOf returns the load of the endpoint id in b's current set.
func loadOf(b *balancer.Balancer, id string) *balancer.Load {
	for _, e := range b.Endpoints() {
		if e.ID == id {
			return e.Load
		}
	}
	return nil
}

// failAll reports n failures for endpoint id, picking it through Skip.
func failAll(t *testing.T, b *balancer.Balancer, id string, n int) {
	t.Helper()
	only := func(e *balancer.Endpoint) bool { return e.ID != id }
	for range n {
		e, err := b.Pick(balancer.Info{Skip: only})
		if err != nil {
			t.Fatalf("pick %s: %v", id, err)
		}
		e.Done(balancer.Outcome{Latency: time.Millisecond, Result: balancer.Failure})
	}
}

var _ = discovery.Endpoint{}

// firstPolicy is a policy from outside the package: it always picks the
// first endpoint.
type firstPolicy struct{}

func (firstPolicy) Build(eps []*balancer.Endpoint) balancer.Picker { return firstPicker(eps) }

type firstPicker []*balancer.Endpoint

func (p firstPicker) Pick(balancer.Info) (*balancer.Endpoint, error) { return p[0], nil }

func TestInFlightIsCountedWhenThePolicyReadsIt(t *testing.T) {
	leaktest.Check(t)
	for _, c := range []struct {
		name   string
		policy balancer.Policy
		counts bool
	}{
		{"RoundRobin", balancer.RoundRobin(), false},
		{"RingHash", balancer.RingHash(methodKey), false},
		{"LeastRequest", balancer.LeastRequest(), true},
		{"PeakEWMA", balancer.PeakEWMA(), true},
		{"Outlier(LeastRequest)", balancer.Outlier(balancer.LeastRequest()), true},
		{"Outlier(ZoneAware(Subset(Random)))", balancer.Outlier(balancer.ZoneAware("z", balancer.Subset(nil, balancer.Random()))), false},
		{"a policy from elsewhere", firstPolicy{}, true},
	} {
		b := balancer.New(c.policy)
		b.Update(endpoints(1))
		e, err := b.Pick(balancer.Info{})
		if err != nil {
			t.Fatal(err)
		}
		want := int64(0)
		if c.counts {
			want = 1
		}
		if got := e.Load.InFlight(); got != want {
			t.Errorf("%s: in flight after a pick = %d, want %d", c.name, got, want)
		}
		e.Done(balancer.Outcome{})
		if got := e.Load.InFlight(); got != 0 {
			t.Errorf("%s: in flight after done = %d, want 0", c.name, got)
		}
	}
}

func TestNilArgumentsAndOddInput(t *testing.T) {
	leaktest.Check(t)
	policies := map[string]balancer.Policy{
		"New(nil)":          nil,
		"Outlier(nil)":      balancer.Outlier(nil, nil, balancer.WithClock(nil)),
		"ZoneAware(z, nil)": balancer.ZoneAware("z", nil),
		"Subset(nil, nil)":  balancer.Subset(nil, nil),
		"RingHash(nil)":     balancer.RingHash(nil),
		"Maglev(nil)":       balancer.Maglev(nil, balancer.WithTableSize(-5)),
		"options out of range": balancer.Outlier(balancer.PeakEWMA(balancer.WithDecay(-1), balancer.WithDefaultLatency(0)),
			balancer.WithMaxEjected(7), balancer.WithPanicThreshold(-1), balancer.WithConsecutiveFailures(0),
			balancer.WithEjectionTime(-1, -1), balancer.WithInterval(0), balancer.WithZoneMinHealthy(2)),
	}
	odd := []discovery.Endpoint{
		{ID: "dup", Addr: "10.0.0.1:1", Weight: 1 << 31},
		{ID: "dup", Addr: "10.0.0.2:1"}, // a duplicate ID shares its load
		{ID: "max", Addr: "10.0.0.3:1", Weight: ^uint32(0)},
		{ID: "", Addr: ""},
	}
	for name, p := range policies {
		b := balancer.New(p, nil)
		b.Update(odd)
		for i := range 100 {
			e, err := b.Pick(balancer.Info{Method: keyOf(i)})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			e.Done(balancer.Outcome{Result: balancer.Failure})
		}
		if eps := b.Endpoints(); eps[0].Load != eps[1].Load {
			t.Errorf("%s: endpoints with the same ID have different loads", name)
		}
	}
}
