package mesh

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/tlsid"
)

var otherClientID = spiffeid.RequireFromString("spiffe://example.org/other")

// echoPath answers with the path and raw path its handler received.
var echoPath = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s|%s", r.URL.Path, r.URL.RawPath)
})

// status calls url and returns the status code and body.
func callStatus(t *testing.T, hc *http.Client, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t, 10*time.Second), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return statusAndBody(resp)
}

// statusAndBody reads and closes the body of resp and returns its status
// code and body.
func statusAndBody(resp *http.Response) (int, string) {
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func TestAccessPolicyHTTP(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	policy, err := tlsid.NewPolicy(
		tlsid.Rule{Name: "client reads", Peers: []string{testClientID.String()}, Methods: []string{"GET"}, Paths: []string{"/public", "/echo"}},
		tlsid.Rule{Name: "no admin", Deny: true, Paths: []string{"/admin"}},
		tlsid.Rule{Name: "admin is allowed to all but denied above", Peers: []string{"*"}, Paths: []string{"/admin"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	stats := &AccessStats{}
	srv, err := NewServer(echoPath, WithIdentity(env.source(testServerID)), WithAccessPolicy(policy), WithAccessStats(stats))
	if err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, srv)
	if err := env.discovery.Set("echo", discovery.Endpoint{ID: "echo-1", Addr: addr}); err != nil {
		t.Fatal(err)
	}
	hc := env.client().HTTPClient()

	tests := []struct {
		method, path string
		want         int
		routed       string // the path the handler must see
	}{
		{"GET", "/public/x", 200, "/public/x|"},
		{"GET", "/public/./x/", 200, "/public/x/|"},
		{"GET", "/public%2Fx", 200, "/public/x|"},
		{"GET", "/public//x", 200, "/public/x|"},
		{"GET", "/admin", 403, ""},
		{"GET", "/admin/", 403, ""},
		{"GET", "/public/../admin", 403, ""},
		{"GET", "//admin", 403, ""},
		{"GET", "/public%2F..%2Fadmin", 403, ""},
		{"GET", "/public/%2E%2E/admin", 403, ""},
		{"GET", "/ADMIN", 403, ""}, // unmatched: default deny
		{"POST", "/public/x", 403, ""},
		{"GET", "/other", 403, ""},
	}
	var want403, want200 uint64
	for _, tt := range tests {
		code, body := callStatus(t, hc, tt.method, "http://echo"+tt.path)
		if code != tt.want {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, code, tt.want)
			continue
		}
		if code == 200 {
			want200++
			if body != tt.routed {
				t.Errorf("%s %s: the handler saw %q, want %q", tt.method, tt.path, body, tt.routed)
			}
		} else {
			want403++
		}
	}
	// Another identity of the same trust domain passes the handshake but
	// not the policy.
	other, err := NewClient(WithDiscovery(env.discovery), WithIdentity(env.source(otherClientID)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if code, _ := callStatus(t, other.HTTPClient(), "GET", "http://echo/public/x"); code != http.StatusForbidden {
		t.Errorf("other identity: %d, want 403", code)
	}
	want403++
	if stats.Denied() != want403 || stats.Allowed() != want200 {
		t.Errorf("stats: denied %d allowed %d, want %d and %d", stats.Denied(), stats.Allowed(), want403, want200)
	}
}

func TestAccessPolicyGRPC(t *testing.T) {
	leaktest.Check(t)
	policy, err := tlsid.NewPolicy(tlsid.Rule{Peers: []string{testClientID.String()}, Paths: []string{demo.WhoamiMethod}})
	if err != nil {
		t.Fatal(err)
	}
	stats := &AccessStats{}
	env := newTestEnv(t, 1, WithAccessPolicy(policy), WithAccessStats(stats))
	ctx := testContext(t, 10*time.Second)

	cc, err := env.client().DialGRPC("demo-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := demo.Whoami(ctx, cc); err != nil {
		t.Fatalf("allowed caller: %v", err)
	}
	other, err := NewClient(WithDiscovery(env.discovery), WithIdentity(env.source(otherClientID)))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	occ, err := other.DialGRPC("demo-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer occ.Close()
	if _, err := demo.Whoami(ctx, occ); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("denied caller: %v, want PermissionDenied", err)
	}
	// A non-canonical method name never reaches the service.
	err = cc.Invoke(ctx, "/weft.demo.v1.Demo/../Whoami", nil, nil)
	if code := status.Code(err); code != codes.PermissionDenied && code != codes.Unimplemented {
		t.Fatalf("non-canonical method: %v, want PermissionDenied or Unimplemented", err)
	}
	if stats.Allowed() != 1 || stats.Denied() < 1 {
		t.Fatalf("stats: allowed %d denied %d", stats.Allowed(), stats.Denied())
	}
}

func TestCanonicalGRPCMethod(t *testing.T) {
	leaktest.Check(t)
	for m, want := range map[string]bool{
		"/pkg.Svc/Method":   true,
		"/a/b":              true,
		"pkg.Svc/Method":    false,
		"/pkg.Svc/":         false,
		"//Method":          false,
		"/pkg.Svc/Method/x": false,
		"/pkg.Svc//Method":  false,
		"/../Method":        false,
		"/pkg.Svc/..":       false,
		"":                  false,
		"/":                 false,
	} {
		if got := canonicalGRPCMethod(m); got != want {
			t.Errorf("canonicalGRPCMethod(%q) = %v, want %v", m, got, want)
		}
	}
}

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestAccessAudit(t *testing.T) {
	leaktest.Check(t)
	denyAll, err := tlsid.NewPolicy(tlsid.Rule{Deny: true})
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	stats := &AccessStats{}
	env := newTestEnv(t, 1, WithAccessAudit(denyAll), WithAccessStats(stats),
		WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))))
	hc := env.client().HTTPClient()
	for i := 0; i < 3; i++ {
		if code, _ := callStatus(t, hc, "GET", "http://demo/secret"); code != http.StatusOK {
			t.Fatalf("audit mode refused a request: %d", code)
		}
	}
	if stats.Audited() != 3 || stats.Denied() != 0 {
		t.Fatalf("stats: audited %d denied %d, want 3 and 0", stats.Audited(), stats.Denied())
	}
	out := logs.String()
	if strings.Count(out, "would deny") != 3 || !strings.Contains(out, testClientID.String()) || !strings.Contains(out, "/secret") {
		t.Fatalf("audit log lacks the would-be denials:\n%s", out)
	}
}

// TestAccessUnavailable points Consul intentions at a port where no agent
// listens (a real fault): requests are refused as unavailable, not
// allowed.
func TestAccessUnavailable(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = addr
	cfg.HttpClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	intentions, err := tlsid.NewConsulIntentions(client, "demo")
	if err != nil {
		t.Fatal(err)
	}
	stats := &AccessStats{}
	env := newTestEnv(t, 1, WithAccessPolicy(intentions), WithAccessStats(stats))
	code, _ := callStatus(t, env.client().HTTPClient(), "GET", "http://demo/")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", code)
	}
	cc, err := env.client().DialGRPC("demo-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := demo.Whoami(testContext(t, 10*time.Second), cc); status.Code(err) != codes.Unavailable {
		t.Fatalf("gRPC: %v, want Unavailable", err)
	}
	if stats.Failed() != 2 || stats.Allowed() != 0 {
		t.Fatalf("stats: failed %d allowed %d", stats.Failed(), stats.Allowed())
	}
}
