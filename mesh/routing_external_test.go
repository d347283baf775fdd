package mesh

import (
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"
)

// TestRoutesExternal: a route sends HTTP calls to an external service
// (a TLS server of its own, not in the mesh) over TLS with the service's
// server name and CA, and the call fails when either does not verify.
func TestRoutesExternal(t *testing.T) {
	leaktest.Check(t)
	var mu sync.Mutex
	var seen []*http.Request
	ext := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Clone(r.Context()))
		mu.Unlock()
		w.Header().Set("X-Served-By", "external")
		io.WriteString(w, "external "+r.URL.Path)
	}))
	ext.EnableHTTP2 = true
	ext.StartTLS() // its certificate is for example.com and 127.0.0.1
	defer ext.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ext.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ext.Listener.Addr().String())

	env := newTestEnv(t, 1)
	src := staticRoutes(t, fmt.Sprintf(`
external:
  billing:    {endpoints: ["127.0.0.1:%[1]s"], tls: {serverName: example.com, caFile: %[2]q}}
  billing-dns: {endpoints: ["localhost:%[1]s"], resolution: dns, tls: {serverName: example.com, caFile: %[2]q}}
  untrusted:  {endpoints: ["127.0.0.1:%[1]s"], tls: {serverName: example.com}}
  misnamed:   {endpoints: ["127.0.0.1:%[1]s"], tls: {serverName: other.example, caFile: %[2]q}}
services:
  demo:
    routes:
      - match: [{path: {prefix: /billing/}}]
        rewrite: {path: /v1/}
        backends: [{service: billing}]
        headers: {request: {set: {x-routed: external}}}
      - match: [{path: {prefix: /dns/}}]
        backends: [{service: billing-dns}]
      - match: [{path: {prefix: /untrusted/}}]
        backends: [{service: untrusted}]
      - match: [{path: {prefix: /misnamed/}}]
        backends: [{service: misnamed}]
`, port, ca))
	hc := env.client(WithRoutes(src)).HTTPClient()
	ctx := testContext(t, 20*time.Second)
	for _, tt := range []struct {
		path, body, err string
	}{
		{path: "/billing/charge", body: "external /v1/charge"},
		{path: "/dns/x", body: "external /dns/x"},
		{path: "/untrusted/x", err: "certificate signed by unknown authority"},
		{path: "/misnamed/x", err: "other.example"},
		{path: "/mesh", body: "instance-1"}, // the catch-all: the mesh service
	} {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://demo"+tt.path, nil)
		resp, err := hc.Do(req)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%s: %v, want an error with %q", tt.path, err, tt.err)
			}
			if resp != nil {
				resp.Body.Close()
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tt.path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), tt.body) {
			t.Errorf("%s: %d %q, want %q", tt.path, resp.StatusCode, b, tt.body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("the external server saw %d requests, want 2", len(seen))
	}
	if r := seen[0]; r.TLS == nil || r.TLS.ServerName != "example.com" || r.Host != "example.com" || r.Header.Get("X-Routed") != "external" {
		t.Errorf("external request: TLS %v, Host %q, X-Routed %q", r.TLS != nil, r.Host, r.Header.Get("X-Routed"))
	}
}
