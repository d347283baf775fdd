package route_test

import (
	"fmt"
	"testing"

	"github.com/weftmesh/weft/route"
)

// TestConnectionPoolMerge: a subset's connection pool replaces the
// service's as a block, and each destination keeps its own copy.
func TestConnectionPoolMerge(t *testing.T) {
	tab, err := route.Compile(mustParse(t, `
services:
  web:
    trafficPolicy: {connectionPool: {maxConnections: 4, maxPendingRequests: 8, maxRequests: 16}}
    subsets:
      v1: {meta: {version: "1"}}
      v2: {meta: {version: "2"}, trafficPolicy: {connectionPool: {maxRequests: 2}}}
    routes:
      - backends: [{subset: v1, weight: 5000}, {subset: v2, weight: 5000}]
  api:
    routes:
      - timeout: 1s
`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*route.ConnectionPool{
		"web/v1": {MaxConnections: 4, MaxPendingRequests: 8, MaxRequests: 16},
		"web/v2": {MaxRequests: 2},
		"api":    nil,
	}
	got := map[string]*route.ConnectionPool{}
	for _, d := range tab.Destinations() {
		got[d.String()] = d.Policy.ConnectionPool
	}
	for dest, w := range want {
		g, ok := got[dest]
		switch {
		case !ok:
			t.Errorf("%s: no destination in %v", dest, got)
		case (g == nil) != (w == nil) || (g != nil && *g != *w):
			t.Errorf("%s: pool %+v, want %+v", dest, g, w)
		}
	}
	if tab.Config().Services["web"].TrafficPolicy.ConnectionPool.MaxPendingRequests != 8 {
		t.Errorf("the table's config lost the pool: %+v", tab.Config().Services["web"].TrafficPolicy)
	}
}

// A destination rule's connection pool, per subset: the canary takes at
// most 10 calls at once.
func ExampleConnectionPool() {
	cfg, err := route.Parse([]byte(`
services:
  payments:
    trafficPolicy: {connectionPool: {maxRequests: 100}}
    subsets:
      stable: {meta: {version: v1}}
      canary: {meta: {version: v2}, trafficPolicy: {connectionPool: {maxRequests: 10}}}
    routes:
      - backends: [{subset: stable, weight: 9000}, {subset: canary, weight: 1000}]
`), route.YAML)
	if err != nil {
		fmt.Println(err)
		return
	}
	tab, err := route.Compile(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, d := range tab.Destinations() {
		fmt.Printf("%s: maxRequests %d\n", d, d.Policy.ConnectionPool.MaxRequests)
	}
	// Output:
	// payments: maxRequests 100
	// payments/canary: maxRequests 10
	// payments/stable: maxRequests 100
}
