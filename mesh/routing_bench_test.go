package mesh

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/demo"
)

// benchRoutesYAML routes the test environment's services with ten
// routes each: nine that a plain call does not match (prefixes,
// headers), then a catch-all.
const benchRoutesYAML = `
services:
  demo: &svc
    routes:
      - {match: [{path: {prefix: /api/v1/}}], timeout: 1s}
      - {match: [{path: {prefix: /api/v2/}}], timeout: 1s}
      - {match: [{headers: {x-canary: {exact: "yes"}}}], timeout: 1s}
      - {match: [{headers: {x-tenant: {prefix: beta-}}}], timeout: 1s}
      - {match: [{path: {prefix: /admin/}}], timeout: 1s}
      - {match: [{path: {exact: /healthz}}], timeout: 1s}
      - {match: [{headers: {x-debug: {present: true}}}], timeout: 1s}
      - {match: [{path: {prefix: /weft.admin.v1.}}], timeout: 1s}
      - {match: [{headers: {x-user: {suffix: "@example.com"}}}], timeout: 1s}
      - {match: [{path: {prefix: /}}]}
  demo-grpc: *svc
`

// benchPooledYAML is benchRoutesYAML with a connection pool that never
// refuses the benchmark's calls.
var benchPooledYAML = strings.Replace(benchRoutesYAML, "  demo: &svc\n",
	"  demo: &svc\n    trafficPolicy: {connectionPool: {maxConnections: 1000, maxPendingRequests: 10, maxRequests: 1000}}\n", 1)

// benchBreakerYAML is benchRoutesYAML with a breaker block on the
// destination: its calls go through breakers of its own.
var benchBreakerYAML = strings.Replace(benchRoutesYAML, "  demo: &svc\n",
	"  demo: &svc\n    trafficPolicy: {breaker: {consecutiveFailures: 1000}}\n", 1)

// benchFailoverYAML routes every call to a subset no endpoint is in,
// which fails over to the whole service.
const benchFailoverYAML = `
services:
  demo:
    subsets: {gone: {meta: {version: gone}, failover: [{service: demo}]}}
    routes: [{backends: [{subset: gone}]}]
  demo-grpc:
    subsets: {gone: {meta: {version: gone}, failover: [{service: demo-grpc}]}}
    routes: [{backends: [{subset: gone}]}]
`

// BenchmarkRoutedCall measures what a route table adds to the weft path,
// over real mutual TLS on loopback: the same call without routes
// ("plain"), with a ten-route table whose last route takes it
// ("routed"), with a connection pool on the destination too ("pooled"),
// with a breaker block on the destination ("breaker"), and routed to a destination with no endpoint, which fails over
// ("failover"). The allocations of plain, routed and pooled differ by at
// most one.
func BenchmarkRoutedCall(b *testing.B) {
	env := newTestEnv(b, 1)
	src := staticRoutes(b, benchRoutesYAML)
	pooled := staticRoutes(b, benchPooledYAML)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, mode := range []struct {
		name string
		opts []ClientOption
	}{{"plain", nil}, {"routed", []ClientOption{WithRoutes(src)}}, {"pooled", []ClientOption{WithRoutes(pooled)}},
		{"breaker", []ClientOption{WithRoutes(staticRoutes(b, benchBreakerYAML))}},
		{"failover", []ClientOption{WithRoutes(staticRoutes(b, benchFailoverYAML))}}} {
		c := env.client(mode.opts...)
		hc := c.HTTPClient()
		b.Run("http/"+mode.name, func(b *testing.B) {
			req, err := http.NewRequestWithContext(ctx, "GET", "http://demo/hello", nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				resp, err := hc.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
		cc, err := c.DialGRPC("demo-grpc")
		if err != nil {
			b.Fatal(err)
		}
		b.Run("grpc/"+mode.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := demo.Whoami(ctx, cc); err != nil {
					b.Fatal(err)
				}
			}
		})
		cc.Close()
	}
}
