package route_test

import (
	"fmt"
	"testing"
	"time"

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

// TestConnectTimeout: a service's connectionPool.connectTimeout is the
// table's connect timeout for dials to its endpoints, in YAML and JSON;
// a service without one, or not in the table, has none (the client's
// default applies).
func TestConnectTimeout(t *testing.T) {
	tests := []struct {
		name, config string
		want         map[string]time.Duration
	}{
		{"yaml", `
services:
  web: {trafficPolicy: {connectionPool: {connectTimeout: 250ms, maxRequests: 4}}}
  api: {trafficPolicy: {connectionPool: {maxRequests: 4}}}
  db: {}`, map[string]time.Duration{"web": 250 * time.Millisecond, "api": 0, "db": 0, "other": 0}},
		{"json", `{"services": {"web": {"trafficPolicy": {"connectionPool": {"connectTimeout": "3s"}}}}}`,
			map[string]time.Duration{"web": 3 * time.Second, "api": 0}},
		{"subset's is not the service's", `
services:
  web:
    subsets: {v1: {tags: [v1], trafficPolicy: {connectionPool: {connectTimeout: 2s}}}}`,
			map[string]time.Duration{"web": 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			format := route.YAML
			if tt.name == "json" {
				format = route.JSON
			}
			cfg, err := route.Parse([]byte(tt.config), format)
			if err != nil {
				t.Fatal(err)
			}
			tab, err := route.Compile(cfg)
			if err != nil {
				t.Fatal(err)
			}
			for svc, want := range tt.want {
				if got := tab.ConnectTimeout(svc); got != want {
					t.Errorf("%s: connect timeout %v, want %v", svc, got, want)
				}
			}
			again, err := route.Compile(tab.Config())
			if err != nil {
				t.Fatal(err)
			}
			for svc, want := range tt.want {
				if got := again.ConnectTimeout(svc); got != want {
					t.Errorf("%s after a round trip of the config: %v, want %v", svc, got, want)
				}
			}
		})
	}
	var nilTable *route.Table
	if got := nilTable.ConnectTimeout("web"); got != 0 {
		t.Errorf("nil table: %v", got)
	}
}

// A destination rule's connection pool, per subset: the canary takes at
// most 10 calls at once.
func ExampleConnectionPool() {
	cfg, err := route.Parse([]byte(`
services:
  payments:
    trafficPolicy: {connectionPool: {maxRequests: 100, connectTimeout: 2s}}
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
	fmt.Println("connect timeout of payments:", tab.ConnectTimeout("payments"))
	// Output:
	// payments: maxRequests 100
	// payments/canary: maxRequests 10
	// payments/stable: maxRequests 100
	// connect timeout of payments: 2s
}
