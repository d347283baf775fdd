package discovery

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"
)

func ep(id, addr string) Endpoint { return Endpoint{ID: id, Addr: addr} }

func TestValidateAddr(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:80", true},
		{"[::1]:8080", true},
		{"example.com:443", true},
		{"10.0.0.1:65535", true},
		{"", false},
		{"127.0.0.1", false},
		{":80", false},
		{"127.0.0.1:0", false},
		{"127.0.0.1:65536", false},
		{"127.0.0.1:-1", false},
		{"127.0.0.1:http", false},
		{"::1:80", false},
		{"[::1]", false},
		{"a b:80", false},
		{"user@host:80", false},
		{"host/path:80", false},
	} {
		err := ValidateAddr(tc.addr)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateAddr(%q) = %v, want ok=%v", tc.addr, err, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrBadEndpoint) {
			t.Errorf("ValidateAddr(%q) = %v, does not wrap ErrBadEndpoint", tc.addr, err)
		}
	}
	if err := (&Endpoint{Addr: "127.0.0.1:80"}).Validate(); !errors.Is(err, ErrBadEndpoint) {
		t.Errorf("empty ID: %v", err)
	}
}

func TestEndpointHelpers(t *testing.T) {
	leaktest.Check(t)
	e := Endpoint{ID: "a", Addr: "127.0.0.1:1", Tags: []string{"x", "y"}}
	if e.EffectiveWeight() != 1 {
		t.Errorf("zero weight: EffectiveWeight = %d", e.EffectiveWeight())
	}
	e.Weight = 7
	if e.EffectiveWeight() != 7 {
		t.Errorf("EffectiveWeight = %d", e.EffectiveWeight())
	}
	if !e.HasTag("y") || e.HasTag("z") {
		t.Error("HasTag wrong")
	}
}

func TestStaticRejectsBadSetsWithoutChange(t *testing.T) {
	leaktest.Check(t)
	s, err := NewStatic(map[string][]Endpoint{"svc": {ep("a", "127.0.0.1:1")}})
	if err != nil {
		t.Fatal(err)
	}
	for name, set := range map[string][]Endpoint{
		"bad address":  {ep("b", "127.0.0.1")},
		"port 0":       {ep("b", "127.0.0.1:0")},
		"empty ID":     {ep("", "127.0.0.1:2")},
		"duplicate ID": {ep("b", "127.0.0.1:2"), ep("b", "127.0.0.1:3")},
		"ipv6 no brkt": {ep("b", "::1:80")},
	} {
		if err := s.Set("svc", set...); !errors.Is(err, ErrBadEndpoint) {
			t.Errorf("%s: Set = %v, want ErrBadEndpoint", name, err)
		}
	}
	got, ok := s.Endpoints("svc")
	if !ok || len(got) != 1 || got[0].ID != "a" {
		t.Fatalf("set changed by rejected updates: %+v", got)
	}
	if err := s.Set("", ep("a", "127.0.0.1:1")); err == nil {
		t.Error("empty service name accepted")
	}
	if _, err := NewStatic(map[string][]Endpoint{"x": {ep("a", "nope")}}); !errors.Is(err, ErrBadEndpoint) {
		t.Errorf("NewStatic with bad endpoint: %v", err)
	}
	if _, ok := s.Endpoints("unknown"); ok {
		t.Error("unknown service reported known")
	}
}

func TestStaticCopiesInput(t *testing.T) {
	leaktest.Check(t)
	var s Static
	in := []Endpoint{{ID: "a", Addr: "127.0.0.1:1", Tags: []string{"t"}, Meta: map[string]string{"k": "v"}}}
	if err := s.Set("svc", in...); err != nil {
		t.Fatal(err)
	}
	in[0].Tags[0] = "changed"
	in[0].Meta["k"] = "changed"
	got, _ := s.Endpoints("svc")
	if got[0].Tags[0] != "t" || got[0].Meta["k"] != "v" {
		t.Fatalf("Static shares the caller's slices or maps: %+v", got[0])
	}
}

func TestWatchBadArguments(t *testing.T) {
	leaktest.Check(t)
	var s Static
	if _, err := s.Watch("", func(Update) {}); err == nil {
		t.Error("empty service accepted")
	}
	if _, err := s.Watch("svc", nil); err == nil {
		t.Error("nil callback accepted")
	}
}

func TestStaticFanOutAndLateJoiner(t *testing.T) {
	leaktest.Check(t)
	var s Static
	recs := make([]*recorder, 3)
	for i := range recs {
		recs[i] = newRecorder()
		stop, err := s.Watch("svc", recs[i].fn)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
	}
	// Watching before any set: nothing delivered yet.
	if _, ok := recs[0].last(); ok {
		t.Fatal("update delivered before any Set")
	}
	if err := s.Set("svc", ep("a", "127.0.0.1:1"), ep("b", "127.0.0.1:2")); err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		u, _ := r.waitFor(t, stateWait, fmt.Sprintf("subscriber %d", i), hasIDs("a", "b"))
		if u.Service != "svc" {
			t.Errorf("Service = %q", u.Service)
		}
	}
	// A late joiner gets the current set at once, without a new Set.
	late := newRecorder()
	stop, err := s.Watch("svc", late.fn)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	late.waitFor(t, stateWait, "late joiner", hasIDs("a", "b"))
	// An empty set is delivered as such.
	if err := s.Set("svc"); err != nil {
		t.Fatal(err)
	}
	late.waitFor(t, stateWait, "empty set", func(u Update) bool { return u.Endpoints != nil && len(u.Endpoints) == 0 })
}

func TestSubscriberCoalescesAndKeepsOrder(t *testing.T) {
	leaktest.Check(t)
	var s Static
	release := make(chan struct{})
	var mu sync.Mutex
	var seen []int
	first := make(chan struct{})
	var once sync.Once
	stop, err := s.Watch("svc", func(u Update) {
		once.Do(func() { close(first); <-release })
		mu.Lock()
		seen = append(seen, len(u.Endpoints))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	set := func(n int) {
		eps := make([]Endpoint, n)
		for i := range eps {
			eps[i] = ep(fmt.Sprint(i), fmt.Sprintf("127.0.0.1:%d", i+1))
		}
		if err := s.Set("svc", eps...); err != nil {
			t.Fatal(err)
		}
	}
	set(1)
	<-first // the callback is now blocked in its first call
	for n := 2; n <= 50; n++ {
		set(n)
	}
	close(release)
	deadline := time.Now().Add(stateWait)
	for {
		mu.Lock()
		got := slices.Clone(seen)
		mu.Unlock()
		if len(got) > 0 && got[len(got)-1] == 50 {
			if len(got) > 3 {
				t.Errorf("slow subscriber got %d calls for 50 updates, want them coalesced: %v", len(got), got)
			}
			if !slices.IsSorted(got) {
				t.Errorf("updates out of order: %v", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("latest update not delivered: %v", got)
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

func TestStopSemantics(t *testing.T) {
	leaktest.Check(t)
	var s Static
	if err := s.Set("svc", ep("a", "127.0.0.1:1")); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	r := newRecorder()
	stop, err := s.Watch("svc", func(u Update) { calls.Add(1); r.fn(u) })
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, stateWait, "first set", hasIDs("a"))
	stop()
	stop() // idempotent
	n := calls.Load()
	for i := 0; i < 20; i++ {
		if err := s.Set("svc", ep(fmt.Sprint(i), "127.0.0.1:1")); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != n {
		t.Fatalf("callback called after stop returned: %d calls, %d before", calls.Load(), n)
	}
	// The set survives its last subscriber (Static owns it).
	if got, ok := s.Endpoints("svc"); !ok || len(got) != 1 || got[0].ID != "19" {
		t.Fatalf("Endpoints after stop: %+v %v", got, ok)
	}
}

// TestFanoutOneProducerPerService checks the reference counting of the
// start hook that backends such as Consul and DNS use.
func TestFanoutOneProducerPerService(t *testing.T) {
	leaktest.Check(t)
	var starts, stops atomic.Int64
	var hubs sync.Map
	f := &fanout{start: func(h *hub) func() {
		service := h.service
		starts.Add(1)
		hubs.Store(service, h)
		h.publish(Update{Endpoints: []Endpoint{ep(service, "127.0.0.1:1")}})
		return func() { stops.Add(1) }
	}}
	var stopFns []func()
	for i := 0; i < 5; i++ {
		for _, svc := range []string{"a", "b"} {
			r := newRecorder()
			stop, err := f.watch(svc, r.fn)
			if err != nil {
				t.Fatal(err)
			}
			r.waitFor(t, stateWait, svc, hasIDs(svc))
			stopFns = append(stopFns, stop)
		}
	}
	if starts.Load() != 2 {
		t.Fatalf("producers started: %d, want 2", starts.Load())
	}
	for i, stop := range stopFns {
		stop()
		if i < len(stopFns)-2 && stops.Load() != 0 {
			t.Fatalf("producer stopped while %d subscribers remain", len(stopFns)-i-1)
		}
	}
	if stops.Load() != 2 {
		t.Fatalf("producers stopped: %d, want 2", stops.Load())
	}
	// Watching again starts a fresh producer.
	r := newRecorder()
	stop, err := f.watch("a", r.fn)
	if err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, stateWait, "restarted producer", hasIDs("a"))
	stop()
	if starts.Load() != 3 || stops.Load() != 3 {
		t.Fatalf("starts %d stops %d, want 3 and 3", starts.Load(), stops.Load())
	}
}

func TestConcurrentWatchSetStop(t *testing.T) {
	leaktest.Check(t)
	var s Static
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				stop, err := s.Watch("svc", func(Update) {})
				if err != nil {
					t.Error(err)
					return
				}
				if err := s.Set("svc", ep(fmt.Sprint(g), "127.0.0.1:1")); err != nil {
					t.Error(err)
				}
				stop()
			}
		}(g)
	}
	wg.Wait()
}

func BenchmarkStaticSet(b *testing.B) {
	var s Static
	for i := 0; i < 4; i++ {
		stop, err := s.Watch("svc", func(Update) {})
		if err != nil {
			b.Fatal(err)
		}
		defer stop()
	}
	eps := []Endpoint{ep("a", "127.0.0.1:1"), ep("b", "127.0.0.1:2"), ep("c", "127.0.0.1:3")}
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Set("svc", eps...); err != nil {
			b.Fatal(err)
		}
	}
}
