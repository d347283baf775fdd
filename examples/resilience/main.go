// Command resilience shows weft's protections in one process, with no
// outside service, over mutual TLS 1.3 with identities from an in-process
// development CA:
//
//   - one of three instances answers 503 to everything: with retries and
//     circuit breakers the client's calls all succeed, and the sick
//     instance's breaker opens;
//
//   - one instance stalls: a hedged call is answered by another after the
//     hedge delay, and the stalled attempt is cancelled;
//
//   - a server rate limit per caller identity answers 429 with
//     Retry-After once the burst is spent;
//
//   - a server at its concurrency limit sheds a sheddable request at once
//     with 503 while a critical one still gets through.
//
//     go run ./examples/resilience
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "resilience:", err)
		os.Exit(1)
	}
}

var (
	serverID = spiffeid.RequireFromString("spiffe://example.org/backend")
	clientID = spiffeid.RequireFromString("spiffe://example.org/frontend")
)

// env is the demo's mesh: a CA, a static discovery and the servers.
type env struct {
	ca      *tlsid.DevCA
	static  *discovery.Static
	servers []*mesh.Server
}

// serve starts a mesh server for h on loopback and returns its address.
func (e *env) serve(h http.Handler, opts ...mesh.ServerOption) (string, error) {
	src, err := e.ca.Source(serverID)
	if err != nil {
		return "", err
	}
	srv, err := mesh.NewServer(h, append([]mesh.ServerOption{mesh.WithIdentity(src)}, opts...)...)
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go srv.Serve(ln)
	e.servers = append(e.servers, srv)
	return ln.Addr().String(), nil
}

func (e *env) close() {
	for _, s := range e.servers {
		s.Close()
	}
}

func (e *env) client(opts ...mesh.ClientOption) (*mesh.Client, error) {
	src, err := e.ca.Source(clientID)
	if err != nil {
		return nil, err
	}
	return mesh.NewClient(append([]mesh.ClientOption{mesh.WithDiscovery(e.static), mesh.WithIdentity(src)}, opts...)...)
}

func get(ctx context.Context, hc *http.Client, url string, header ...string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func run(ctx context.Context, out io.Writer) error {
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		return err
	}
	e := &env{ca: ca, static: &discovery.Static{}}
	defer e.close()
	if err := retriesAndBreakers(ctx, e, out); err != nil {
		return fmt.Errorf("retries: %w", err)
	}
	if err := hedging(ctx, e, out); err != nil {
		return fmt.Errorf("hedging: %w", err)
	}
	if err := rateLimit(ctx, e, out); err != nil {
		return fmt.Errorf("rate limit: %w", err)
	}
	if err := shedding(ctx, e, out); err != nil {
		return fmt.Errorf("shedding: %w", err)
	}
	return nil
}

func retriesAndBreakers(ctx context.Context, e *env, out io.Writer) error {
	var eps []discovery.Endpoint
	var sick atomic.Int64
	for i := 1; i <= 3; i++ {
		name := fmt.Sprintf("backend-%d", i)
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, name) })
		if i == 2 {
			h = func(w http.ResponseWriter, r *http.Request) {
				sick.Add(1)
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}
		addr, err := e.serve(h)
		if err != nil {
			return err
		}
		eps = append(eps, discovery.Endpoint{ID: name, Addr: addr})
	}
	if err := e.static.Set("backend", eps...); err != nil {
		return err
	}
	c, err := e.client(
		mesh.WithRetry(mesh.RetryPolicy{Backoff: time.Millisecond}),
		mesh.WithCircuitBreaker(breaker.Settings{
			ConsecutiveFailures: 3,
			OnStateChange: func(c breaker.StateChange) {
				fmt.Fprintf(out, "  breaker %s/%s: %v -> %v\n", c.Service, c.Name, c.From, c.To)
			},
		}),
	)
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(out, "1. backend-2 of 3 answers 503; 300 GETs with retries and breakers:")
	hc := c.HTTPClient()
	failed := 0
	for i := 0; i < 300; i++ {
		if code, _, err := get(ctx, hc, "http://backend/"); err != nil || code != http.StatusOK {
			failed++
		}
	}
	fmt.Fprintf(out, "  %d of 300 failed; backend-2 was sent %d requests\n", failed, sick.Load())
	if failed != 0 {
		return fmt.Errorf("%d calls failed", failed)
	}
	return nil
}

func hedging(ctx context.Context, e *env, out io.Writer) error {
	var entered, cancelled atomic.Int64
	stall, err := e.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		<-r.Context().Done()
		cancelled.Add(1)
	}))
	if err != nil {
		return err
	}
	fast, err := e.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "fast") }))
	if err != nil {
		return err
	}
	if err := e.static.Set("search", discovery.Endpoint{ID: "stall", Addr: stall}, discovery.Endpoint{ID: "fast", Addr: fast}); err != nil {
		return err
	}
	const delay = 50 * time.Millisecond
	c, err := e.client(mesh.WithHedging(mesh.HedgePolicy{Delay: delay}))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintf(out, "2. one of two instances stalls; hedged GETs (hedge after %v):\n", delay)
	hc := c.HTTPClient()
	for i := 0; i < 4; i++ {
		code, body, err := get(ctx, hc, "http://search/")
		if err != nil || code != http.StatusOK || body != "fast" {
			return fmt.Errorf("hedged GET: %d %q %v", code, body, err)
		}
	}
	// Each stalled attempt is cancelled once the hedge has answered.
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for cancelled.Load() != entered.Load() {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return errors.New("a stalled attempt was never cancelled")
		}
	}
	fmt.Fprintf(out, "  4 of 4 answered by the fast instance; %d attempts stalled, each hedged and then cancelled\n", entered.Load())
	return nil
}

func rateLimit(ctx context.Context, e *env, out io.Writer) error {
	addr, err := e.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }),
		mesh.WithPeerRateLimit(breaker.RateLimit{PerSecond: 1, Burst: 3}, 1000))
	if err != nil {
		return err
	}
	if err := e.static.Set("quota", discovery.Endpoint{ID: "quota-1", Addr: addr}); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(out, "3. a server allows each caller identity 1/s, burst 3; 5 GETs at once:")
	hc := c.HTTPClient()
	var codes []string
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://quota/", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		s := fmt.Sprint(resp.StatusCode)
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			s += " (Retry-After " + ra + ")"
		}
		codes = append(codes, s)
	}
	fmt.Fprintf(out, "  %s\n", strings.Join(codes, ", "))
	return nil
}

func shedding(ctx context.Context, e *env, out io.Writer) error {
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	addr, err := e.serve(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		fmt.Fprint(w, "ok")
	}), mesh.WithConcurrencyLimit(breaker.ConcurrencySettings{Limit: 4, CriticalReserve: 0.5}),
		// Priority is the caller's claim: honoured only from the frontend.
		mesh.WithTrustedPriority(tlsid.AuthorizeID(clientID)))
	if err != nil {
		return err
	}
	if err := e.static.Set("busy", discovery.Endpoint{ID: "busy-1", Addr: addr}); err != nil {
		return err
	}
	c, err := e.client()
	if err != nil {
		return err
	}
	defer c.Close()
	hc := c.HTTPClient()
	fmt.Fprintln(out, "4. a server limited to 4 requests in flight, 2 reserved for critical ones (a claim it trusts from the frontend only), has 2 slow requests:")
	done := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			_, _, err := get(ctx, hc, "http://busy/slow")
			done <- err
		}()
	}
	<-entered
	<-entered
	start := time.Now()
	code, _, err := get(ctx, hc, "http://busy/")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  sheddable request: %d in %v\n", code, time.Since(start).Round(time.Millisecond))
	code2, _, err := get(ctx, hc, "http://busy/", mesh.PriorityHeader, "critical")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  critical request:  %d\n", code2)
	close(release)
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			return err
		}
	}
	if code != http.StatusServiceUnavailable || code2 != http.StatusOK {
		return fmt.Errorf("sheddable %d, critical %d; want 503 and 200", code, code2)
	}
	return nil
}
