package route

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// TestTranslateFailover translates compiled chains written by hand, as
// Consul compiles a resolver's Failover into its resolver nodes: the
// failover list of each target's subset (or service), and the warnings
// and errors of what weft cannot follow. Chains come from a real agent
// in TestConsulSourceChains; here they hold what one agent cannot
// produce (namespaces, other datacenters' compilation).
func TestTranslateFailover(t *testing.T) {
	target := func(svc, subset, dc, filter string) *api.DiscoveryTarget {
		id := fmt.Sprintf("%s.%s.default.%s", subset, svc, dc)
		if subset == "" {
			id = fmt.Sprintf("%s.default.%s", svc, dc)
		}
		return &api.DiscoveryTarget{ID: id, Service: svc, ServiceSubset: subset, Namespace: "default", Datacenter: dc, Subset: api.ServiceResolverSubset{Filter: filter}}
	}
	v1 := target("web", "v1", "dc1", `Service.Meta.version == "1"`)
	v2 := target("web", "v2", "dc1", `Service.Meta.version == "2"`)
	v1dc2 := target("web", "v1", "dc2", `Service.Meta.version == "1"`)
	odd := target("web", "odd", "dc1", `Service.Port != 80`)
	backup := target("backup", "", "dc1", "")
	other := target("web", "", "dc1", "")
	other.ID, other.Namespace = "web.team.dc1", "team"
	chain := func(primary *api.DiscoveryTarget, f *api.DiscoveryFailover, targets ...*api.DiscoveryTarget) *api.CompiledDiscoveryChain {
		c := &api.CompiledDiscoveryChain{
			ServiceName: "web", Datacenter: "dc1", StartNode: "resolver:" + primary.ID,
			Nodes: map[string]*api.DiscoveryGraphNode{"resolver:" + primary.ID: {
				Type: api.DiscoveryGraphNodeTypeResolver, Name: primary.ID,
				Resolver: &api.DiscoveryResolver{Target: primary.ID, Failover: f},
			}},
			Targets: map[string]*api.DiscoveryTarget{primary.ID: primary},
		}
		for _, t := range targets {
			c.Targets[t.ID] = t
		}
		return c
	}
	entry := func(key string) *consulEntries {
		return &consulEntries{resolvers: map[string]*api.ServiceResolverConfigEntry{"web": {
			Kind: api.ServiceResolver, Name: "web", Failover: map[string]api.ServiceResolverFailover{key: {}},
		}}}
	}
	for _, tc := range []struct {
		name     string
		chain    *api.CompiledDiscoveryChain
		ent      *consulEntries
		subset   string // whose list is checked; "" for the service's
		want     []Failover
		filters  map[string]string // subset → Filter it must have
		warnings []string
		errors   []string
	}{{
		name:   "a subset to another subset and datacenter, in order",
		chain:  chain(v1, &api.DiscoveryFailover{Targets: []string{v2.ID, v1dc2.ID}}, v2, v1dc2),
		ent:    entry("v1"),
		subset: "v1",
		want:   []Failover{{Service: "web", Subset: "v2"}, {Service: "web", Subset: "v1", Datacenter: "dc2"}},
	}, {
		name:  "every subset to another service",
		chain: chain(target("web", "", "dc1", ""), &api.DiscoveryFailover{Targets: []string{backup.ID}}, backup),
		ent:   entry("*"),
		want:  []Failover{{Service: "backup"}},
	}, {
		name:    "to a subset by a filter tags and meta cannot say",
		chain:   chain(v1, &api.DiscoveryFailover{Targets: []string{odd.ID}}, odd),
		subset:  "v1",
		want:    []Failover{{Service: "web", Subset: "odd"}},
		filters: map[string]string{"odd": `Service.Port != 80`, "v1": ""},
	}, {
		name:     "a target in another namespace is a warning",
		chain:    chain(v1, &api.DiscoveryFailover{Targets: []string{other.ID, v2.ID}}, other, v2),
		ent:      entry("v1"),
		subset:   "v1",
		want:     []Failover{{Service: "web", Subset: "v2"}},
		warnings: []string{`service-resolver/web.Failover["v1"].Targets[0].Namespace`},
	}, {
		name:     "order by locality is a warning",
		chain:    chain(v1, &api.DiscoveryFailover{Targets: []string{v2.ID}, Policy: api.ServiceResolverFailoverPolicy{Mode: "order-by-locality"}}, v2),
		ent:      entry("*"),
		subset:   "v1",
		want:     []Failover{{Service: "web", Subset: "v2"}},
		warnings: []string{`service-resolver/web.Failover["*"].Policy`},
	}, {
		name:   "a target missing from the chain is an error",
		chain:  chain(v1, &api.DiscoveryFailover{Targets: []string{"nowhere.default.dc1"}}),
		subset: "v1",
		want:   []Failover{},
		errors: []string{"service-resolver/web.Failover.Targets[0]"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			res := translateChain(tc.chain, tc.ent)
			svc := res.services["web"]
			got := svc.Failover
			if tc.subset != "" {
				got = svc.Subsets[tc.subset].Failover
			}
			var deref []Failover
			for _, f := range got {
				deref = append(deref, *f)
			}
			if !slices.Equal(deref, tc.want) && (len(deref) != 0 || len(tc.want) != 0) {
				t.Errorf("failover %+v, want %+v", deref, tc.want)
			}
			for sub, f := range tc.filters {
				if s := svc.Subsets[sub]; s == nil || s.Filter != f {
					t.Errorf("subset %s: %+v, want filter %q", sub, s, f)
				}
			}
			paths := func(fes []*FieldError) []string {
				var p []string
				for _, fe := range fes {
					p = append(p, fe.Path)
				}
				return p
			}
			if w := paths(res.warnings); strings.Join(w, ",") != strings.Join(tc.warnings, ",") {
				t.Errorf("warnings %v, want %v", w, tc.warnings)
			}
			if e := paths(res.err); strings.Join(e, ",") != strings.Join(tc.errors, ",") {
				t.Errorf("errors %v, want %v", e, tc.errors)
			}
			if len(tc.errors) > 0 {
				return
			}
			// What the translation says compiles.
			cfg := &Config{Services: res.services}
			if _, err := Compile(cfg); err != nil {
				t.Errorf("the translation does not compile: %v", err)
			}
		})
	}
}
