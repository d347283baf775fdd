package tlsid

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
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

// TestConsulServiceIDMatchesConsul checks the built IDs against the leaf
// certificates a real Consul agent issues.
func TestConsulServiceIDMatchesConsul(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	client := agent.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := NewConsulSource(ctx, client, "payments")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	roots, _, err := client.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	fromRoots, err := ConsulServiceID(roots, "dc1", "payments")
	if err != nil {
		t.Fatal(err)
	}
	fromSource, err := src.ServiceID("dc1", "payments")
	if err != nil {
		t.Fatal(err)
	}
	if fromRoots != svid.ID || fromSource != svid.ID {
		t.Fatalf("built %s and %s, Consul issued %s", fromRoots, fromSource, svid.ID)
	}
	if _, err := src.ServiceID("dc1", "bad/name"); !errors.Is(err, ErrBadID) {
		t.Fatalf("bad service name: %v", err)
	}
}
