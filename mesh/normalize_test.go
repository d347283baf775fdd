package mesh

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"
)

func TestNormalizePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "/"},
		{"/", "/"},
		{"/report", "/report"},
		{"//report", "/report"},
		{"///report", "/report"},
		{"/./report", "/report"},
		{"/x/../report", "/report"},
		{"/../../report", "/report"},
		{"report", "/report"},
		{"/docs/", "/docs/"},
		{"/docs//", "/docs/"},
		{"/docs/./", "/docs/"},
		{"/a/b/..", "/a/"},
		{"/a/b/.", "/a/b/"},
		{"/a/..", "/"},
		{"/a/b/../", "/a/"},
		{"/a/%2E%2E", "/a/%2E%2E"}, // already decoded by net/http: a name, not a dot segment
		{"/.../x", "/.../x"},
		{`/a\b`, "/a/b"},
		{`/a\..\b\`, "/b/"},
		{`\a`, "/a"},
	}
	for _, tt := range tests {
		if got := NormalizePath(tt.in); got != tt.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := NormalizePath(tt.want); got != tt.want {
			t.Errorf("NormalizePath(%q) = %q: not a fixed point", tt.want, got)
		}
	}
	if n := testing.AllocsPerRun(100, func() { NormalizePath("/pay.Pay/Charge/x/") }); n != 0 {
		t.Errorf("a normalized path allocates %v times", n)
	}
}

// TestSentPath: the access policies of a server learn the escaped path
// a request was sent with, when it is not its normalized path.
func TestSentPath(t *testing.T) {
	for _, tt := range []struct{ target, want string }{
		{"/a/b", ""},
		{"/a%2Fb", "/a%2Fb"},
		{"/a//b/../c", "/a//b/../c"},
		{"/a%20b", "/a%20b"},
		{"/%61", "/%61"},
		{"http://h/x/./y", "/x/./y"},
		{"*", ""},
	} {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + tt.target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			t.Fatal(err)
		}
		if got := sentPath(normalizeRequest(req)); got != tt.want {
			t.Errorf("%q: sent path %q, want %q", tt.target, got, tt.want)
		}
	}
}

// TestHeadCoveredByGetRule: a deny rule on GET also refuses HEAD, which
// ServeMux answers with the GET handler.
func TestHeadCoveredByGetRule(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	policy, err := tlsid.NewPolicy(
		tlsid.Rule{Name: "no secret reads", Deny: true, Methods: []string{http.MethodGet}, Paths: []string{"/secret"}},
		tlsid.Rule{Name: "the rest"},
	)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ran := 0
	mux := http.NewServeMux()
	mux.HandleFunc("GET /secret", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		ran++
		mu.Unlock()
		w.Header().Set("X-Secret", "4111111111111111")
	})
	env.serveAs("vault", mux, WithAccessPolicy(policy))
	hc := env.client().HTTPClient()
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, p := range []string{"/secret", "//secret", "/x/../secret"} {
			if code, _ := callStatus(t, hc, method, "http://vault"+p); code != http.StatusForbidden {
				t.Errorf("%s %s: %d, want 403", method, p, code)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if ran != 0 {
		t.Errorf("the GET handler ran %d times", ran)
	}
}

// TestRouteRateLimitNormalizedPath: a route rate limit holds for every
// spelling of its path, with or without an access policy.
func TestRouteRateLimitNormalizedPath(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	fixed := time.Unix(1_700_000_000, 0)
	env.serveAs("reports", echoPath,
		WithRouteRateLimit("/report", breaker.RateLimit{PerSecond: 1, Burst: 1}),
		WithClock(nowClock(func() time.Time { return fixed })), // no token comes back during the test
	)
	hc := env.client().HTTPClient()
	if code, body := callStatus(t, hc, "GET", "http://reports/report"); code != http.StatusOK || body != "/report|" {
		t.Fatalf("first call: %d %q", code, body)
	}
	for _, p := range []string{"/report", "//report", "///report", "/./report", "/x/../report", "/%72eport"} {
		if code, _ := callStatus(t, hc, "GET", "http://reports"+p); code != http.StatusTooManyRequests {
			t.Errorf("GET %s: %d, want 429", p, code)
		}
	}
	// Another route is not limited, and the handler sees the normalized path.
	if code, body := callStatus(t, hc, "GET", "http://reports//other/./x/"); code != http.StatusOK || body != "/other/x/|" {
		t.Errorf("other route: %d %q, want 200 \"/other/x/|\"", code, body)
	}
}

// serveAs serves h as the one instance of service, with the test
// server identity and opts, until the test ends; it returns the address.
func (env *testEnv) serveAs(service string, h http.Handler, opts ...ServerOption) string {
	env.t.Helper()
	srv, err := NewServer(h, append([]ServerOption{WithIdentity(env.source(testServerID))}, opts...)...)
	if err != nil {
		env.t.Fatal(err)
	}
	addr := startServer(env.t, srv)
	if err := env.discovery.Set(service, discovery.Endpoint{ID: service + "-1", Addr: addr}); err != nil {
		env.t.Fatal(err)
	}
	return addr
}

// pathRecorder is a request policy that records the path it decided on
// and allows everything.
type pathRecorder struct{ path string }

func (p *pathRecorder) AuthorizeRequest(_ context.Context, r tlsid.Request) error {
	p.path = r.Path
	return nil
}

// FuzzNormalizePath: a normalized path is a fixed point, and the handler
// of a server always sees the path its access policy decided on, for any
// request target a client can send.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/report", "//report", "/./report", "/x/../report", "/a%2F..%2Fadmin",
		"/%2E%2E/admin", "/docs/", "/a//b//", "/..", "/a?b=/../c", "/%72eport", "*", "/%zz", "/a/%2e/b",
		"/a/b/..", "/secret/.", "/admin/%0Ax", "/a%2F..", "http://h/a/../b", "/x;a=b/../c", "/%252F", `/a\..\b`, "/a%5Cb", "/a%00b", "/a#/../b", "/a%23b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		n := NormalizePath(target)
		if NormalizePath(n) != n {
			t.Fatalf("NormalizePath(%q) = %q, which normalizes to %q", target, n, NormalizePath(n))
		}
		if !strings.HasPrefix(n, "/") || strings.Contains(n, "//") {
			t.Fatalf("NormalizePath(%q) = %q", target, n)
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader("GET " + target + " HTTP/1.1\r\nHost: x\r\n\r\n")))
		if err != nil {
			return // not a request a server would serve
		}
		rec := &pathRecorder{}
		var seen, uri string
		srv, err := NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen, uri = r.URL.Path, r.RequestURI }), WithAccessPolicy(rec))
		if err != nil {
			t.Fatal(err)
		}
		rr := httptest.NewRecorder()
		srv.http.Handler.ServeHTTP(rr, req)
		if strings.IndexByte(req.URL.Path, 0) >= 0 || strings.IndexByte(target, '#') >= 0 {
			if rr.Code != http.StatusBadRequest || seen != "" || rec.path != "" {
				t.Fatalf("target %q with a NUL or #: %d, the policy saw %q, the handler %q", target, rr.Code, rec.path, seen)
			}
			return
		}
		if req.URL.Path == "*" {
			return
		}
		if seen != rec.path || seen != NormalizePath(req.URL.Path) {
			t.Fatalf("target %q: the policy decided on %q, the handler saw %q", target, rec.path, seen)
		}
		if u, err := url.ParseRequestURI(uri); err != nil || u.Path != seen {
			t.Fatalf("target %q: the handler saw the path %q and the request URI %q", target, seen, uri)
		}
	})
}

func BenchmarkNormalizePath(b *testing.B) {
	for _, p := range []string{"/pay.Pay/Charge", "/a//b/../c/./d/"} {
		b.Run(p, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				NormalizePath(p)
			}
		})
	}
}
