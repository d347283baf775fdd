package mesh

import (
	"testing"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
)

// TestPolicyName checks weft.balancer.policy: the policy that picks, seen
// through the wrappers that only narrow its choice.
func TestPolicyName(t *testing.T) {
	all := func(*discovery.Endpoint) bool { return true }
	for _, tc := range []struct {
		name   string
		policy balancer.Policy
		want   string
	}{
		{"default", nil, "round_robin"},
		{"plain", balancer.RoundRobin(), "round_robin"},
		{"outlier", balancer.Outlier(balancer.LeastRequest()), policyName(balancer.LeastRequest())},
		{"outlier of the default", balancer.Outlier(nil), "round_robin"},
		{"every wrapper", balancer.Outlier(balancer.ZoneAware("z", balancer.Subset(all, balancer.Random()))), policyName(balancer.Random())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := policyName(tc.policy); got != tc.want || got == "outlier" {
				t.Errorf("policyName = %q, want %q", got, tc.want)
			}
		})
	}
}
