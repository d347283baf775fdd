package mesh

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/clocktest"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// The acceptance tests of traffic management: real mTLS servers on
// loopback, HTTP and gRPC, routed by one table each. The refusal of each
// kind of invalid config, with its message and path, is tested by the
// table of TestValidateRefuses in route/validate_test.go; here an
// invalid update is shown to leave the client on its previous table.

// instance is a test server that counts what it receives, by route key
// (the HTTP path or the gRPC x-mode metadata) and by request id
// (x-req-id), and keeps the headers of the last request of each key.
type instance struct {
	name string
	gate chan struct{} // when not nil, requests wait for it to close

	mu     sync.Mutex
	hits   map[string]int
	ids    map[string]int
	header map[string]http.Header
}

func newInstance(name string) *instance {
	return &instance{name: name, hits: map[string]int{}, ids: map[string]int{}, header: map[string]http.Header{}}
}

// arrive records a request and returns how many times its id arrived.
func (in *instance) arrive(key, id string, h http.Header) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.hits[key]++
	in.header[key] = h
	if id == "" {
		return 1
	}
	in.ids[id]++
	return in.ids[id]
}

func (in *instance) count(key string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.hits[key]
}

func (in *instance) lastHeader(key string) http.Header {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.header[key]
}

// idCounts returns how many times each request id arrived.
func (in *instance) idCounts() map[string]int {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make(map[string]int, len(in.ids))
	for k, v := range in.ids {
		out[k] = v
	}
	return out
}

// serviceTime is how long "slow" requests take: the work of the slow
// routes' scenario.
const serviceTime = 300 * time.Millisecond

// behave is what an instance does with a request of key once counted:
// the scenario's answer, or an error status for gRPC.
func (in *instance) behave(ctx context.Context, key string, arrival int) (int, error) {
	if in.gate != nil {
		select {
		case <-in.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	switch key {
	case "/slow", "slow":
		t := time.NewTimer(serviceTime) // the slow service's work, not a wait for state
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	case "/flaky", "flaky":
		if arrival == 1 {
			return http.StatusServiceUnavailable, status.Error(codes.Unavailable, "first try fails")
		}
	}
	return http.StatusOK, nil
}

func (in *instance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := in.arrive(r.URL.Path, r.Header.Get("X-Req-Id"), r.Header.Clone())
	code, _ := in.behave(r.Context(), r.URL.Path, n)
	if code == 0 {
		return
	}
	w.Header().Set("X-Served-By", in.name)
	w.WriteHeader(code)
	io.WriteString(w, in.name)
}

func (in *instance) answerGRPC(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	key := first(md, "x-mode")
	h := make(http.Header, len(md))
	for k, vs := range md {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	n := in.arrive(key, first(md, "x-req-id"), h)
	if _, err := in.behave(ctx, key, n); err != nil {
		return "", err
	}
	return in.name, nil
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

// parallel runs fn(i) for i in [0, n) on a few workers.
func parallel(n int, fn func(i int)) {
	const workers = 8
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				fn(i)
			}
		}()
	}
	wg.Wait()
}

// within fails the test unless got/n is want±tol (shares in [0, 1]).
func within(t *testing.T, what string, got, n int, want, tol float64) {
	t.Helper()
	share := float64(got) / float64(n)
	t.Logf("%s: %d of %d (%.2f%%)", what, got, n, 100*share)
	if share < want-tol || share > want+tol {
		t.Errorf("%s: %.2f%% of %d calls, want %.0f±%.0f%%", what, 100*share, n, 100*want, 100*tol)
	}
}

const acceptHTTPYAML = `
services:
  pay:
    defaultSubset: v1
    subsets:
      v1: {meta: {version: v1}}
      v2: {meta: {version: v2}}
    routes:
      - name: canary
        match: [{headers: {x-canary: {exact: "yes"}}}]
        backends: [{subset: v2}]
      - name: first
        match: [{path: {prefix: /first}}]
        backends: [{subset: v2}]
      - name: second
        match: [{path: {exact: /first/x}}, {path: {exact: /second}}]
        backends: [{subset: v1}]
      - name: split
        match: [{path: {exact: /split}}]
        backends: [{subset: v1, weight: 9000}, {subset: v2, weight: 1000}]
      - name: moved
        match: [{path: {exact: /moved}}]
        redirect: {authority: elsewhere, path: /here, code: 302}
      - name: direct
        match: [{path: {exact: /direct}}]
        directResponse: {status: 418, body: short and stout}
      - name: slow-bounded
        match: [{path: {exact: /slow}, headers: {x-patient: {present: true, invert: true}}}]
        timeout: 50ms
      - name: slow-patient
        match: [{path: {exact: /slow}}]
        timeout: 20s
      - name: flaky
        match: [{path: {exact: /flaky}}]
        retries: {attempts: 2, retryOn: ["503"]}
      - name: abort
        match: [{path: {exact: /abort}}]
        fault: {abort: {httpStatus: 503, percent: 50}}
        retries: {attempts: 3, retryOn: ["503", 5xx, connect-failure]}
      - name: delayed
        match: [{path: {exact: /delayed}}]
        fault: {delay: {fixed: 1h, percent: 100}}
      - name: headers
        match: [{path: {exact: /headers}}]
        headers:
          request: {set: {x-set: routed}, add: {x-add: added}, remove: [x-remove]}
          response: {set: {x-resp: routed}, remove: [x-served-by]}
      - name: mirrored
        match: [{path: {exact: /mirrored}}]
        mirror: {service: shadow, percent: 100}
`

// httpAccept is the HTTP scene: service "pay" with instances v1 and v2,
// a "shadow" service for mirrors, and a client routed by src.
type httpAccept struct {
	env        *testEnv
	v1, v2, sh *instance
	src        *route.Static
	client     *Client
	hc         *http.Client
}

func newHTTPAccept(t *testing.T) *httpAccept {
	t.Helper()
	a := &httpAccept{env: newTestEnv(t, 0), v1: newInstance("v1"), v2: newInstance("v2"), sh: newInstance("shadow")}
	a.sh.gate = make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-a.sh.gate:
		default:
			close(a.sh.gate)
		}
	})
	serve := func(in *instance) string {
		srv, err := NewServer(in, WithIdentity(a.env.source(testServerID)))
		if err != nil {
			t.Fatal(err)
		}
		return startServer(t, srv)
	}
	if err := a.env.discovery.Set("pay",
		discovery.Endpoint{ID: "v1", Addr: serve(a.v1), Meta: map[string]string{"version": "v1"}},
		discovery.Endpoint{ID: "v2", Addr: serve(a.v2), Meta: map[string]string{"version": "v2"}}); err != nil {
		t.Fatal(err)
	}
	if err := a.env.discovery.Set("shadow", discovery.Endpoint{ID: "shadow", Addr: serve(a.sh)}); err != nil {
		t.Fatal(err)
	}
	a.src = staticRoutes(t, acceptHTTPYAML)
	a.client = a.env.client(WithRoutes(a.src))
	a.hc = a.client.HTTPClient()
	a.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return a
}

func staticRoutes(t testing.TB, yaml string) *route.Static {
	t.Helper()
	cfg, err := route.Parse([]byte(yaml), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	src, err := route.NewStatic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// payGet makes a GET of path with header through hc; it returns the
// status, body and headers, or the error.
func payGet(ctx context.Context, hc *http.Client, path string, header http.Header) (int, string, http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://pay"+path, nil)
	if err != nil {
		return 0, "", nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header, err
}

// TestAcceptRoutesHTTP is the acceptance of traffic management for
// net/http callers over mutual TLS.
func TestAcceptRoutesHTTP(t *testing.T) {
	leaktest.Check(t)
	a := newHTTPAccept(t)
	ctx := testContext(t, 60*time.Second)
	get := func(t *testing.T, path string, header http.Header) (int, string, http.Header) {
		t.Helper()
		code, body, h, err := payGet(ctx, a.hc, path, header)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		return code, body, h
	}

	t.Run("split 90/10", func(t *testing.T) {
		const n = 5000
		parallel(n, func(int) {
			if code, _, _, err := payGet(ctx, a.hc, "/split", nil); err != nil || code != 200 {
				t.Errorf("split: %d %v", code, err)
			}
		})
		if got := a.v1.count("/split") + a.v2.count("/split"); got != n {
			t.Fatalf("servers saw %d calls of %d", got, n)
		}
		within(t, "v2 share", a.v2.count("/split"), n, 0.10, 0.02)
	})

	t.Run("header match", func(t *testing.T) {
		for _, path := range []string{"/other", "/split", "/second"} {
			for range 20 {
				if code, body, _ := get(t, path, http.Header{"X-Canary": {"yes"}}); code != 200 || body != "v2" {
					t.Fatalf("canary header on %s: %d %q", path, code, body)
				}
			}
		}
		if code, body, _ := get(t, "/other", http.Header{"X-Canary": {"no"}}); code != 200 || body != "v1" {
			t.Fatalf("other header value: %d %q, want the default subset", code, body)
		}
	})

	t.Run("first match wins", func(t *testing.T) {
		for _, tt := range []struct{ path, want string }{
			{"/first/x", "v2"}, // both "first" and "second" match: the first wins
			{"/first", "v2"},
			{"/second", "v1"},
			{"/elsewhere", "v1"}, // the catch-all: the default subset
		} {
			if code, body, _ := get(t, tt.path, nil); code != 200 || body != tt.want {
				t.Errorf("%s: %d %q, want %s", tt.path, code, body, tt.want)
			}
		}
	})

	t.Run("redirect and direct response", func(t *testing.T) {
		before := a.v1.count("/moved") + a.v2.count("/moved") + a.v1.count("/direct") + a.v2.count("/direct")
		for _, tt := range []struct {
			path, location, body string
			code                 int
		}{
			{path: "/moved", code: 302, location: "http://elsewhere/here"},
			{path: "/direct", code: 418, body: "short and stout"},
		} {
			code, body, h := get(t, tt.path, nil)
			if code != tt.code || h.Get("Location") != tt.location || body != tt.body {
				t.Errorf("%s: %d %q Location %q; want %d %q %q", tt.path, code, body, h.Get("Location"), tt.code, tt.body, tt.location)
			}
		}
		if after := a.v1.count("/moved") + a.v2.count("/moved") + a.v1.count("/direct") + a.v2.count("/direct"); after != before {
			t.Fatalf("routes that answer themselves reached a server")
		}
	})

	t.Run("timeouts and retries", func(t *testing.T) {
		// The bounded route ends the slow call; the patient one waits.
		start := time.Now()
		code, body, hdr, err := payGet(ctx, a.hc, "/slow", nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("slow call on the 50ms route after %v: %d %q %v %v, want a deadline error", time.Since(start), code, body, hdr, err)
		}
		if code, body, _ := get(t, "/slow", http.Header{"X-Patient": {"1"}}); code != 200 || body != "v1" {
			t.Fatalf("slow call on the 20s route: %d %q", code, body)
		}
		// A 503 on the first try is retried by the route's retryOn.
		for i := range 5 {
			id := "flaky-" + strconv.Itoa(i)
			if code, _, _ := get(t, "/flaky", http.Header{"X-Req-Id": {id}}); code != 200 {
				t.Fatalf("flaky call: %d, want 200 after a retry", code)
			}
			if n := a.v1.idCounts()[id]; n != 2 {
				t.Fatalf("flaky call %s arrived %d times, want 2", id, n)
			}
		}
	})

	t.Run("fault abort 50%, never retried", func(t *testing.T) {
		const n = 5000
		var aborted atomic.Int64
		parallel(n, func(int) {
			code, body, _, err := payGet(ctx, a.hc, "/abort", nil)
			switch {
			case err != nil:
				t.Errorf("abort route: %v", err)
			case code == 503 && body == "fault filter abort":
				aborted.Add(1)
			case code != 200:
				t.Errorf("abort route: %d %q", code, body)
			}
		})
		within(t, "aborted", int(aborted.Load()), n, 0.50, 0.03)
		if arrived := a.v1.count("/abort"); arrived != n-int(aborted.Load()) {
			t.Fatalf("servers saw %d calls, want %d (the calls not aborted, each once)", arrived, n-int(aborted.Load()))
		}
	})

	t.Run("fault delay", func(t *testing.T) {
		clk := clocktest.New(time.Unix(1e9, 0))
		hc := a.env.client(WithRoutes(a.src), WithClock(clk)).HTTPClient()
		done := make(chan error, 1)
		go func() {
			code, body, _, err := payGet(ctx, hc, "/delayed", nil)
			if err == nil && (code != 200 || body != "v1") {
				err = errors.New("delayed call: " + strconv.Itoa(code) + " " + body)
			}
			done <- err
		}()
		awaitDelayed(t, clk, done, func() int { return a.v1.count("/delayed") })
	})

	t.Run("mirror", func(t *testing.T) {
		// The shadow blocks until released: every call returns while
		// its copy is held there.
		const n = 5
		for i := range n {
			if code, body, _ := get(t, "/mirrored", http.Header{"X-Req-Id": {"m" + strconv.Itoa(i)}}); code != 200 || body != "v1" {
				t.Fatalf("mirrored call: %d %q", code, body)
			}
		}
		pollUntil(t, 20*time.Second, "the mirrored copies", func() bool { return a.sh.count("/mirrored") == n })
		close(a.sh.gate)
		if h := a.sh.lastHeader("/mirrored"); h == nil {
			t.Fatal("no mirrored request")
		}
		a.client.Close() // waits for the mirrored calls
		ids := a.sh.idCounts()
		for i := range n {
			if c := ids["m"+strconv.Itoa(i)]; c != 1 {
				t.Errorf("request m%d mirrored %d times, want once", i, c)
			}
		}
		if got := a.sh.count("/mirrored"); got != n {
			t.Errorf("the shadow saw %d requests, want %d", got, n)
		}
		a.client = a.env.client(WithRoutes(a.src))
		a.hc = a.client.HTTPClient()
	})

	t.Run("header changes", func(t *testing.T) {
		code, _, h := get(t, "/headers", http.Header{"X-Remove": {"gone"}, "X-Add": {"caller"}, "X-Set": {"caller"}})
		if code != 200 || h.Get("X-Resp") != "routed" || h.Get("X-Served-By") != "" {
			t.Fatalf("response: %d, headers %v", code, h)
		}
		sh := a.v1.lastHeader("/headers")
		if got := sh.Values("X-Set"); len(got) != 1 || got[0] != "routed" {
			t.Errorf("server saw X-Set %q, want [routed]", got)
		}
		if got := sh.Values("X-Add"); len(got) != 2 || got[0] != "caller" || got[1] != "added" {
			t.Errorf("server saw X-Add %q, want [caller added]", got)
		}
		if got := sh.Values("X-Remove"); len(got) != 0 {
			t.Errorf("server saw X-Remove %q, want none", got)
		}
	})

	t.Run("invalid update keeps the table", func(t *testing.T) {
		invalidUpdateKeepsTable(t, a.src, acceptHTTPYAML, func() string {
			_, body, _ := get(t, "/first", nil)
			return body
		}, "v2")
	})
}

// awaitDelayed checks a call delayed by an hour-long fault on clk: it
// waits on the clock, unseen by the server (arrivals), until the clock
// moves an hour, and then arrives once; done receives its outcome.
func awaitDelayed(t *testing.T, clk *clocktest.Clock, done <-chan error, arrivals func() int) {
	t.Helper()
	clk.AwaitWaiting(t, 1)
	select {
	case err := <-done:
		t.Fatalf("the delayed call returned before its delay: %v", err)
	default:
	}
	if n := arrivals(); n != 0 {
		t.Fatal("the server saw the delayed call before its delay")
	}
	clk.Advance(time.Hour)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := arrivals(); n != 1 {
		t.Fatalf("the server saw the delayed call %d times", n)
	}
}

// invalidUpdateKeepsTable updates src with an invalid version of yaml
// and checks that the update is refused with each problem at its path
// and that calls still follow the table (probe answers want).
func invalidUpdateKeepsTable(t *testing.T, src *route.Static, yaml string, probe func() string, want string) {
	t.Helper()
	before := src.Table()
	bad := strings.Replace(yaml, "weight: 1000}]", "weight: 900}]", 1)
	bad = strings.Replace(bad, `{exact: "yes"}`, `{regex: "(yes"}`, 1)
	cfg, err := route.Parse([]byte(bad), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	err = src.Update(cfg)
	var ve *route.ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, route.ErrInvalid) {
		t.Fatalf("invalid update: %v, want a *route.ValidationError", err)
	}
	var paths []string
	for _, fe := range ve.Errors {
		paths = append(paths, fe.Path)
	}
	if len(paths) != 2 || !strings.HasSuffix(paths[0], `routes[0].match[0].headers["x-canary"].regex`) || !strings.HasSuffix(paths[1], "routes[3].backends") {
		t.Fatalf("problems at %q, want the regex and the weights\n%v", paths, err)
	}
	if src.Table() != before || src.Status().LastRejection == nil {
		t.Fatal("the refused update changed the table, or was not recorded")
	}
	if got := probe(); got != want {
		t.Fatalf("after the refused update: %q, want %q", got, want)
	}
}

const acceptGRPCYAML = `
services:
  greet:
    defaultSubset: stable
    subsets:
      stable: {tags: [stable]}
      canary: {tags: [canary]}
    routes:
      - name: canary
        match: [{headers: {x-canary: {exact: "yes"}}}]
        backends: [{subset: canary}]
      - name: first
        match: [{headers: {x-mode: {prefix: first}}}]
        backends: [{subset: canary}]
      - name: second
        match: [{headers: {x-mode: {exact: first-x}}}, {headers: {x-mode: {exact: second}}}]
        backends: [{subset: stable}]
      - name: split
        match: [{headers: {x-mode: {exact: split}}}]
        backends: [{subset: stable, weight: 9000}, {subset: canary, weight: 1000}]
      - name: slow-bounded
        match: [{headers: {x-mode: {exact: slow}, x-patient: {present: true, invert: true}}}]
        timeout: 50ms
      - name: slow-patient
        match: [{headers: {x-mode: {exact: slow}}}]
        timeout: 20s
      - name: flaky
        match: [{headers: {x-mode: {exact: flaky}}}]
        retries: {attempts: 2, retryOn: [unavailable]}
      - name: abort
        match: [{headers: {x-mode: {exact: abort}}}]
        fault: {abort: {grpcStatus: UNAVAILABLE, percent: 50}}
        retries: {attempts: 3, retryOn: [unavailable, connect-failure]}
      - name: delayed
        match: [{headers: {x-mode: {exact: delayed}}}]
        fault: {delay: {fixed: 1h, percent: 100}}
      - name: headers
        match: [{headers: {x-mode: {exact: headers}}}]
        headers:
          request: {set: {x-set: routed}, add: {x-add: added}, remove: [x-remove]}
`

// TestAcceptRoutesGRPC is the acceptance of traffic management for gRPC
// callers over mutual TLS. Routes match metadata; redirects, direct
// responses and mirrors are HTTP's only (refused by validation on a
// "grpc" service, and at call time otherwise).
func TestAcceptRoutesGRPC(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	stable, canary := newInstance("stable"), newInstance("canary")
	if err := env.discovery.Set("greet",
		discovery.Endpoint{ID: "stable", Addr: startDemoGRPC(t, env, "stable", stable.answerGRPC), Tags: []string{"stable"}},
		discovery.Endpoint{ID: "canary", Addr: startDemoGRPC(t, env, "canary", canary.answerGRPC), Tags: []string{"canary"}}); err != nil {
		t.Fatal(err)
	}
	src := staticRoutes(t, acceptGRPCYAML)
	dial := func(t *testing.T, opts ...ClientOption) *grpc.ClientConn {
		t.Helper()
		cc, err := env.client(append([]ClientOption{WithRoutes(src)}, opts...)...).DialGRPC("greet")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return cc
	}
	cc := dial(t)
	ctx := testContext(t, 60*time.Second)
	with := func(kv ...string) context.Context { return metadata.AppendToOutgoingContext(ctx, kv...) }
	whoami := func(t *testing.T, ctx context.Context) string {
		t.Helper()
		got, err := demo.Whoami(ctx, cc)
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		return got
	}

	t.Run("split 90/10", func(t *testing.T) {
		const n = 5000
		sctx := with("x-mode", "split")
		parallel(n, func(int) {
			if _, err := demo.Whoami(sctx, cc); err != nil {
				t.Errorf("split: %v", err)
			}
		})
		if got := stable.count("split") + canary.count("split"); got != n {
			t.Fatalf("servers saw %d calls of %d", got, n)
		}
		within(t, "canary share", canary.count("split"), n, 0.10, 0.02)
	})

	t.Run("header match", func(t *testing.T) {
		for _, mode := range []string{"", "split", "second"} {
			for range 20 {
				if got := whoami(t, with("x-canary", "yes", "x-mode", mode)); got != "canary" {
					t.Fatalf("canary header with x-mode %q: %q", mode, got)
				}
			}
		}
		if got := whoami(t, with("x-canary", "no")); got != "stable" {
			t.Fatalf("other header value: %q, want the default subset", got)
		}
	})

	t.Run("first match wins", func(t *testing.T) {
		for _, tt := range []struct{ mode, want string }{
			{"first-x", "canary"}, // both "first" and "second" match: the first wins
			{"second", "stable"},
			{"none", "stable"}, // the catch-all
		} {
			if got := whoami(t, with("x-mode", tt.mode)); got != tt.want {
				t.Errorf("x-mode %s: %q, want %s", tt.mode, got, tt.want)
			}
		}
	})

	t.Run("timeouts and retries", func(t *testing.T) {
		if _, err := demo.Whoami(with("x-mode", "slow"), cc); status.Code(err) != codes.DeadlineExceeded {
			t.Fatalf("slow call on the 50ms route: %v, want DeadlineExceeded", err)
		}
		if got := whoami(t, with("x-mode", "slow", "x-patient", "1")); got != "stable" {
			t.Fatalf("slow call on the 20s route: %q", got)
		}
		for i := range 5 {
			id := "flaky-" + strconv.Itoa(i)
			if got := whoami(t, with("x-mode", "flaky", "x-req-id", id)); got != "stable" {
				t.Fatalf("flaky call: %q", got)
			}
			if n := stable.idCounts()[id]; n != 2 {
				t.Fatalf("flaky call %s arrived %d times, want 2", id, n)
			}
		}
	})

	t.Run("fault abort 50%, never retried", func(t *testing.T) {
		const n = 5000
		var aborted atomic.Int64
		actx := with("x-mode", "abort")
		parallel(n, func(int) {
			_, err := demo.Whoami(actx, cc)
			switch {
			case err == nil:
			case status.Code(err) == codes.Unavailable && errors.Is(err, ErrFaultInjected):
				aborted.Add(1)
			default:
				t.Errorf("abort route: %v", err)
			}
		})
		within(t, "aborted", int(aborted.Load()), n, 0.50, 0.03)
		if arrived := stable.count("abort"); arrived != n-int(aborted.Load()) {
			t.Fatalf("servers saw %d calls, want %d (the calls not aborted, each once)", arrived, n-int(aborted.Load()))
		}
	})

	t.Run("fault delay", func(t *testing.T) {
		clk := clocktest.New(time.Unix(1e9, 0))
		dc := dial(t, WithClock(clk))
		done := make(chan error, 1)
		go func() {
			got, err := demo.Whoami(with("x-mode", "delayed"), dc)
			if err == nil && got != "stable" {
				err = errors.New("delayed call answered by " + got)
			}
			done <- err
		}()
		awaitDelayed(t, clk, done, func() int { return stable.count("delayed") })
	})

	t.Run("metadata changes", func(t *testing.T) {
		whoami(t, with("x-mode", "headers", "x-remove", "gone", "x-add", "caller", "x-set", "caller"))
		md := stable.lastHeader("headers")
		if got := md.Values("X-Set"); len(got) != 1 || got[0] != "routed" {
			t.Errorf("server saw x-set %q, want [routed]", got)
		}
		if got := md.Values("X-Add"); len(got) != 2 || got[0] != "caller" || got[1] != "added" {
			t.Errorf("server saw x-add %q, want [caller added]", got)
		}
		if got := md.Values("X-Remove"); len(got) != 0 {
			t.Errorf("server saw x-remove %q, want none", got)
		}
	})

	t.Run("invalid update keeps the table", func(t *testing.T) {
		invalidUpdateKeepsTable(t, src, acceptGRPCYAML, func() string {
			return whoami(t, with("x-mode", "first"))
		}, "canary")
	})
}
