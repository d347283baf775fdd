package tlsid

import (
	"fmt"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ConsulServiceID returns the SPIFFE ID that Consul's Connect CA puts in
// the leaf certificates of service in datacenter dc:
// spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>, with the trust
// domain of roots (as /v1/agent/connect/ca/roots or
// api.Agent.ConnectCARoots return them, <cluster-id>.consul). Use it for
// [AuthorizeID] and the rules of a [Policy] instead of writing the IDs by
// hand.
//
// It fails with [ErrConsul] when roots is nil or has no valid trust
// domain, and with [ErrBadID] when dc or service is empty or holds a byte
// a SPIFFE path segment cannot (letters, digits, '.', '-', '_' only).
func ConsulServiceID(roots *api.CARootList, dc, service string) (spiffeid.ID, error) {
	if roots == nil {
		return spiffeid.ID{}, fmt.Errorf("tlsid: consul service ID: %w: no roots", ErrConsul)
	}
	td, err := spiffeid.TrustDomainFromString(roots.TrustDomain)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("tlsid: consul service ID: %w: roots trust domain %q: %v", ErrConsul, truncate(roots.TrustDomain), err)
	}
	return consulServiceID(td, dc, service)
}

// ServiceID is [ConsulServiceID] with the trust domain of the roots the
// source holds: the ID of service in datacenter dc of the same Consul
// cluster.
func (s *ConsulSource) ServiceID(dc, service string) (spiffeid.ID, error) {
	return consulServiceID(s.TrustDomain(), dc, service)
}

// ServiceNaming returns the naming of the services of datacenter dc of
// the source's Consul cluster: for each service, its Connect ID
// ([ConsulSource.ServiceID]). It fits discovery.WithNaming, so that a
// client expects each service's servers to present that service's ID
// (secure naming), not any ID of the trust domain.
func (s *ConsulSource) ServiceNaming(dc string) func(service string) (spiffeid.ID, error) {
	return func(service string) (spiffeid.ID, error) { return s.ServiceID(dc, service) }
}

func consulServiceID(td spiffeid.TrustDomain, dc, service string) (spiffeid.ID, error) {
	for _, seg := range []struct{ what, v string }{{"datacenter", dc}, {"service", service}} {
		if err := spiffeid.ValidatePathSegment(seg.v); err != nil {
			return spiffeid.ID{}, fmt.Errorf("tlsid: consul service ID: %w: %s %q: %v", ErrBadID, seg.what, truncate(seg.v), err)
		}
	}
	id, err := spiffeid.FromSegments(td, "ns", "default", "dc", dc, "svc", service)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("tlsid: consul service ID: %w: %v", ErrBadID, err)
	}
	if err := CheckWorkloadID(id); err != nil {
		return spiffeid.ID{}, fmt.Errorf("tlsid: consul service ID: %w", err)
	}
	return id, nil
}
