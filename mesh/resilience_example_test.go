package mesh_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"time"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
)

// Retries and circuit breakers: one of two instances answers 503; GETs
// are retried on the other one, and the sick instance's breaker opens.
func ExampleWithRetry() {
	var sick atomic.Int64
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sick.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer bad.Close()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer good.Close()
	static := &discovery.Static{}
	_ = static.Set("orders",
		discovery.Endpoint{ID: "orders-1", Addr: bad.Listener.Addr().String()},
		discovery.Endpoint{ID: "orders-2", Addr: good.Listener.Addr().String()})

	c, err := mesh.NewClient(
		mesh.WithDiscovery(static),
		mesh.WithRetry(mesh.RetryPolicy{Backoff: time.Millisecond}),
		mesh.WithCircuitBreaker(breaker.Settings{
			ConsecutiveFailures: 2,
			OnStateChange: func(c breaker.StateChange) {
				fmt.Printf("breaker %s: %v -> %v\n", c.Name, c.From, c.To)
			},
		}),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	ok := 0
	for i := 0; i < 20; i++ {
		resp, err := c.HTTPClient().Get("http://orders/")
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.TrimSpace(string(body)) == "ok" {
			ok++
		}
	}
	fmt.Printf("%d of 20 ok; the sick instance was sent %d requests\n", ok, sick.Load())
	// Output:
	// breaker orders-1: closed -> open
	// 20 of 20 ok; the sick instance was sent 2 requests
}

// Server protections: a per-route rate limit answers 429 with
// Retry-After once the burst is spent.
func ExampleWithRouteRateLimit() {
	srv, err := mesh.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}),
		mesh.WithRouteRateLimit("/charge", breaker.RateLimit{PerSecond: 1, Burst: 2}),
		mesh.WithConcurrencyLimit(breaker.ConcurrencySettings{Limit: 100}))
	if err != nil {
		fmt.Println(err)
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer srv.Close()
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 3; i++ {
		resp, err := hc.Get("http://" + ln.Addr().String() + "/charge")
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		fmt.Println(resp.StatusCode, resp.Header.Get("Retry-After") != "")
	}
	// Output:
	// 200 false
	// 200 false
	// 429 true
}
