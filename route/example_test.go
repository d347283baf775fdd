package route_test

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/route"
)

// A 10% canary, and every call with the header x-canary: true on the
// canary.
const canaryYAML = `
services:
  payments:
    defaultSubset: stable
    subsets:
      stable: {meta: {version: v1}}
      canary: {meta: {version: v2}}
    routes:
      - name: by-header
        match:
          - headers: {x-canary: {exact: "true"}}
        backends: [{subset: canary}]
      - name: split
        match:
          - path: {prefix: /charge}
        backends:
          - {subset: stable, weight: 9000}
          - {subset: canary, weight: 1000}
        timeout: 2s
        retries: {attempts: 2, perTryTimeout: 500ms, retryOn: [connect-failure, "503"]}
`

func ExampleTable_Match() {
	cfg, err := route.Parse([]byte(canaryYAML), route.YAML)
	if err != nil {
		panic(err)
	}
	tab, err := route.Compile(cfg)
	if err != nil {
		panic(err)
	}
	show := func(req *route.Request, rnd uint64) {
		d := tab.Match("payments", req, rnd)
		fmt.Printf("%s %s -> %s (route %s, timeout %v)\n", req.Method, req.Path, d.Target.Destination, d.Rule.Name, d.Rule.Timeout)
	}
	show(&route.Request{Method: "POST", Path: "/charge"}, 42)   // 42 < 9000: stable
	show(&route.Request{Method: "POST", Path: "/charge"}, 9042) // 9042 ≥ 9000: canary
	show(&route.Request{Method: "GET", Path: "/refunds", Header: http.Header{"X-Canary": {"true"}}}, 42)
	show(&route.Request{Method: "GET", Path: "/refunds"}, 42)
	// Output:
	// POST /charge -> payments/stable (route split, timeout 2s)
	// POST /charge -> payments/canary (route split, timeout 2s)
	// GET /refunds -> payments/canary (route by-header, timeout 0s)
	// GET /refunds -> payments/stable (route default, timeout 0s)
}

func ExampleValidate() {
	cfg, err := route.Parse([]byte(`
services:
  payments:
    subsets:
      stable: {meta: {version: v1}}
    routes:
      - match:
          - headers: {x-canary: {regex: "(true"}}
        backends:
          - {subset: stable, weight: 9000}
          - {subset: canary, weight: 1000}
        fault:
          abort: {httpStatus: 503, percent: 150}
`), route.YAML)
	if err != nil {
		panic(err)
	}
	_, err = route.Validate(cfg)
	var ve *route.ValidationError
	if errors.As(err, &ve) {
		for _, fe := range ve.Errors {
			fmt.Println(fe)
		}
	}
	// Output:
	// services.payments.routes[0].match[0].headers["x-canary"].regex: error parsing regexp: missing closing ): `(true`
	// services.payments.routes[0].backends[1].subset: unknown subset "canary" of "payments" (subsets: stable)
	// services.payments.routes[0].fault.abort.percent: 150 is outside 0–100
}

func ExampleStatic_Update() {
	src, err := route.NewStatic(&route.Config{Services: map[string]*route.Service{
		"web": {Routes: []*route.Route{{Timeout: route.Duration(1e9)}}},
	}})
	if err != nil {
		panic(err)
	}
	before := src.Table()
	err = src.Update(&route.Config{Services: map[string]*route.Service{
		"web": {Routes: []*route.Route{{Timeout: route.Duration(-1e9)}}},
	}})
	fmt.Println(err)
	fmt.Println("table kept:", src.Table() == before, "rejected:", src.Status().Rejected)
	// Output:
	// static: update refused: route: invalid config: services.web.routes[0].timeout: -1s is negative
	// table kept: true rejected: 1
}

// A destination selects its subset's endpoints for a balancer: its
// Matches method is a balancer.Match.
func ExampleDestination_Matches() {
	tab, err := route.Compile(&route.Config{Services: map[string]*route.Service{
		"payments": {
			DefaultSubset: "stable",
			Subsets: map[string]*route.Subset{
				"stable": {Meta: map[string]string{"version": "v1"}},
				"canary": {Meta: map[string]string{"version": "v2"}},
			},
			Routes: []*route.Route{{Backends: []*route.Backend{
				{Subset: "stable", Weight: 9900},
				{Subset: "canary", Weight: 100},
			}}},
		},
	}})
	if err != nil {
		panic(err)
	}
	eps := []discovery.Endpoint{
		{ID: "a", Addr: "10.0.0.1:8443", Meta: map[string]string{"version": "v1"}},
		{ID: "b", Addr: "10.0.0.2:8443", Meta: map[string]string{"version": "v2"}},
		{ID: "c", Addr: "10.0.0.3:8443", Meta: map[string]string{"version": "v1"}},
	}
	for _, d := range tab.Destinations() {
		b := balancer.New(balancer.Subset(d.Matches, balancer.RoundRobin()))
		b.Update(eps)
		seen := map[string]bool{}
		for range 10 {
			ep, err := b.Pick(balancer.Info{})
			if err != nil {
				panic(err)
			}
			seen[ep.ID] = true
			ep.Done(balancer.Outcome{})
		}
		fmt.Println(d.Index, d, slices.Sorted(maps.Keys(seen)))
	}
	// Output:
	// 0 payments/canary [b]
	// 1 payments/stable [a c]
}

// A destination's failover list says where its calls go when it has no
// endpoint to give; a failover target in another datacenter, or a subset
// by a Consul filter, needs a discovery watch of its own.
func ExampleDestination_Failover() {
	cfg, err := route.Parse([]byte(`
services:
  payments:
    defaultSubset: v1
    subsets:
      v1: {meta: {version: "1"}}
      v2: {filter: 'Service.Meta.version != "1"', onlyPassing: true}
    failover: [{subset: v2}, {datacenter: dc2}]
`), route.YAML)
	if err != nil {
		panic(err)
	}
	tab, err := route.Compile(cfg)
	if err != nil {
		panic(err)
	}
	d := tab.Match("payments", &route.Request{Path: "/"}, 0).Target.Destination
	fmt.Println("calls go to", d)
	for _, f := range d.Failover {
		tg, own := f.Target()
		fmt.Printf("then %s (own watch %v: %s)\n", f, own, tg)
	}
	// Output:
	// calls go to payments/v1
	// then payments/v2 (own watch true: payments "Service.Meta.version != \"1\"" passing)
	// then payments/v1@dc2 (own watch true: payments@dc2 passing)
}
