package mesh_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/route"
)

// A route destination's breaker block: calls with x-canary go to subset
// canary, whose breakers trip after 2 consecutive failures; the client
// has no breakers of its own. After two 503s from the sick canary, its
// calls fail at once with ErrCircuitOpen, without reaching it.
func ExampleWithRoutes_breaker() {
	sick := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer sick.Close()
	static := &discovery.Static{}
	_ = static.Set("orders", discovery.Endpoint{ID: "orders-canary", Addr: sick.Listener.Addr().String(), Tags: []string{"canary"}})
	cfg, err := route.Parse([]byte(`
services:
  orders:
    subsets:
      canary:
        tags: [canary]
        trafficPolicy: {breaker: {consecutiveFailures: 2, openTimeout: 30s}}
    routes:
      - match: [{headers: {x-canary: {present: true}}}]
        backends: [{subset: canary}]
`), route.YAML)
	if err != nil {
		fmt.Println(err)
		return
	}
	routes, err := route.NewStatic(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	c, err := mesh.NewClient(mesh.WithDiscovery(static), mesh.WithRoutes(routes))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	for i := 1; i <= 3; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://orders/", nil)
		req.Header.Set("x-canary", "1")
		resp, err := c.HTTPClient().Do(req)
		switch {
		case errors.Is(err, breaker.ErrCircuitOpen):
			fmt.Printf("call %d: circuit open\n", i)
		case err != nil:
			fmt.Printf("call %d: %v\n", i, err)
		default:
			resp.Body.Close()
			fmt.Printf("call %d: %d\n", i, resp.StatusCode)
		}
	}
	// Output:
	// call 1: 503
	// call 2: 503
	// call 3: circuit open
}
