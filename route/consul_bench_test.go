package route

import (
	"fmt"
	"testing"

	"github.com/hashicorp/consul/api"
)

// BenchmarkConsulTranslate measures what each change of a chain costs a
// Consul source: translating a router of 20 header routes over a 90/10
// splitter and two filtered subsets, and compiling the table.
func BenchmarkConsulTranslate(b *testing.B) {
	chain := &api.CompiledDiscoveryChain{
		ServiceName: "web", Datacenter: "dc1", Protocol: "http", StartNode: "router:web",
		Nodes: map[string]*api.DiscoveryGraphNode{
			"splitter:web": {Type: "splitter", Name: "web.default.default", Splits: []*api.DiscoverySplit{
				{Weight: 90, NextNode: "resolver:v1"}, {Weight: 10, NextNode: "resolver:v2"}}},
			"resolver:v1": {Type: "resolver", Resolver: &api.DiscoveryResolver{Target: "v1"}},
			"resolver:v2": {Type: "resolver", Resolver: &api.DiscoveryResolver{Target: "v2"}},
		},
		Targets: map[string]*api.DiscoveryTarget{
			"v1": {ID: "v1", Service: "web", ServiceSubset: "v1", Datacenter: "dc1", Subset: api.ServiceResolverSubset{Filter: `Service.Meta.version == "1"`}},
			"v2": {ID: "v2", Service: "web", ServiceSubset: "v2", Datacenter: "dc1", Subset: api.ServiceResolverSubset{Filter: `"canary" in Service.Tags and Service.Meta.version == "2"`}},
		},
	}
	router := &api.DiscoveryGraphNode{Type: "router", Name: "web.default.default"}
	for i := range 20 {
		router.Routes = append(router.Routes, &api.DiscoveryRoute{NextNode: "resolver:v2", Definition: &api.ServiceRoute{
			Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: fmt.Sprintf("/r%d/", i),
				Header: []api.ServiceRouteHTTPMatchHeader{{Name: "x-canary", Exact: "1"}}}},
			Destination: &api.ServiceRouteDestination{ServiceSubset: "v2", NumRetries: 2, RetryOnStatusCodes: []uint32{503}},
		}})
	}
	router.Routes = append(router.Routes, &api.DiscoveryRoute{NextNode: "splitter:web", Definition: &api.ServiceRoute{
		Match: &api.ServiceRouteMatch{HTTP: &api.ServiceRouteHTTPMatch{PathPrefix: "/"}}}})
	chain.Nodes["router:web"] = router
	b.ReportAllocs()
	for b.Loop() {
		res := translateChain(chain, nil)
		if len(res.err) > 0 {
			b.Fatal(res.err[0])
		}
		if _, err := Compile(&Config{Services: res.services}); err != nil {
			b.Fatal(err)
		}
	}
}
