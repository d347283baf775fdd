package tlsid

import (
	"errors"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/leaktest"
)

func TestConsulServiceID(t *testing.T) {
	leaktest.Check(t)
	roots := &api.CARootList{TrustDomain: "11111111-2222-3333-4444-555555555555.consul"}
	for _, tc := range []struct {
		name        string
		roots       *api.CARootList
		dc, service string
		want        string
		err         error
	}{
		{"service", roots, "dc1", "web", "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/web", nil},
		{"dots and underscores", roots, "eu-west.1", "api_v2", "spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/eu-west.1/svc/api_v2", nil},
		{"nil roots", nil, "dc1", "web", "", ErrConsul},
		{"no trust domain", &api.CARootList{}, "dc1", "web", "", ErrConsul},
		{"bad trust domain", &api.CARootList{TrustDomain: "Upper.consul"}, "dc1", "web", "", ErrConsul},
		{"empty service", roots, "dc1", "", "", ErrBadID},
		{"empty datacenter", roots, "", "web", "", ErrBadID},
		{"slash in service", roots, "dc1", "web/admin", "", ErrBadID},
		{"dot-dot service", roots, "dc1", "..", "", ErrBadID},
		{"percent in datacenter", roots, "dc%31", "web", "", ErrBadID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ConsulServiceID(tc.roots, tc.dc, tc.service)
			if tc.err != nil {
				if !errors.Is(err, tc.err) || !id.IsZero() {
					t.Fatalf("ConsulServiceID = %v, %v; want an error wrapping %v", id, err, tc.err)
				}
				return
			}
			if err != nil || id.String() != tc.want {
				t.Fatalf("ConsulServiceID = %v, %v; want %s", id, err, tc.want)
			}
		})
	}
}
