package mesh

import (
	"slices"
	"testing"
	"time"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/leaktest"
)

// TestConnectTimeoutChoice: the connect timeout of a dial is the one the
// current route table sets for the endpoint's service — the longest of
// them when one address serves several — else DefaultConnectTimeout,
// and a change of table applies to the next dial.
func TestConnectTimeoutChoice(t *testing.T) {
	leaktest.Check(t)
	src := staticRoutes(t, `
services:
  web: {trafficPolicy: {connectionPool: {connectTimeout: 250ms}}}
  api: {trafficPolicy: {connectionPool: {connectTimeout: 2s}}}
  db: {trafficPolicy: {connectionPool: {maxRequests: 3}}}
`)
	env := newTestEnv(t, 0)
	routed := env.client(WithRoutes(src))
	plain := env.client()
	tests := []struct {
		name     string
		c        *Client
		services []string
		want     time.Duration
	}{
		{"service's own", routed, []string{"web"}, 250 * time.Millisecond},
		{"another's", routed, []string{"api"}, 2 * time.Second},
		{"pool without a connect timeout", routed, []string{"db"}, DefaultConnectTimeout},
		{"service not in the table", routed, []string{"other"}, DefaultConnectTimeout},
		{"no service", routed, nil, DefaultConnectTimeout},
		{"the longest of an address's services", routed, []string{"web", "api", "db"}, 2 * time.Second},
		{"client without routes", plain, []string{"web"}, DefaultConnectTimeout},
	}
	for _, tt := range tests {
		if got := tt.c.connectTimeout(tt.services...); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
	if err := src.Update(mustParseRoutes(t, `
services:
  web: {trafficPolicy: {connectionPool: {connectTimeout: 1500ms}}}
`)); err != nil {
		t.Fatal(err)
	}
	for svc, want := range map[string]time.Duration{"web": 1500 * time.Millisecond, "api": DefaultConnectTimeout} {
		if got := routed.connectTimeout(svc); got != want {
			t.Errorf("after the update, %s: %v, want %v", svc, got, want)
		}
	}
}

// TestGRPCDialServices: a gRPC connection finds the services of an
// address it dials among the endpoint sets it holds — the dialled
// service's and those of services its routes send to.
func TestGRPCDialServices(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	for svc, addrs := range map[string][]string{"web": {"10.0.0.1:80", "10.0.0.9:80"}, "api": {"10.0.0.2:80", "10.0.0.9:80"}} {
		var eps []discovery.Endpoint
		for _, a := range addrs {
			eps = append(eps, discovery.Endpoint{ID: svc + "-" + a, Addr: a})
		}
		if err := env.discovery.Set(svc, eps...); err != nil {
			t.Fatal(err)
		}
	}
	c := env.client(WithRoutes(staticRoutes(t, "services: {}")))
	web, err := c.cluster("web")
	if err != nil {
		t.Fatal(err)
	}
	api, err := c.cluster("api")
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 30*time.Second)
	for _, cl := range []*cluster{web, api} {
		if err := cl.waitReady(ctx); err != nil {
			t.Fatal(err)
		}
	}
	gc := newGRPCConn(c, web)
	defer web.subscribe(gc)()
	defer gc.include(api).unsubscribe()
	tests := []struct {
		addr string
		want []string
	}{
		{"10.0.0.1:80", []string{"web"}},
		{"10.0.0.2:80", []string{"api"}},
		{"10.0.0.9:80", []string{"api", "web"}},
		{"10.0.0.7:80", []string{"web"}}, // gone meanwhile: the dialled service's
	}
	for _, tt := range tests {
		got := gc.servicesAt(tt.addr)
		slices.Sort(got)
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: services %v, want %v", tt.addr, got, tt.want)
		}
	}
}
