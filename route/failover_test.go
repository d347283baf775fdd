package route_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/route"
)

// TestFailoverCompiles checks the failover lists and discovery targets of
// compiled destinations: a subset's list over the service's, the default
// subset of a target service, datacenters, and the watch each
// destination needs.
func TestFailoverCompiles(t *testing.T) {
	const cfg = `
services:
  web:
    defaultSubset: v1
    subsets:
      v1: {meta: {version: "1"}}
      v2: {meta: {version: "2"}, failover: [{subset: v1, datacenter: dc2}]}
      odd: {filter: 'Service.Port > 9000', onlyPassing: true}
    failover: [{subset: v2}, {service: backup}, {datacenter: dc3}, {subset: v2}]
    routes:
      - match: [{headers: {x-v: {exact: "2"}}}]
        backends: [{subset: v2}]
      - match: [{headers: {x-v: {exact: odd}}}]
        backends: [{subset: odd}]
  backup:
    defaultSubset: blue
    subsets: {blue: {tags: [blue]}}
`
	tab, err := route.Compile(mustParse(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	dest := func(header string) *route.Destination {
		req := &route.Request{Path: "/", Header: map[string][]string{}}
		if header != "" {
			req.Header["X-V"] = []string{header}
		}
		return tab.Match("web", req, 0).Target.Destination
	}
	names := func(ds []*route.Destination) string {
		var s []string
		for _, d := range ds {
			s = append(s, d.String())
		}
		return strings.Join(s, " ")
	}
	for _, tc := range []struct {
		name     string
		dest     *route.Destination
		str      string
		failover string
		target   discovery.Target
		own      bool
	}{
		{"default subset: the service's list, duplicates once", dest(""), "web/v1", "web/v2 backup/blue web/v1@dc3", discovery.Target{Service: "web", OnlyPassing: true}, false},
		{"subset with its own list", dest("2"), "web/v2", "web/v1@dc2", discovery.Target{Service: "web", OnlyPassing: true}, false},
		{"subset by filter", dest("odd"), "web/odd", "web/v2 backup/blue web/v1@dc3", discovery.Target{Service: "web", Filter: "Service.Port > 9000", OnlyPassing: true}, true},
		{"a failover target in another datacenter", dest("2").Failover[0], "web/v1@dc2", "", discovery.Target{Service: "web", Datacenter: "dc2", OnlyPassing: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.dest.String(); got != tc.str {
				t.Errorf("destination %s, want %s", got, tc.str)
			}
			if got := names(tc.dest.Failover); got != tc.failover {
				t.Errorf("failover %q, want %q", got, tc.failover)
			}
			tg, own := tc.dest.Target()
			if tg != tc.target || own != tc.own {
				t.Errorf("target %+v (own watch %v), want %+v (%v)", tg, own, tc.target, tc.own)
			}
		})
	}
	// Failover targets are destinations of the table: callers build their
	// balancers as for any other.
	var all []string
	for _, d := range tab.Destinations() {
		all = append(all, d.String())
	}
	for _, want := range []string{"backup/blue", "web/v1@dc2", "web/v1@dc3"} {
		if !slices.Contains(all, want) {
			t.Errorf("destinations %v lack %s", all, want)
		}
	}
	// The list is in the config the table keeps, and the YAML and JSON
	// forms round-trip.
	if f := tab.Config().Services["web"].Subsets["v2"].Failover; len(f) != 1 || *f[0] != (route.Failover{Subset: "v1", Datacenter: "dc2"}) {
		t.Errorf("config failover %+v", f)
	}
}

// TestFailoverWarns checks the failover and filter settings that compile
// with a warning.
func TestFailoverWarns(t *testing.T) {
	for _, tc := range []struct {
		name, yaml, path string
	}{
		{"a target named twice", `
services:
  web:
    failover: [{service: a}, {service: a}]`, "services.web.failover[1]"},
		{"onlyPassing without a filter", `
services:
  web:
    subsets: {v1: {tags: [a], onlyPassing: true}}`, "services.web.subsets.v1.onlyPassing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			warns, err := route.Validate(mustParse(t, tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range warns {
				if w.Path == tc.path {
					return
				}
			}
			t.Errorf("no warning at %s: %v", tc.path, warns)
		})
	}
}
