package mesh

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"
)

// webID is a Consul Connect ID of the service web in the test trust
// domain, the caller the attack intentions name.
var webID = spiffeid.RequireFromString("spiffe://example.org/ns/default/dc/dc1/svc/web")

// attackIntentions are the L7 intentions web → api that the attacks try
// to get past: everything is allowed except what the deny permissions
// name.
func attackIntentions(t *testing.T) *tlsid.Intentions {
	t.Helper()
	entry := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "api", Sources: []*api.SourceIntention{{
		Name: "web", Type: api.IntentionSourceConsul,
		Permissions: []*api.IntentionPermission{
			denyPerm(api.IntentionHTTPPermission{PathRegex: "/admin/.*"}),
			denyPerm(api.IntentionHTTPPermission{PathPrefix: "/secret/"}),
			denyPerm(api.IntentionHTTPPermission{PathRegex: "/raw/.*(%2[Ff]|//).*"}),
			// net/http takes Transfer-Encoding out of the header map: the
			// deny holds whatever the request (a warning says so).
			denyPerm(api.IntentionHTTPPermission{PathPrefix: "/upload/", Header: []api.IntentionHTTPHeaderPermission{{Name: "Transfer-Encoding", Present: true}}}),
			denyPerm(api.IntentionHTTPPermission{PathPrefix: "/items/", Methods: []string{http.MethodDelete}}),
			denyPerm(api.IntentionHTTPPermission{PathPrefix: "/", Header: []api.IntentionHTTPHeaderPermission{{Name: "x-debug", Exact: "1"}}}),
			denyPerm(api.IntentionHTTPPermission{PathExact: demo.WhoamiMethod, Header: []api.IntentionHTTPHeaderPermission{{Name: "x-ticket-bin", Exact: "c3RvbGVu"}}}),
			{Action: api.IntentionActionAllow, HTTP: &api.IntentionHTTPPermission{PathPrefix: "/"}},
		},
	}}}
	in, err := tlsid.CompileIntentions(spiffeid.RequireTrustDomainFromString("example.org"), "api", []api.ConfigEntry{entry})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// denyPerm is an L7 permission that denies the requests h matches.
func denyPerm(h api.IntentionHTTPPermission) *api.IntentionPermission {
	return &api.IntentionPermission{Action: api.IntentionActionDeny, HTTP: &h}
}

// attackApp is an application a policy protects: each handler answers
// with its name, so that a test sees which one a request reached. The
// items handler is lenient in the way real applications are: it reads
// the method regardless of case, and X-Debug by its first value.
func attackApp() http.Handler {
	mux := http.NewServeMux()
	for _, p := range []string{"/admin/", "/secret/", "/"} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("X-Debug") == "1" {
				io.WriteString(w, "debug ")
			}
			io.WriteString(w, "reached "+p)
		})
	}
	mux.HandleFunc("/items/", func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Method, http.MethodDelete) {
			io.WriteString(w, "deleted")
			return
		}
		io.WriteString(w, "reached /items/")
	})
	return mux
}

// rawRequest sends one HTTP/1.1 request, written as is, over mTLS with
// identity src, and returns the status code and body.
func rawRequest(t *testing.T, addr string, src tlsid.Source, raw string) (int, string) {
	t.Helper()
	cfg, err := tlsid.ClientConfig(src, tlsid.AuthorizeAny())
	if err != nil {
		t.Fatal(err)
	}
	cfg.NextProtos = []string{"http/1.1"}
	resp, err := rawExchange(t, addr, cfg, raw)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	return statusAndBody(resp)
}

// rawExchange sends one HTTP/1.1 request, written as is, over TLS with cfg
// and returns the response, with its body read.
func rawExchange(t *testing.T, addr string, cfg *tls.Config, raw string) (*http.Response, error) {
	t.Helper()
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	conn, err := d.DialContext(testContext(t, 10*time.Second), "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	// Read the body before the connection closes.
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(strings.NewReader(string(body)))
	return resp, err
}

// TestIntentionsAttacksHTTP1 sends requests crafted to get past Consul
// L7 deny permissions to a real mTLS server, written byte for byte so
// that no client library cleans them first. None may reach what the
// permissions deny; each allowed request must reach the handler its
// path names.
func TestIntentionsAttacksHTTP1(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	stats := &AccessStats{}
	addr := env.serveAs("api", attackApp(), WithAccessPolicy(attackIntentions(t)), WithAccessStats(stats))
	web := env.source(webID)
	tests := []struct {
		name, raw string
		want      int
		body      string // the answer of an allowed request
	}{
		{"plain allowed", "GET /public HTTP/1.1\r\nHost: api\r\n\r\n", 200, "reached /"},
		{"admin", "GET /admin/x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"admin with encoded newline", "GET /admin/%0Ax HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"admin with encoded CR", "GET /admin/x%0D HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"admin with %2F", "GET /admin%2Fx HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"admin, mixed-case %2f", "GET /admin%2fx HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret via dot segments", "GET /public/../secret/x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret via %2e%2e", "GET /public/%2e%2e/secret/x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret via encoded slashes", "GET /public%2F..%2Fsecret%2Fx HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret via //", "GET //secret//x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret with ; params", "GET /secret/x;a=b HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret with query and fragment", "GET /secret/x?a=/../public#f HTTP/1.1\r\nHost: api\r\n\r\n", 400, ""},
		{"secret behind a fragment", "GET /secret/x#/../../public HTTP/1.1\r\nHost: api\r\n\r\n", 400, ""},
		{"an encoded # is a name", "GET /secret%23/../public HTTP/1.1\r\nHost: api\r\n\r\n", 200, "reached /"},
		{"secret, absolute form", "GET http://api/secret/x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret, absolute form with dots", "GET https://api/public/../secret/x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret, trailing dot segment", "GET /secret/x/.. HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret, trailing dot", "GET /secret/. HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"escaped slash, as a deny written for Envoy sees it", "GET /raw/a%2Fb HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"escaped slash, lower-case hex", "GET /raw/a%2fb HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"double slash, as a deny written for Envoy sees it", "GET /raw/a//b HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"plain raw path", "GET /raw/a/b HTTP/1.1\r\nHost: api\r\n\r\n", 200, "reached /"},
		{"chunked upload", "POST /upload/x HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 403, ""},
		{"upload, not chunked: the deny holds whatever the header", "POST /upload/x HTTP/1.1\r\nHost: api\r\nContent-Length: 0\r\n\r\n", 403, ""},
		{"secret via a backslash", "GET /secret\\x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret via backslash dot segments", "GET /public\\..\\secret\\x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"secret via %5C", "GET /secret%5Cx HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"NUL byte", "GET /admin%00 HTTP/1.1\r\nHost: api\r\n\r\n", 400, ""},
		{"secret, double-encoded: a name, not a slash", "GET /secret%252Fx HTTP/1.1\r\nHost: api\r\n\r\n", 200, "reached /"},
		{"CONNECT: the handler gets the path decided on", "CONNECT /secret/../public HTTP/1.1\r\nHost: api\r\n\r\n", 200, "reached /"},
		{"CONNECT to secret via dots", "CONNECT /public/../secret/x HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"CONNECT authority form", "CONNECT api:443 HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"delete", "DELETE /items/1 HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"delete, lower case", "delete /items/1 HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"delete, mixed case", "Delete /items/1 HTTP/1.1\r\nHost: api\r\n\r\n", 403, ""},
		{"method override does not count", "POST /items/1 HTTP/1.1\r\nHost: api\r\nX-HTTP-Method-Override: DELETE\r\nContent-Length: 0\r\n\r\n", 200, "reached /items/"},
		{"debug header", "GET /x HTTP/1.1\r\nHost: api\r\nX-Debug: 1\r\n\r\n", 403, ""},
		{"debug header, lower-case name", "GET /x HTTP/1.1\r\nHost: api\r\nx-debug: 1\r\n\r\n", 403, ""},
		{"debug header with whitespace", "GET /x HTTP/1.1\r\nHost: api\r\nX-Debug:   1 \t\r\n\r\n", 403, ""},
		{"debug header twice", "GET /x HTTP/1.1\r\nHost: api\r\nX-Debug: 1\r\nX-Debug: 1\r\n\r\n", 403, ""},
		{"debug header after another value", "GET /x HTTP/1.1\r\nHost: api\r\nX-Debug: 0\r\nX-Debug: 1\r\n\r\n", 403, ""},
		{"debug header first of two", "GET /x HTTP/1.1\r\nHost: api\r\nX-Debug: 1\r\nX-Debug: 0\r\n\r\n", 403, ""},
		{"another debug value", "GET /x HTTP/1.1\r\nHost: api\r\nX-Debug: 0\r\n\r\n", 200, "reached /"},
	}
	for _, tt := range tests {
		code, body := rawRequest(t, addr, web, tt.raw)
		if code != tt.want || tt.want == 200 && body != tt.body {
			t.Errorf("%s: %d %q, want %d %q", tt.name, code, body, tt.want, tt.body)
		}
	}
	// OPTIONS * is answered by net/http itself: no handler runs.
	if code, body := rawRequest(t, addr, web, "OPTIONS * HTTP/1.1\r\nHost: api\r\n\r\n"); strings.Contains(body, "reached") {
		t.Errorf("OPTIONS *: %d %q reached a handler", code, body)
	}
	// Callers the intentions do not name, of another namespace,
	// partition or trust domain, are refused whatever the path.
	for _, id := range []string{
		"spiffe://example.org/ns/other/dc/dc1/svc/web",
		"spiffe://example.org/ap/part/ns/default/dc/dc1/svc/web",
		"spiffe://example.org/ns/default/dc/dc1/svc/web/x",
		"spiffe://example.org/ns/default/dc/dc1/svc/Web",
		"spiffe://example.org/web",
	} {
		if code, _ := rawRequest(t, addr, env.source(spiffeid.RequireFromString(id)), "GET /public HTTP/1.1\r\nHost: api\r\n\r\n"); code != http.StatusForbidden {
			t.Errorf("caller %s: %d, want 403", id, code)
		}
	}
	if stats.Failed() != 0 {
		t.Errorf("%d checks failed", stats.Failed())
	}
	// Without a client certificate, or with one of another CA that
	// names the same trust domain, the handshake fails: no request is
	// served.
	foreign, err := tlsid.NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	foreignWeb, err := foreign.Source(webID)
	if err != nil {
		t.Fatal(err)
	}
	foreignCfg, err := tlsid.ClientConfig(foreignWeb, tlsid.AuthorizeAny())
	if err != nil {
		t.Fatal(err)
	}
	// The caller does not check the server, so that the server's check
	// is the one under test.
	foreignCfg.VerifyPeerCertificate, foreignCfg.VerifyConnection = nil, nil
	for name, cfg := range map[string]*tls.Config{
		"no client certificate": {InsecureSkipVerify: true, MinVersion: tls.VersionTLS13},
		"another CA":            foreignCfg,
	} {
		cfg.NextProtos = []string{"http/1.1"}
		if resp, err := rawExchange(t, addr, cfg, "GET /public HTTP/1.1\r\nHost: api\r\n\r\n"); err == nil {
			t.Errorf("%s: served with %d", name, resp.StatusCode)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// TestIntentionsAttacksHTTP2 repeats the header and path attacks over
// HTTP/2, where the client sends header values and :path as given.
func TestIntentionsAttacksHTTP2(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	addr := env.serveAs("api", attackApp(), WithAccessPolicy(attackIntentions(t)))
	cfg, err := tlsid.ClientConfig(env.source(webID), tlsid.AuthorizeAny())
	if err != nil {
		t.Fatal(err)
	}
	var h2 http.Protocols
	h2.SetHTTP2(true) // HTTP/2 only: no request falls back to HTTP/1.1
	tr := &http.Transport{TLSClientConfig: cfg, Protocols: &h2}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	tests := []struct {
		name, path string
		header     http.Header
		want       int
	}{
		{"plain", "/public", nil, 200},
		{"admin newline", "/admin/%0Ax", nil, 403},
		{"secret dots", "/public/%2e%2e/secret/x", nil, 403},
		{"secret trailing dots", "/secret/x/..", nil, 403},
		{"debug twice", "/x", http.Header{"X-Debug": {"1", "1"}}, 403},
		{"debug second", "/x", http.Header{"X-Debug": {"0", "1"}}, 403},
		{"debug with spaces", "/x", http.Header{"X-Debug": {" 1 "}}, 403},
	}
	for _, tt := range tests {
		// The client sends the escaped path as written.
		if code, body := telGet(t, hc, "https://"+addr+tt.path, tt.header); code != tt.want {
			t.Errorf("%s: %d %q, want %d", tt.name, code, body, tt.want)
		}
	}
}

// TestIntentionsAttacksGRPC attacks a gRPC server through metadata the
// matcher could read differently from the wire.
func TestIntentionsAttacksGRPC(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	gopts, err := GRPCServerOptions(WithIdentity(env.source(testServerID)), WithAccessPolicy(attackIntentions(t)))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, "api", PeerID)
	addr := serveGRPC(t, gs)
	if err := env.discovery.Set("api-grpc", discovery.Endpoint{ID: "api-1", Addr: addr}); err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(WithDiscovery(env.discovery), WithIdentity(env.source(webID)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cc, err := c.DialGRPC("api-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tests := []struct {
		name string
		md   metadata.MD
		opts []grpc.CallOption
		want codes.Code
	}{
		{"plain", nil, nil, codes.OK},
		{"debug", metadata.Pairs("x-debug", "1"), nil, codes.PermissionDenied},
		{"debug twice", metadata.Pairs("x-debug", "1", "x-debug", "1"), nil, codes.PermissionDenied},
		// The wire carries base64 ("c3RvbGVu"); grpc-go hands the
		// decoded bytes to the server.
		{"binary ticket", metadata.Pairs("x-ticket-bin", "stolen"), nil, codes.PermissionDenied},
		{"other binary ticket", metadata.Pairs("x-ticket-bin", "other"), nil, codes.PermissionDenied},
		{"compressed", nil, []grpc.CallOption{grpc.UseCompressor(gzip.Name)}, codes.OK},
	}
	for _, tt := range tests {
		ctx := testContext(t, 10*time.Second)
		if tt.md != nil {
			ctx = metadata.NewOutgoingContext(ctx, tt.md)
		}
		if _, err := demo.Whoami(ctx, cc, tt.opts...); status.Code(err) != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}
	// Other spellings of the denied method never reach it: refused as
	// non-canonical, or unknown to grpc-go, which matches names exactly.
	ctx := metadata.NewOutgoingContext(testContext(t, 10*time.Second), metadata.Pairs("x-ticket-bin", "stolen"))
	for _, m := range []string{"/weft.demo.v1.demo/whoami", "//weft.demo.v1.Demo/Whoami", "/weft.demo.v1.Demo/Whoami/", "/weft.demo.v1.Demo//Whoami", "/weft.demo.v1.Demo/./Whoami", "weft.demo.v1.Demo/Whoami"} {
		err := cc.Invoke(ctx, m, wrapperspb.String("x"), new(wrapperspb.StringValue))
		if code := status.Code(err); code != codes.PermissionDenied && code != codes.Unimplemented {
			t.Errorf("%s: %v, want PermissionDenied or Unimplemented", m, err)
		}
	}
}
