package breaker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/clocktest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// TestMain fails the package's tests if any goroutine outlives them.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openTimeout is the open timeout of the tests that move a fake clock
// past it (Settings.Now): they never wait in real time.
const openTimeout = 20 * time.Millisecond

// newClock returns a fake clock for Settings.Now.
func newClock() *clocktest.Clock { return clocktest.New(time.Unix(1_700_000_000, 0)) }

// wantState fails t unless b reports want.
func wantState(t *testing.T, b *Breaker, want State, when string) {
	t.Helper()
	if got := b.State(); got != want {
		t.Fatalf("%s: state %v, want %v", when, got, want)
	}
}

func TestBreakerTripsOnConsecutiveFailures(t *testing.T) {
	leaktest.Check(t)
	var changes []StateChange
	var mu sync.Mutex
	b := New("svc", "ep1", Settings{ConsecutiveFailures: 3, FailureRatio: 2, OnStateChange: func(c StateChange) {
		mu.Lock()
		changes = append(changes, c)
		mu.Unlock()
	}})
	for i := 0; i < 2; i++ {
		if err := b.Do(func() Result { return Failure }); err != nil {
			t.Fatal(err)
		}
	}
	if b.State() != Closed || b.Open() {
		t.Fatalf("tripped after 2 failures: %v", b.State())
	}
	// A success resets the consecutive count.
	_ = b.Do(func() Result { return Success })
	for i := 0; i < 2; i++ {
		_ = b.Do(func() Result { return Failure })
	}
	if b.State() != Closed {
		t.Fatal("tripped although the failures were not consecutive")
	}
	_ = b.Do(func() Result { return Failure })
	if b.State() != Open || !b.Open() {
		t.Fatalf("state %v after 3 consecutive failures, want open", b.State())
	}
	ran := false
	if err := b.Do(func() Result { ran = true; return Success }); !errors.Is(err, ErrCircuitOpen) || ran {
		t.Fatalf("open breaker: err %v, ran %v", err, ran)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(changes) != 1 || changes[0].From != Closed || changes[0].To != Open || changes[0].Name != "ep1" || changes[0].Service != "svc" {
		t.Fatalf("state changes %+v", changes)
	}
}

func TestBreakerTripsOnFailureRatio(t *testing.T) {
	leaktest.Check(t)
	b := New("svc", "ep", Settings{ConsecutiveFailures: 1000, FailureRatio: 0.5, MinRequests: 10})
	// Alternate: 50% failures, never 2 in a row; trips at the 10th call.
	for i := 0; i < 9; i++ {
		r := Success
		if i%2 == 1 {
			r = Failure
		}
		_ = b.Do(func() Result { return r })
	}
	if b.State() != Closed {
		t.Fatal("tripped before MinRequests")
	}
	_ = b.Do(func() Result { return Failure })
	if b.State() != Open {
		t.Fatalf("state %v at 5/10 failures, want open", b.State())
	}
}

func TestBreakerExcludedDoesNotCount(t *testing.T) {
	leaktest.Check(t)
	b := New("svc", "ep", Settings{ConsecutiveFailures: 2})
	for i := 0; i < 10; i++ {
		_ = b.Do(func() Result { return Excluded })
	}
	_ = b.Do(func() Result { return Failure })
	if b.State() != Closed {
		t.Fatal("excluded results counted as failures")
	}
}

func TestBreakerHalfOpenProbes(t *testing.T) {
	leaktest.Check(t)
	clock := newClock()
	b := New("svc", "ep", Settings{ConsecutiveFailures: 1, OpenTimeout: openTimeout, HalfOpenProbes: 2, Now: clock.Now})
	_ = b.Do(func() Result { return Failure })
	clock.Advance(openTimeout - time.Nanosecond)
	wantState(t, b, Open, "1 ns before the open timeout")
	if !b.Open() {
		t.Fatal("Open() false before the open timeout")
	}
	ran := false
	if err := b.Do(func() Result { ran = true; return Success }); !errors.Is(err, ErrCircuitOpen) || ran {
		t.Fatalf("open breaker: err %v, ran %v", err, ran)
	}
	clock.Advance(time.Nanosecond)
	wantState(t, b, HalfOpen, "at the open timeout")
	if b.Open() {
		t.Fatal("Open() true for a half-open breaker")
	}

	// Two probes are admitted; a concurrent third is refused.
	release := make(chan Result)
	var wg sync.WaitGroup
	started := make(chan struct{}, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Do(func() Result { started <- struct{}{}; return <-release }); err != nil {
				t.Error(err)
			}
		}()
	}
	<-started
	<-started
	if err := b.Do(func() Result { return Success }); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("third probe: %v, want ErrCircuitOpen", err)
	}
	release <- Success
	release <- Success
	wg.Wait()
	wantState(t, b, Closed, "after 2 successful probes")

	// A probe failure re-opens, for a whole open timeout again.
	_ = b.Do(func() Result { return Failure })
	clock.Advance(openTimeout)
	wantState(t, b, HalfOpen, "after the second open timeout")
	_ = b.Do(func() Result { return Failure })
	clock.Advance(openTimeout - time.Nanosecond)
	wantState(t, b, Open, "after a failed probe")
	clock.Advance(time.Nanosecond)
	wantState(t, b, HalfOpen, "an open timeout after the failed probe")
}

// TestBreakerEarlyHalfOpenDeferred makes gobreaker half-open right after
// a trip, as a call racing the trip does (gobreaker's own open timeout is
// 1 ns): the breaker stays open on its clock, refuses calls without
// running them, and publishes the half-open change only once its open
// timeout has passed.
func TestBreakerEarlyHalfOpenDeferred(t *testing.T) {
	leaktest.Check(t)
	clock := newClock()
	var mu sync.Mutex
	var changes []string
	b := New("svc", "ep", Settings{ConsecutiveFailures: 1, OpenTimeout: openTimeout, Now: clock.Now,
		OnStateChange: func(c StateChange) {
			mu.Lock()
			defer mu.Unlock()
			changes = append(changes, fmt.Sprintf("%v→%v@%v", c.From, c.To, c.At.Sub(time.Unix(1_700_000_000, 0))))
		}})
	seen := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(changes, " ")
	}
	_ = b.Do(func() Result { return Failure })
	for !b.deferred.Load() {
		_ = b.cb.State() // gobreaker half-opens once a nanosecond of real time has passed
	}
	for _, tc := range []struct {
		advance time.Duration
		state   State
		changes string
	}{
		{0, Open, "closed→open@0s"},
		{openTimeout - time.Nanosecond, Open, "closed→open@0s"},
		{time.Nanosecond, HalfOpen, "closed→open@0s open→half-open@20ms"},
	} {
		clock.Advance(tc.advance)
		ran := false
		err := b.Do(func() Result { ran = true; return Success })
		if tc.state == Open && (!errors.Is(err, ErrCircuitOpen) || ran) {
			t.Fatalf("+%v: err %v, ran %v; want refused", tc.advance, err, ran)
		}
		if tc.state == HalfOpen && (err != nil || !ran) {
			t.Fatalf("+%v: the probe: err %v, ran %v", tc.advance, err, ran)
		}
		if got := seen(); !strings.HasPrefix(got, tc.changes) {
			t.Fatalf("+%v: changes %q, want %q first", tc.advance, got, tc.changes)
		}
	}
	wantState(t, b, Closed, "after the probe")
	if got, want := seen(), "closed→open@0s open→half-open@20ms half-open→closed@20ms"; got != want {
		t.Fatalf("changes %q, want %q", got, want)
	}
}

func TestBreakerIgnoresResultsFromBeforeAStateChange(t *testing.T) {
	leaktest.Check(t)
	clock := newClock()
	b := New("svc", "ep", Settings{ConsecutiveFailures: 2, OpenTimeout: openTimeout, Now: clock.Now})
	release := make(chan Result)
	started := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- b.Do(func() Result { close(started); return <-release })
	}()
	<-started
	_ = b.Do(func() Result { return Failure })
	_ = b.Do(func() Result { return Failure })
	clock.Advance(openTimeout)
	wantState(t, b, HalfOpen, "after the open timeout")
	// The slow call of the closed generation succeeds now: it must not
	// count as the half-open probe's success.
	release <- Success
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	wantState(t, b, HalfOpen, "after a result of the closed generation")
}

func TestStateChangeListenerMayCallBreaker(t *testing.T) {
	leaktest.Check(t)
	clock := newClock()
	set := NewSet("svc", Settings{ConsecutiveFailures: 1, OpenTimeout: openTimeout, Now: clock.Now})
	set.Update([]discovery.Endpoint{{ID: "a", Addr: "127.0.0.1:1"}})
	var seen atomic.Int32
	cancel := set.Subscribe(func(c StateChange) {
		// Would deadlock if called under gobreaker's lock.
		_ = set.Get(c.Name).State()
		seen.Add(1)
	})
	defer cancel()
	b := set.Get("a")
	_ = b.Do(func() Result { return Failure })
	clock.Advance(openTimeout)
	wantState(t, b, HalfOpen, "after the open timeout")
	if n := seen.Load(); n != 2 {
		t.Fatalf("listener saw %d changes, want 2 (closed→open→half-open)", n)
	}
}

func TestSetFollowsDiscovery(t *testing.T) {
	leaktest.Check(t)
	set := NewSet("svc", Settings{ConsecutiveFailures: 1}, WithServiceBreaker())
	set.Update([]discovery.Endpoint{{ID: "a"}, {ID: "b"}})
	a := set.Get("a")
	_ = a.Do(func() Result { return Failure })
	if !set.Open("a") || set.Open("b") || set.Open("zzz") {
		t.Fatal("Open wrong")
	}
	set.Update([]discovery.Endpoint{{ID: "a"}, {ID: "c"}})
	if set.Get("a") != a || set.Get("b") != nil || set.Get("c") == nil || set.Len() != 2 {
		t.Fatal("Update did not keep a, drop b and add c")
	}
	if set.Service() == nil {
		t.Fatal("no service breaker")
	}
	var nilSet *Set
	if nilSet.Get("a") != nil || nilSet.Service() != nil {
		t.Fatal("nil set")
	}
}

func TestClassifyHTTP(t *testing.T) {
	leaktest.Check(t)
	ctx := context.Background()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	resp := func(code int) *http.Response { return &http.Response{StatusCode: code} }
	for _, tc := range []struct {
		name string
		ctx  context.Context
		resp *http.Response
		err  error
		want Result
	}{
		{"200", ctx, resp(200), nil, Success},
		{"404", ctx, resp(404), nil, Success},
		{"429", ctx, resp(429), nil, Success},
		{"500", ctx, resp(500), nil, Failure},
		{"501", ctx, resp(501), nil, Success},
		{"503", ctx, resp(503), nil, Failure},
		{"transport error", ctx, nil, errors.New("connection refused"), Failure},
		{"caller cancelled", cancelled, nil, context.Canceled, Excluded},
	} {
		if got := ClassifyHTTP(tc.ctx, tc.resp, tc.err); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestClassifyGRPC(t *testing.T) {
	leaktest.Check(t)
	ctx := context.Background()
	expired, cancel := context.WithDeadline(ctx, time.Now().Add(-time.Second))
	defer cancel()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		want Result
	}{
		{ctx, nil, Success},
		{ctx, status.Error(codes.NotFound, ""), Success},
		{ctx, status.Error(codes.InvalidArgument, ""), Success},
		{ctx, status.Error(codes.Unavailable, ""), Failure},
		{ctx, status.Error(codes.ResourceExhausted, ""), Failure},
		{ctx, status.Error(codes.Internal, ""), Failure},
		{ctx, status.Error(codes.DeadlineExceeded, ""), Failure},
		{expired, status.Error(codes.DeadlineExceeded, ""), Excluded},
		{ctx, status.Error(codes.Canceled, ""), Excluded},
	} {
		if got := ClassifyGRPC(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%v (ctx err %v): %v, want %v", tc.err, tc.ctx.Err(), got, tc.want)
		}
	}
}

func TestBudget(t *testing.T) {
	leaktest.Check(t)
	t0 := time.Unix(1_700_000_000, 0)
	b := NewBudget(BudgetSettings{Ratio: 0.2, PerSecond: 1, Window: 10 * time.Second})
	// Floor alone: 1/s × 10 s = 10 retries.
	n := 0
	for b.TryRetry(t0) {
		n++
		if n > 1000 {
			t.Fatal("unbounded")
		}
	}
	if n != 10 {
		t.Fatalf("%d retries on the floor, want 10", n)
	}
	// 100 requests add 20.
	for i := 0; i < 100; i++ {
		b.Request(t0)
	}
	n = 0
	for b.TryRetry(t0) {
		n++
	}
	if n != 20 {
		t.Fatalf("%d retries after 100 requests, want 20", n)
	}
	// After the window slides past everything, the floor is back.
	later := t0.Add(11 * time.Second)
	if got := b.Available(later); got != 10 {
		t.Fatalf("%d available after the window, want 10", got)
	}
	// Half a window later, half the buckets are still counted.
	b2 := NewBudget(BudgetSettings{Ratio: 1, PerSecond: -1, Window: 10 * time.Second})
	for i := 0; i < 10; i++ {
		b2.Request(t0.Add(time.Duration(i) * time.Second))
	}
	if got := b2.Available(t0.Add(14 * time.Second)); got != 5 {
		t.Fatalf("%d available, want 5 (requests of seconds 5..9)", got)
	}
}

func TestKeyedLimiterBurstThenRefuse(t *testing.T) {
	leaktest.Check(t)
	now := time.Unix(1_700_000_000, 0)
	k := NewKeyedLimiter(RateLimit{PerSecond: 2, Burst: 3}, 100)
	for i := 0; i < 3; i++ {
		if ok, _ := k.Allow("a", now); !ok {
			t.Fatalf("call %d of the burst refused", i)
		}
	}
	ok, wait := k.Allow("a", now)
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("after the burst: ok %v, retry after %v, want refused and 500ms", ok, wait)
	}
	if ok, _ := k.Allow("b", now); !ok {
		t.Fatal("another key was refused")
	}
	if ok, _ := k.Allow("a", now.Add(500*time.Millisecond)); !ok {
		t.Fatal("refused after the advertised wait")
	}
}

// TestKeyedLimiterBounded feeds 100 000 distinct identities to a limiter
// bounded at 10 000 and measures the memory it keeps.
func TestKeyedLimiterBounded(t *testing.T) {
	leaktest.Check(t)
	now := time.Unix(1_700_000_000, 0)
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = "spiffe://example.org/ns/default/sa/caller-" + strconv.Itoa(i)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	k := NewKeyedLimiter(RateLimit{PerSecond: 10, Burst: 10}, 10_000)
	for i, key := range keys[:10_000] {
		if ok, _ := k.Allow(key, now); !ok {
			t.Fatalf("key %d refused", i)
		}
	}
	at10k := heap()
	for _, key := range keys[10_000:] {
		k.Allow(key, now)
	}
	at100k := heap()
	runtime.KeepAlive(k)
	if n := k.Len(); n > k.Cap() || k.Cap() != 10_000 {
		t.Fatalf("%d keys kept, cap %d", n, k.Cap())
	}
	grow := int64(at100k) - int64(at10k)
	t.Logf("keyed limiter: %d keys kept of 100000 seen; heap %d B after 10k keys (%d B/key), growth from 10k to 100k keys: %d B",
		k.Len(), at10k-before, (at10k-before)/10_000, grow)
	// Keys are evicted, entries reused: memory must not grow with the
	// number of identities seen (allow 25% noise).
	if grow > int64(at10k-before)/4 {
		t.Fatalf("heap grew by %d B between 10k and 100k identities", grow)
	}
	// An evicted key comes back with a full bucket.
	if ok, _ := k.Allow(keys[0], now); !ok {
		t.Fatal("an evicted key was refused")
	}
}

func TestConcurrencyLimiterPriorities(t *testing.T) {
	leaktest.Check(t)
	l := NewConcurrencyLimiter(ConcurrencySettings{Limit: 10, CriticalReserve: 0.3, CriticalWait: -1})
	ctx := context.Background()
	for i := 0; i < 7; i++ {
		if err := l.Acquire(ctx, Sheddable); err != nil {
			t.Fatalf("sheddable %d: %v", i, err)
		}
	}
	if err := l.Acquire(ctx, Sheddable); !errors.Is(err, ErrShed) {
		t.Fatalf("8th sheddable: %v, want ErrShed (reserve)", err)
	}
	for i := 0; i < 3; i++ {
		if err := l.Acquire(ctx, Critical); err != nil {
			t.Fatalf("critical %d: %v", i, err)
		}
	}
	if err := l.Acquire(ctx, Critical); !errors.Is(err, ErrShed) {
		t.Fatalf("critical over the limit: %v, want ErrShed", err)
	}
	if l.InFlight() != 10 {
		t.Fatalf("in flight %d", l.InFlight())
	}
	for i := 0; i < 10; i++ {
		l.Release(time.Millisecond, true)
	}
	if l.InFlight() != 0 {
		t.Fatalf("in flight %d after releases", l.InFlight())
	}
}

func TestConcurrencyLimiterCriticalWaitsAndGetsSlotFirst(t *testing.T) {
	leaktest.Check(t)
	synctest.Test(t, func(t *testing.T) {
		l := NewConcurrencyLimiter(ConcurrencySettings{Limit: 2, CriticalReserve: -1, CriticalWait: 10 * time.Second})
		ctx := context.Background()
		_ = l.Acquire(ctx, Sheddable)
		_ = l.Acquire(ctx, Sheddable)
		got := make(chan error)
		go func() { got <- l.Acquire(ctx, Critical) }()
		// Wait until the critical call queues: then it is blocked for good.
		synctest.Wait()
		l.mu.Lock()
		n := len(l.waiters)
		l.mu.Unlock()
		if n != 1 {
			t.Fatalf("%d critical calls queued, want 1", n)
		}
		// While it waits, sheddable calls are refused even with no reserve.
		if err := l.Acquire(ctx, Sheddable); !errors.Is(err, ErrShed) {
			t.Fatalf("sheddable while critical waits: %v", err)
		}
		l.Release(time.Millisecond, true)
		if err := <-got; err != nil {
			t.Fatalf("critical: %v", err)
		}
		if l.InFlight() != 2 {
			t.Fatalf("in flight %d, want 2", l.InFlight())
		}
		// A waiting critical call gives up with its context.
		cctx, cancel := context.WithCancel(ctx)
		go func() { got <- l.Acquire(cctx, Critical) }()
		cancel()
		if err := <-got; !errors.Is(err, ErrShed) {
			t.Fatalf("cancelled critical: %v", err)
		}
		l.Release(0, true)
		l.Release(0, true)
		if l.InFlight() != 0 {
			t.Fatalf("in flight %d", l.InFlight())
		}
	})
}

func TestAIMD(t *testing.T) {
	leaktest.Check(t)
	l := NewConcurrencyLimiter(ConcurrencySettings{Limit: 20, Adaptive: &AIMD{Min: 5, Max: 40, Target: 10 * time.Millisecond, Backoff: 0.5}})
	ctx := context.Background()
	_ = l.Acquire(ctx, Critical)
	l.Release(time.Second, true) // slow: cut
	if got := l.Limit(); got != 10 {
		t.Fatalf("limit %d after a slow call, want 10", got)
	}
	// Busy and fast: grows.
	for i := 0; i < 8; i++ {
		_ = l.Acquire(ctx, Critical)
	}
	for i := 0; i < 200; i++ {
		_ = l.Acquire(ctx, Critical)
		l.Release(time.Millisecond, true)
	}
	if got := l.Limit(); got <= 10 || got > 40 {
		t.Fatalf("limit %d after fast busy calls, want in (10, 40]", got)
	}
	for i := 0; i < 8; i++ {
		l.Release(time.Millisecond, true)
	}
}

func TestParsePriority(t *testing.T) {
	leaktest.Check(t)
	for in, want := range map[string]Priority{"critical": Critical, "CRITICAL": Critical, "Critical": Critical, "": Sheddable, "sheddable": Sheddable, "criticalx": Sheddable, "crit": Sheddable} {
		if got := ParsePriority(in); got != want {
			t.Errorf("%q: %v, want %v", in, got, want)
		}
	}
}
