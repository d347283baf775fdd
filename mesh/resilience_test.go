package mesh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/clocktest"
)

// countingListener counts the connections a server accepts, to prove
// that a call made no network I/O.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// resServer is an HTTP server of the resilience tests: a real mesh
// Server over mutual TLS on loopback whose behaviour each request picks
// with the X-Mode header: "fail" answers 503, "block" waits for a status
// on release (or the request's end), "stall" waits for the request to be
// cancelled and counts it; anything else answers 200 with the server's
// name and the request body.
type resServer struct {
	name      string
	addr      string
	ln        *countingListener
	requests  atomic.Int64
	blocked   atomic.Int64
	cancelled atomic.Int64
	failAll   atomic.Bool // answer 503 to every request
	stallAll  atomic.Bool // stall every request
	release   chan int
}

func startResServer(t *testing.T, env *testEnv, name string, opts ...ServerOption) *resServer {
	t.Helper()
	s := &resServer{name: name, release: make(chan int)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		mode := r.Header.Get("X-Mode")
		if s.failAll.Load() {
			mode = "fail"
		}
		if s.stallAll.Load() {
			mode = "stall"
		}
		switch mode {
		case "fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "block":
			s.blocked.Add(1)
			select {
			case code := <-s.release:
				w.WriteHeader(code)
			case <-r.Context().Done():
			}
		case "stall":
			<-r.Context().Done()
			s.cancelled.Add(1)
		default:
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s", s.name, body)
		}
	})
	srv, err := NewServer(h, append([]ServerOption{WithIdentity(env.source(testServerID))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.ln = &countingListener{Listener: ln}
	s.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(s.ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return s
}

func publishServers(t *testing.T, env *testEnv, service string, servers ...*resServer) {
	t.Helper()
	eps := make([]discovery.Endpoint, len(servers))
	for i, s := range servers {
		eps[i] = discovery.Endpoint{ID: s.name, Addr: s.addr}
	}
	if err := env.discovery.Set(service, eps...); err != nil {
		t.Fatal(err)
	}
}

// call sends a request with X-Mode mode and returns the status, or the
// error.
func call(t *testing.T, hc *http.Client, method, url, mode string, body []byte) (int, string, error) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(testContext(t, 20*time.Second), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if mode != "" {
		req.Header.Set("X-Mode", mode)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// poll waits until cond holds, failing the test after 10 s.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	pollEvery(t, time.Millisecond, 10*time.Second, "waiting for "+what, cond)
}

// TestCircuitBreakerSemantics checks gobreaker's semantics through a weft
// client against a real server: trip after the threshold; open fails fast
// without a connection; half-open admits exactly the configured probes and
// refuses a concurrent extra one; a failed probe re-opens; successes
// close; a result from before a state change does not count.
func TestCircuitBreakerSemantics(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	s := startResServer(t, env, "flaky-1")
	publishServers(t, env, "flaky", s)
	changes := make(chan breaker.StateChange, 64)
	c := env.client(WithCircuitBreaker(breaker.Settings{
		ConsecutiveFailures: 3,
		OpenTimeout:         time.Second, // long enough for the open-state checks on a slow machine
		HalfOpenProbes:      2,
		OnStateChange:       func(ch breaker.StateChange) { changes <- ch },
	}))
	hc := c.HTTPClient()
	const url = "http://flaky/"
	expectChange := func(from, to breaker.State) {
		t.Helper()
		select {
		case ch := <-changes:
			if ch.From != from || ch.To != to || ch.Name != "flaky-1" || ch.Service != "flaky" {
				t.Fatalf("state change %+v, want %v→%v", ch, from, to)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no state change %v→%v", from, to)
		}
	}

	// Trips after three consecutive failures (5xx are answers, not errors).
	for i := 0; i < 3; i++ {
		if code, _, err := call(t, hc, "GET", url, "fail", nil); err != nil || code != 503 {
			t.Fatalf("failure %d: %d %v", i, code, err)
		}
	}
	expectChange(breaker.Closed, breaker.Open)
	br := c.Breakers("flaky").Get("flaky-1")

	// Open: fails fast, with no connection and no request.
	cl, err := c.cluster("flaky")
	if err != nil {
		t.Fatal(err)
	}
	cl.transport.CloseIdleConnections()
	conns, reqs := s.ln.accepted.Load(), s.requests.Load()
	for i := 0; i < 20; i++ {
		start := time.Now()
		_, _, err := call(t, hc, "GET", url, "", nil)
		if !errors.Is(err, ErrCircuitOpen) || !errors.Is(err, breaker.ErrCircuitOpen) {
			t.Fatalf("call %d on an open breaker: %v, want ErrCircuitOpen", i, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("open breaker took %v to refuse", d)
		}
	}
	if n, r := s.ln.accepted.Load()-conns, s.requests.Load()-reqs; n != 0 || r != 0 {
		t.Fatalf("open breaker: %d connections and %d requests reached the server", n, r)
	}

	// Half-open: exactly two probes, a concurrent third is refused.
	poll(t, "half-open", func() bool { return br.State() == breaker.HalfOpen })
	expectChange(breaker.Open, breaker.HalfOpen)
	reqs = s.requests.Load()
	var wg sync.WaitGroup
	codes := make(chan int, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := call(t, hc, "GET", url, "block", nil)
			if err != nil {
				t.Error(err)
			}
			codes <- code
		}()
	}
	poll(t, "two blocked probes", func() bool { return s.blocked.Load() == 2 })
	if _, _, err := call(t, hc, "GET", url, "", nil); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("third concurrent probe: %v, want ErrCircuitOpen", err)
	}
	s.release <- http.StatusOK
	s.release <- http.StatusOK
	wg.Wait()
	if n := s.requests.Load() - reqs; n != 2 {
		t.Fatalf("half-open breaker let %d requests through, want 2", n)
	}
	expectChange(breaker.HalfOpen, breaker.Closed)

	// A probe failure re-opens.
	for i := 0; i < 3; i++ {
		call(t, hc, "GET", url, "fail", nil)
	}
	expectChange(breaker.Closed, breaker.Open)
	poll(t, "half-open", func() bool { return br.State() == breaker.HalfOpen })
	expectChange(breaker.Open, breaker.HalfOpen)
	if code, _, _ := call(t, hc, "GET", url, "fail", nil); code != 503 {
		t.Fatalf("probe: %d", code)
	}
	expectChange(breaker.HalfOpen, breaker.Open)

	// Successes close it.
	poll(t, "half-open", func() bool { return br.State() == breaker.HalfOpen })
	expectChange(breaker.Open, breaker.HalfOpen)
	for i := 0; i < 2; i++ {
		if code, _, err := call(t, hc, "GET", url, "", nil); code != 200 {
			t.Fatalf("probe %d: %d %v", i, code, err)
		}
	}
	expectChange(breaker.HalfOpen, breaker.Closed)

	// A slow call admitted while closed succeeds after the breaker
	// tripped and went half-open: it must not count as a probe.
	blocked := s.blocked.Load()
	slow := make(chan int)
	go func() {
		code, _, _ := call(t, hc, "GET", url, "block", nil)
		slow <- code
	}()
	poll(t, "the slow call", func() bool { return s.blocked.Load() == blocked+1 })
	for i := 0; i < 3; i++ {
		call(t, hc, "GET", url, "fail", nil)
	}
	expectChange(breaker.Closed, breaker.Open)
	poll(t, "half-open", func() bool { return br.State() == breaker.HalfOpen })
	expectChange(breaker.Open, breaker.HalfOpen)
	s.release <- http.StatusOK
	if code := <-slow; code != 200 {
		t.Fatalf("slow call: %d", code)
	}
	if st := br.State(); st != breaker.HalfOpen {
		t.Fatalf("state %v after an old success, want half-open", st)
	}
	select {
	case ch := <-changes:
		t.Fatalf("unexpected state change %+v", ch)
	default:
	}
}

// TestRetriesAroundAFailingEndpoint: one of three endpoints answers 503 to
// everything; with retries and breakers, 2 000 idempotent requests all
// succeed and the failing endpoint sees few of them.
func TestRetriesAroundAFailingEndpoint(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	good1, good2, bad := startResServer(t, env, "good-1"), startResServer(t, env, "good-2"), startResServer(t, env, "bad")
	bad.failAll.Store(true)
	publishServers(t, env, "svc", good1, bad, good2)
	c := env.client(
		WithRetry(RetryPolicy{Backoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}),
		WithCircuitBreaker(breaker.Settings{}),
	)
	hc := c.HTTPClient()
	const total, workers = 2000, 4
	var failures atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < total/workers; i++ {
				if code, _, err := call(t, hc, "GET", "http://svc/", "", nil); err != nil || code != 200 {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("2000 GETs: %d failures; failing endpoint received %d requests, the others %d and %d",
		failures.Load(), bad.requests.Load(), good1.requests.Load(), good2.requests.Load())
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed", failures.Load(), total)
	}
	if n := bad.requests.Load(); n > 50 {
		t.Fatalf("failing endpoint received %d requests after its breaker should have opened", n)
	}
}

// TestRetriesStayWithinBudget: every endpoint fails; retries are bounded by
// the budget (20% of requests + 10/s over 10 s, on a frozen clock) and
// callers get their answer fast. With breakers, they get ErrCircuitOpen.
func TestRetriesStayWithinBudget(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	servers := []*resServer{startResServer(t, env, "a"), startResServer(t, env, "b"), startResServer(t, env, "c")}
	for _, s := range servers {
		s.failAll.Store(true)
	}
	publishServers(t, env, "down", servers...)
	t0 := time.Unix(1_700_000_000, 0)
	c := env.client(
		WithClock(nowClock(func() time.Time { return t0 })),
		WithRetry(RetryPolicy{MaxAttempts: 5, Backoff: time.Microsecond, MaxBackoff: time.Microsecond}),
	)
	hc := c.HTTPClient()
	const n = 300
	var slowest time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		if code, _, err := call(t, hc, "GET", "http://down/", "", nil); err != nil || code != 503 {
			t.Fatalf("call %d: %d %v, want the 503", i, code, err)
		}
		slowest = max(slowest, time.Since(start))
	}
	attempts := int64(0)
	for _, s := range servers {
		attempts += s.requests.Load()
	}
	budget := int64(0.2*n + 10*10)
	t.Logf("all endpoints failing: %d calls made %d attempts (%d retries, budget %d); slowest call %v", n, attempts, attempts-n, budget, slowest)
	if attempts-n > budget {
		t.Fatalf("%d retries exceed the budget of %d", attempts-n, budget)
	}
	if attempts-n < 100 {
		t.Fatalf("only %d retries: the budget floor was not used", attempts-n)
	}

	// With breakers, the calls fail fast once every breaker is open.
	cb := env.client(WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 2, OpenTimeout: time.Minute}), WithRetry(RetryPolicy{Backoff: time.Microsecond}))
	hcb := cb.HTTPClient()
	for i := 0; i < 20; i++ {
		call(t, hcb, "GET", "http://down/", "", nil)
	}
	before := int64(0)
	for _, s := range servers {
		before += s.requests.Load()
	}
	var lat []time.Duration
	for i := 0; i < 50; i++ {
		start := time.Now()
		_, _, err := call(t, hcb, "GET", "http://down/", "", nil)
		lat = append(lat, time.Since(start))
		if !errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("call %d with all breakers open: %v", i, err)
		}
	}
	after := int64(0)
	for _, s := range servers {
		after += s.requests.Load()
	}
	slices.Sort(lat)
	t.Logf("all breakers open: 50 calls failed with ErrCircuitOpen, median %v, max %v, %d requests reached servers", lat[25], lat[49], after-before)
	if lat[25] > 10*time.Millisecond || after != before {
		t.Fatalf("median fail-fast latency %v, %d requests reached servers", lat[25], after-before)
	}
}

// TestPostRetries: a POST that reached a server is never retried; a POST
// refused at connect is, with its body replayed.
func TestPostRetries(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	failing := startResServer(t, env, "failing")
	failing.failAll.Store(true)
	publishServers(t, env, "post-fail", failing)
	c := env.client(WithRetry(RetryPolicy{Backoff: time.Millisecond}))
	hc := c.HTTPClient()
	if code, _, err := call(t, hc, "POST", "http://post-fail/", "", []byte("x")); err != nil || code != 503 {
		t.Fatalf("POST: %d %v", code, err)
	}
	if n := failing.requests.Load(); n != 1 {
		t.Fatalf("POST that reached the server was sent %d times", n)
	}
	// GET to the same server is retried (3 attempts).
	call(t, hc, "GET", "http://post-fail/", "", nil)
	if n := failing.requests.Load(); n != 4 {
		t.Fatalf("GET: server saw %d requests in all, want 1 + 3", n)
	}

	// A port nobody listens on refuses connections.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := ln.Addr().String()
	ln.Close()
	good := startResServer(t, env, "good")
	if err := env.discovery.Set("post", discovery.Endpoint{ID: "refusing", Addr: refusing}, discovery.Endpoint{ID: "good", Addr: good.addr}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		body := fmt.Sprintf("payload-%d", i)
		code, answer, err := call(t, hc, "POST", "http://post/", "", []byte(body))
		if err != nil || code != 200 || answer != "good "+body {
			t.Fatalf("POST %d: %d %q %v", i, code, answer, err)
		}
	}
	if n := good.requests.Load(); n != 10 {
		t.Fatalf("good server received %d POSTs, want 10", n)
	}
}

// firstPolicy picks the first endpoint of the snapshot (Balancer.Pick then
// moves on to the next one a Skip does not rule out), so tests can send
// the first attempt to a chosen endpoint.
type firstPolicy struct{}

func (firstPolicy) Build(eps []*balancer.Endpoint) balancer.Picker { return firstPicker(eps) }

type firstPicker []*balancer.Endpoint

func (p firstPicker) Pick(balancer.Info) (*balancer.Endpoint, error) { return p[0], nil }

// TestHedgingAroundAStall: the first attempt goes to an endpoint that
// stalls; after the hedge delay a second goes to the other endpoint, whose
// answer wins, and the stalled attempt is cancelled (the server sees it).
func TestHedgingAroundAStall(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	stall, fast := startResServer(t, env, "stall"), startResServer(t, env, "fast")
	stall.stallAll.Store(true)
	publishServers(t, env, "hedged", stall, fast)
	const delay = 50 * time.Millisecond
	c := env.client(
		WithBalancer(func(string) balancer.Policy { return firstPolicy{} }),
		WithHedging(HedgePolicy{Delay: delay}),
	)
	hc := c.HTTPClient()
	// Warm the connection to the fast endpoint, so its latency is that of
	// a request, not of a handshake.
	if _, err := c.cluster("hedged"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		start := time.Now()
		code, body, err := call(t, hc, "GET", "http://hedged/", "", nil)
		took := time.Since(start)
		if err != nil || code != 200 || !strings.HasPrefix(body, "fast") {
			t.Fatalf("hedged GET %d: %d %q %v", i, code, body, err)
		}
		t.Logf("hedged GET %d answered by %q in %v (hedge delay %v)", i, body, took, delay)
		if took < delay || took > delay+2*time.Second {
			t.Fatalf("hedged GET took %v", took)
		}
		want := int64(i + 1)
		poll(t, "the stalled attempt's cancellation", func() bool { return stall.cancelled.Load() == want })
	}
	// The stall endpoint received every first attempt, the fast one every
	// hedge.
	if s, f := stall.requests.Load(), fast.requests.Load(); s != 3 || f != 3 {
		t.Fatalf("stall saw %d, fast %d requests, want 3 and 3", s, f)
	}
}

// TestServerRouteRateLimit: exactly the burst passes, then 429 with
// Retry-After; other routes are not limited.
func TestServerRouteRateLimit(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	t0 := time.Unix(1_700_000_000, 0)
	s := startResServer(t, env, "limited",
		WithClock(nowClock(func() time.Time { return t0 })),
		WithRouteRateLimit("/limited", breaker.RateLimit{PerSecond: 1, Burst: 5}))
	publishServers(t, env, "rl", s)
	c := env.client()
	hc := c.HTTPClient()
	for i := 0; i < 8; i++ {
		req, _ := http.NewRequest("GET", "http://rl/limited", nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := 200
		if i >= 5 {
			want = 429
		}
		if resp.StatusCode != want {
			t.Fatalf("call %d: %d, want %d", i, resp.StatusCode, want)
		}
		if want == 429 && resp.Header.Get("Retry-After") != "1" {
			t.Fatalf("call %d: Retry-After %q, want 1", i, resp.Header.Get("Retry-After"))
		}
	}
	if code, _, _ := call(t, hc, "GET", "http://rl/other", "", nil); code != 200 {
		t.Fatalf("unlimited route: %d", code)
	}
	if n := s.requests.Load(); n != 6 {
		t.Fatalf("handler ran %d times, want 5 + 1", n)
	}
}

// TestServerPeerRateLimit: a noisy identity at 10× its limit does not
// lower a quiet identity's success rate.
func TestServerPeerRateLimit(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	var clock atomic.Int64
	clock.Store(time.Unix(1_700_000_000, 0).UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	s := startResServer(t, env, "peers", WithClock(nowClock(now)), WithPeerRateLimit(breaker.RateLimit{PerSecond: 10, Burst: 10}, 0))
	publishServers(t, env, "peers", s)
	client := func(id string) *http.Client {
		src := env.source(spiffeid.RequireFromString(id))
		c, err := NewClient(WithDiscovery(env.discovery), WithIdentity(src))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.HTTPClient()
	}
	noisy, quiet := client("spiffe://example.org/noisy"), client("spiffe://example.org/quiet")
	var noisyOK, noisySent, quietOK, quietSent int
	for step := 0; step < 20; step++ { // 2 s of the fake clock, 100 ms a step
		for i := 0; i < 10; i++ { // 100/s: 10× the limit
			noisySent++
			if code, _, _ := call(t, noisy, "GET", "http://peers/", "", nil); code == 200 {
				noisyOK++
			} else if code != 429 {
				t.Fatalf("noisy: %d", code)
			}
		}
		quietSent++ // 10/s: at the limit
		if code, _, _ := call(t, quiet, "GET", "http://peers/", "", nil); code == 200 {
			quietOK++
		}
		clock.Add(int64(100 * time.Millisecond))
	}
	t.Logf("noisy identity: %d/%d succeeded; quiet identity: %d/%d", noisyOK, noisySent, quietOK, quietSent)
	if quietOK != quietSent {
		t.Fatalf("quiet identity: %d of %d succeeded", quietOK, quietSent)
	}
	// Burst 10 + 10/s over the 1.9 s between the first and last step.
	if noisyOK < 25 || noisyOK > 30 {
		t.Fatalf("noisy identity: %d succeeded, want 10 + 10/s × 1.9 s ≈ 29", noisyOK)
	}
}

// TestLoadSheddingUnderOverload: a server limited to 10 concurrent
// requests of 40 ms (250/s) is offered 3× that, a sixth of it critical:
// critical requests keep ≥ 99% success, sheddable ones are shed fast.
func TestLoadSheddingUnderOverload(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	const limit, work = 10, 40 * time.Millisecond
	var inflight, maxInflight atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for {
			m := maxInflight.Load()
			if n <= m || maxInflight.CompareAndSwap(m, n) {
				break
			}
		}
		t := time.NewTimer(work) // the request's service time
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
	})
	srv, err := NewServer(h, WithIdentity(env.source(testServerID)),
		// Critical calls wait for a slot long enough for a loaded machine.
		WithConcurrencyLimit(breaker.ConcurrencySettings{Limit: limit, CriticalReserve: 0.3, CriticalWait: 5 * time.Second}),
		WithTrustedPriority(tlsid.AuthorizeID(testClientID)))
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, srv)
	if err := env.discovery.Set("busy", discovery.Endpoint{ID: "busy-1", Addr: addr}); err != nil {
		t.Fatal(err)
	}
	hc := env.client().HTTPClient()
	capacity := float64(limit) / work.Seconds() // requests per second
	const duration = 1500 * time.Millisecond
	// 30 paced workers, each sending one request per service time: 3×
	// the capacity offered, 5 of the workers critical (half the capacity).
	const workers, criticalWorkers = 3 * limit, 5
	period := work
	type result struct {
		critical bool
		code     int
		err      error
		took     time.Duration
	}
	results := make(chan result, 8192)
	var wg sync.WaitGroup
	begin := time.Now()
	end := begin.Add(duration)
	for w := 0; w < workers; w++ {
		critical := w < criticalWorkers
		wg.Add(1)
		go func() {
			defer wg.Done()
			pace := time.NewTimer(0)
			defer pace.Stop()
			// Spread the workers' phases over one period.
			next := begin.Add(time.Duration(w) * period / workers)
			for ; next.Before(end); next = next.Add(period) {
				pace.Reset(time.Until(next))
				<-pace.C
				req, _ := http.NewRequestWithContext(testContext(t, 60*time.Second), "GET", "http://busy/", nil)
				if critical {
					req.Header.Set(PriorityHeader, "critical")
				}
				start := time.Now()
				resp, err := hc.Do(req)
				r := result{critical: critical, err: err, took: time.Since(start)}
				if err == nil {
					r.code = resp.StatusCode
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				results <- r
			}
		}()
	}
	wg.Wait()
	close(results)
	var critOK, crit, shedOK, shed, shedCount int
	var shedLat []time.Duration
	for r := range results {
		if r.critical {
			crit++
			if r.err == nil && r.code == 200 {
				critOK++
			}
			continue
		}
		shed++
		switch {
		case r.err == nil && r.code == 200:
			shedOK++
		case r.err == nil && r.code == 503:
			shedCount++
			shedLat = append(shedLat, r.took)
		default:
			t.Errorf("sheddable: %d %v", r.code, r.err)
		}
	}
	slices.Sort(shedLat)
	p := func(q float64) time.Duration {
		if len(shedLat) == 0 {
			return 0
		}
		return shedLat[int(q*float64(len(shedLat)-1))]
	}
	sent := crit + shed
	t.Logf("offered %.0f/s (3× %.0f/s) for %v: %d sent; critical %d/%d = %.1f%% ok; sheddable %d/%d ok, %d shed (%.1f%%), shed latency p50 %v p99 %v; max in flight %d",
		float64(sent)/duration.Seconds(), capacity, duration, sent, critOK, crit, 100*float64(critOK)/float64(crit),
		shedOK, shed, shedCount, 100*float64(shedCount)/float64(shed), p(0.5), p(0.99), maxInflight.Load())
	if float64(critOK) < 0.99*float64(crit) {
		t.Fatalf("critical success %d/%d below 99%%", critOK, crit)
	}
	if shedCount == 0 || maxInflight.Load() > limit {
		t.Fatalf("no shedding (%d shed) or limit exceeded (%d in flight)", shedCount, maxInflight.Load())
	}
	// Shedding answers at once, not after a service time: a bound
	// generous for a loaded machine, far below the critical wait.
	if p(0.5) > 500*time.Millisecond {
		t.Fatalf("shed median latency %v: not fast", p(0.5))
	}
}

// TestClientRateLimit: fail fast once the burst is spent (no I/O), or wait
// for a token within the caller's deadline.
func TestClientRateLimit(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	s := startResServer(t, env, "rl-1")
	publishServers(t, env, "rl", s)
	t0 := time.Unix(1_700_000_000, 0)
	c := env.client(WithClock(nowClock(func() time.Time { return t0 })), WithRateLimit(func(service string) *ClientRateLimit {
		if service != "rl" {
			return nil
		}
		return &ClientRateLimit{RateLimit: breaker.RateLimit{PerSecond: 1, Burst: 2}}
	}))
	hc := c.HTTPClient()
	for i := 0; i < 2; i++ {
		if code, _, err := call(t, hc, "GET", "http://rl/", "", nil); err != nil || code != 200 {
			t.Fatalf("call %d: %d %v", i, code, err)
		}
	}
	_, _, err := call(t, hc, "GET", "http://rl/", "", nil)
	if !errors.Is(err, ErrRateLimited) || !errors.Is(err, breaker.ErrRateLimited) {
		t.Fatalf("over the limit: %v, want ErrRateLimited", err)
	}
	if n := s.requests.Load(); n != 2 {
		t.Fatalf("server saw %d requests, want 2", n)
	}

	// Waiting: 10/s, burst 1. The second call waits for its token, 100 ms
	// after the first took one; with a 10 ms deadline it fails at once.
	w := env.client(WithRateLimit(func(string) *ClientRateLimit {
		return &ClientRateLimit{RateLimit: breaker.RateLimit{PerSecond: 10, Burst: 1}, Wait: true}
	}))
	hw := w.HTTPClient()
	start := time.Now()
	if code, _, err := call(t, hw, "GET", "http://rl/", "", nil); code != 200 {
		t.Fatalf("first: %d %v", code, err)
	}
	if code, _, err := call(t, hw, "GET", "http://rl/", "", nil); code != 200 {
		t.Fatalf("second: %d %v", code, err)
	}
	if took := time.Since(start); took < 95*time.Millisecond {
		t.Fatalf("two calls took %v: the second did not wait for a token", took)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://rl/", nil)
	start = time.Now()
	if _, err := hw.Do(req); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("short deadline: %v, want ErrRateLimited", err)
	}
	if took := time.Since(start); took > 8*time.Millisecond {
		t.Logf("note: refusal took %v", took)
	}
}

// TestDeadlinesBoundAttempts: no retry starts with less than MinRemaining
// before the caller's deadline; a per-try timeout ends a stalled attempt
// and the retry goes to another endpoint.
func TestDeadlinesBoundAttempts(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	failing := startResServer(t, env, "failing")
	failing.failAll.Store(true)
	publishServers(t, env, "dl", failing)
	c := env.client(WithRetry(RetryPolicy{Backoff: time.Millisecond, MinRemaining: time.Second}))
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://dl/", nil)
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || failing.requests.Load() != 1 {
		t.Fatalf("%d after %d attempts, want 503 after 1 (less than MinRemaining left)", resp.StatusCode, failing.requests.Load())
	}

	stall, fast := startResServer(t, env, "stall"), startResServer(t, env, "fast")
	stall.stallAll.Store(true)
	publishServers(t, env, "pertry", stall, fast)
	pc := env.client(
		WithBalancer(func(string) balancer.Policy { return firstPolicy{} }),
		// The per-try timeout covers the answer's body too: long enough
		// for the fast endpoint's on a loaded machine.
		WithRetry(RetryPolicy{Backoff: time.Millisecond, PerTryTimeout: time.Second}),
	)
	start := time.Now()
	code, body, err := call(t, pc.HTTPClient(), "GET", "http://pertry/", "", nil)
	if err != nil || code != 200 || !strings.HasPrefix(body, "fast") {
		t.Fatalf("per-try timeout: %d %q %v", code, body, err)
	}
	if took := time.Since(start); took < time.Second {
		t.Fatalf("answered in %v, before the per-try timeout", took)
	}
	poll(t, "the timed-out attempt's cancellation", func() bool { return stall.cancelled.Load() == 1 })
}

// TestRetryBodyCap: a body over the cap is not replayed, so a POST refused
// at connect with a large body is not retried.
func TestRetryBodyCap(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := ln.Addr().String()
	ln.Close()
	good := startResServer(t, env, "good")
	if err := env.discovery.Set("cap", discovery.Endpoint{ID: "refusing", Addr: refusing}, discovery.Endpoint{ID: "good", Addr: good.addr}); err != nil {
		t.Fatal(err)
	}
	c := env.client(
		WithBalancer(func(string) balancer.Policy { return firstPolicy{} }),
		WithRetry(RetryPolicy{Backoff: time.Millisecond, MaxBodyBytes: 16}),
	)
	if code, _, err := call(t, c.HTTPClient(), "POST", "http://cap/", "", []byte("small")); err != nil || code != 200 {
		t.Fatalf("small body: %d %v", code, err)
	}
	if _, _, err := call(t, c.HTTPClient(), "POST", "http://cap/", "", bytes.Repeat([]byte("x"), 17)); err == nil || !isDialError(err) {
		t.Fatalf("large body: %v, want the connection refusal", err)
	}
	if n := good.requests.Load(); n != 1 {
		t.Fatalf("good server saw %d requests, want 1", n)
	}
}

// TestServiceBreaker: with a breaker for the whole service, failures
// spread over every endpoint trip it before any endpoint's own breaker,
// and calls then fail fast.
func TestServiceBreaker(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	servers := []*resServer{startResServer(t, env, "a"), startResServer(t, env, "b"), startResServer(t, env, "c")}
	for _, s := range servers {
		s.failAll.Store(true)
	}
	publishServers(t, env, "svc-down", servers...)
	c := env.client(WithCircuitBreaker(breaker.Settings{ConsecutiveFailures: 3, OpenTimeout: time.Minute}, breaker.WithServiceBreaker()))
	hc := c.HTTPClient()
	for i := 0; i < 3; i++ {
		if code, _, err := call(t, hc, "GET", "http://svc-down/", "", nil); code != 503 {
			t.Fatalf("call %d: %d %v", i, code, err)
		}
	}
	if _, _, err := call(t, hc, "GET", "http://svc-down/", "", nil); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("after 3 failures over 3 endpoints: %v, want ErrCircuitOpen", err)
	}
	set := c.Breakers("svc-down")
	if set.Service().State() != breaker.Open {
		t.Fatalf("service breaker %v", set.Service().State())
	}
	for _, s := range servers {
		if st := set.Get(s.name).State(); st != breaker.Closed {
			t.Fatalf("endpoint %s breaker %v, want closed (one failure each)", s.name, st)
		}
	}
}

// TestRetryAfterHonoured: a 429 with Retry-After is retried no sooner
// than asked, on the client's clock, and not at all when the caller's
// deadline comes first.
func TestRetryAfterHonoured(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	t0 := time.Unix(1_700_000_000, 0)
	s := startResServer(t, env, "ra",
		WithClock(nowClock(func() time.Time { return t0 })),
		WithRouteRateLimit("/", breaker.RateLimit{PerSecond: 1, Burst: 1}))
	publishServers(t, env, "ra", s)
	clk := clocktest.New(t0)
	c := env.client(WithClock(clk), WithRetry(RetryPolicy{MaxAttempts: 2, Backoff: time.Millisecond}))
	hc := c.HTTPClient()
	if code, _, _ := call(t, hc, "GET", "http://ra/", "", nil); code != 200 {
		t.Fatalf("first call: %d", code)
	}
	// The deadline is closer than Retry-After (1 s): one attempt only.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://ra/", nil)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || s.requests.Load() != 1 {
		// s.requests counts handler runs: the 429s never reach it.
		t.Fatalf("short deadline: %d", resp.StatusCode)
	}
	// With time to spare, the retry waits out Retry-After on the
	// client's clock: not sent before a second has passed on it.
	done := make(chan int, 1)
	go func() {
		code, _, _ := call(t, hc, "GET", "http://ra/", "", nil)
		done <- code
	}()
	clk.AwaitWaiting(t, 1)
	clk.Advance(999 * time.Millisecond)
	select {
	case code := <-done:
		t.Fatalf("retried 429 before Retry-After passed (status %d)", code)
	default:
	}
	clk.Advance(time.Millisecond)
	if code := <-done; code != 429 {
		t.Fatalf("after the retry: %d, want the second 429", code)
	}
}

// TestRetryWaitBounded: without a deadline, a server cannot park a caller
// with a huge Retry-After: the call ends with the answer it has.
func TestRetryWaitBounded(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "31536000")
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	srv, err := NewServer(h, WithIdentity(env.source(testServerID)))
	if err != nil {
		t.Fatal(err)
	}
	if err := env.discovery.Set("park", discovery.Endpoint{ID: "park-1", Addr: startServer(t, srv)}); err != nil {
		t.Fatal(err)
	}
	c := env.client(WithRetry(RetryPolicy{}))
	req, _ := http.NewRequest("GET", "http://park/", nil) // no deadline
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want the 503 at once", resp.StatusCode)
	}
}

// TestHedgeDelayFromObservedLatency: without a fixed delay, hedging waits
// the default until 20 calls were observed, then their 95th percentile.
func TestHedgeDelayFromObservedLatency(t *testing.T) {
	leaktest.Check(t)
	g := newGuard("svc", &resilienceConfig{hedge: &HedgePolicy{}}, nil)
	if d := g.hedgeDelay(g.hedge); d != DefaultHedgeDelay {
		t.Fatalf("delay %v before any observation, want %v", d, DefaultHedgeDelay)
	}
	for i := 1; i <= 100; i++ {
		g.latency.observe(time.Duration(i) * time.Millisecond)
	}
	if d := g.hedgeDelay(g.hedge); d != 96*time.Millisecond {
		t.Fatalf("delay %v after 1..100 ms, want the p95, 96ms", d)
	}
	// The window keeps the last 256 samples: 300 slow ones replace them.
	for i := 0; i < 300; i++ {
		g.latency.observe(time.Second)
	}
	if d := g.hedgeDelay(g.hedge); d != time.Second {
		t.Fatalf("delay %v after 300 samples of 1s", d)
	}
	fixed := newGuard("svc", &resilienceConfig{hedge: &HedgePolicy{Delay: 7 * time.Millisecond}}, nil)
	if d := fixed.hedgeDelay(fixed.hedge); d != 7*time.Millisecond || fixed.latency != nil {
		t.Fatalf("fixed delay %v", d)
	}
}
