//go:build linux

package mesh

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
)

// fullBacklog returns the address of a loopback TCP socket that listens
// with a backlog of 0 and never accepts, its accept queue already taken
// by one connection: Linux then drops every later SYN, so a connect to
// it neither completes nor is refused until the dialer gives up. That is
// a real connect that hangs, made by the kernel, where loopback
// otherwise connects at once (and "blackhole" addresses such as
// 10.255.255.1 connect at once on this machine's network). The test is
// skipped when a probe connects anyway.
func fullBacklog(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	filler, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = filler.Close() })
	if probe, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		_ = probe.Close()
		t.Skip("the kernel completes connects beyond a full accept queue here")
	}
	return addr
}

// TestConnectTimeoutBoundsDials: a connect to an endpoint that never
// answers fails after the connect timeout the route table sets for its
// service — over HTTP with and without mutual TLS, and over gRPC — not
// after weft's default of 10 s; a new timeout in the table applies to
// the next dial.
func TestConnectTimeoutBoundsDials(t *testing.T) {
	tests := []struct {
		name     string
		grpc     bool
		identity bool
	}{
		{"http mtls", false, true},
		{"http plaintext", false, false},
		{"grpc mtls", true, true},
		{"grpc plaintext", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaktest.Check(t)
			env := newTestEnv(t, 0)
			if err := env.discovery.Set("slow", discovery.Endpoint{ID: "slow-1", Addr: fullBacklog(t)}); err != nil {
				t.Fatal(err)
			}
			src := staticRoutes(t, `
services:
  slow: {trafficPolicy: {connectionPool: {connectTimeout: 300ms}}}
`)
			opts := []ClientOption{WithDiscovery(env.discovery), WithRoutes(src)}
			if tt.identity {
				opts = append(opts, WithIdentity(env.source(testClientID)))
			}
			c, err := NewClient(opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			call := func() (time.Duration, error) {
				ctx := testContext(t, 30*time.Second)
				start := time.Now()
				if tt.grpc {
					cc, err := c.DialGRPC("slow")
					if err != nil {
						t.Fatal(err)
					}
					defer cc.Close()
					_, err = demo.Whoami(ctx, cc)
					return time.Since(start), err
				}
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://slow/", nil)
				resp, err := c.HTTPClient().Do(req)
				if err == nil {
					resp.Body.Close()
				}
				return time.Since(start), err
			}
			check := func(timeout time.Duration) {
				t.Helper()
				took, err := call()
				switch {
				case err == nil:
					t.Fatalf("a call to an endpoint that never answers succeeded")
				case tt.grpc && status.Code(err) != codes.Unavailable:
					t.Errorf("gRPC error %v, want Unavailable", err)
				case !tt.grpc && !isDialError(err):
					t.Errorf("HTTP error %v, want a dial error", err)
				}
				if !strings.Contains(err.Error(), "timeout") {
					t.Errorf("error %q does not say the connect timed out", err)
				}
				// At least one connect timed out; retries of the
				// connect failure take a few more at most, far below
				// the default of 10 s.
				if took < timeout || took > DefaultConnectTimeout/2 {
					t.Errorf("the call took %v with a connect timeout of %v", took, timeout)
				}
				t.Logf("connect timeout %v: failed after %v: %v", timeout, took, err)
			}
			check(300 * time.Millisecond)
			if err := src.Update(mustParseRoutes(t, `
services:
  slow: {trafficPolicy: {connectionPool: {connectTimeout: 1200ms}}}
`)); err != nil {
				t.Fatal(err)
			}
			check(1200 * time.Millisecond)
		})
	}
}
