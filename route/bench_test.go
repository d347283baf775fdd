package route_test

import (
	"fmt"
	"net/http"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/route"
)

// benchTable builds a table of n routes, each matching a path prefix and
// a header, with a 90/10 split; a request for route i carries both.
func benchTable(b *testing.B, n int) *route.Table {
	b.Helper()
	svc := &route.Service{
		Subsets: map[string]*route.Subset{
			"v1": {Meta: map[string]string{"version": "v1"}},
			"v2": {Meta: map[string]string{"version": "v2"}},
		},
		DefaultSubset: "v1",
	}
	for i := range n {
		svc.Routes = append(svc.Routes, &route.Route{
			Match: []*route.Match{{
				Path:    &route.PathMatch{Prefix: fmt.Sprintf("/api/r%d/", i)},
				Headers: map[string]*route.StringMatch{"x-tenant": {Exact: fmt.Sprintf("t%d", i)}},
			}},
			Backends: []*route.Backend{{Subset: "v1", Weight: 9000}, {Subset: "v2", Weight: 1000}},
		})
	}
	tab, err := route.Compile(&route.Config{Services: map[string]*route.Service{"payments": svc}})
	if err != nil {
		b.Fatal(err)
	}
	return tab
}

func benchMatch(b *testing.B, tab *route.Table, req *route.Request) {
	b.ReportAllocs()
	var rnd uint64
	for b.Loop() {
		rnd += 7919
		if d := tab.Match("payments", req, rnd); d.Target == nil {
			b.Fatal("no target")
		}
	}
}

// BenchmarkMatch measures matching; the last route of a table is its
// worst case, as every route before it is tried first.
func BenchmarkMatch(b *testing.B) {
	single, err := route.Compile(&route.Config{Services: map[string]*route.Service{"payments": {
		Routes: []*route.Route{{Match: []*route.Match{{Path: &route.PathMatch{Exact: "/api/charge"}}}}},
	}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("1-exact", func(b *testing.B) {
		benchMatch(b, single, &route.Request{Method: "GET", Path: "/api/charge"})
	})
	for _, n := range []int{10, 50} {
		tab := benchTable(b, n)
		last := fmt.Sprint(n - 1)
		b.Run(fmt.Sprintf("%d-prefix-header-last/http", n), func(b *testing.B) {
			req := &route.Request{Method: "GET", Path: "/api/r" + last + "/charge", Header: http.Header{"X-Tenant": {"t" + last}}}
			benchMatch(b, tab, req)
		})
		b.Run(fmt.Sprintf("%d-prefix-header-last/grpc", n), func(b *testing.B) {
			req := &route.Request{Path: "/api/r" + last + "/charge", Metadata: metadata.Pairs("x-tenant", "t"+last)}
			benchMatch(b, tab, req)
		})
		b.Run(fmt.Sprintf("%d-none-default", n), func(b *testing.B) {
			benchMatch(b, tab, &route.Request{Method: "GET", Path: "/other"})
		})
	}
	regex := load(b, "routes.yaml")
	b.Run("regex-and-query", func(b *testing.B) {
		req := &route.Request{Method: "GET", Path: "/x", RawQuery: "a=b&debug=1"}
		b.ReportAllocs()
		for b.Loop() {
			if d := regex.Match("payments", req, 1); d.Target == nil {
				b.Fatal("no target")
			}
		}
	})
}

// TestMatchDoesNotAllocate holds Match to 0 allocations on the paths the
// benchmarks measure, regex and query included.
func TestMatchDoesNotAllocate(t *testing.T) {
	tab := load(t, "routes.yaml")
	reqs := []*route.Request{
		{Method: "GET", Path: "/api/x", Header: http.Header{"X-Canary": {"false"}}},
		{Method: "GET", Path: "/v2/charge"},
		{Method: "GET", Path: "/x", RawQuery: "a=b&debug=1"},
		{Path: "/pkg.Echo/Say", Metadata: metadata.Pairs("x-user", "a@example.org")},
	}
	for _, req := range reqs {
		svc := "payments"
		if req.Method == "" {
			svc = "echo"
		}
		if n := testing.AllocsPerRun(100, func() { tab.Match(svc, req, 3) }); n != 0 {
			t.Errorf("%+v: %v allocations per match", req, n)
		}
	}
}
