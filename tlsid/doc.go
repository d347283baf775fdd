// Package tlsid proves who is calling whom: SPIFFE identities carried in
// X.509-SVIDs over mutual TLS 1.3.
//
// A [Source] serves the current SVID of this process and the trust bundles
// it accepts. [DevCA] is an in-process development certificate authority
// that issues SVIDs without any outside service.
//
// [ServerConfig] and [ClientConfig] build tls.Configs that present the
// source's SVID and verify the peer's against the bundle of the trust domain
// named in the peer's ID, then ask an [Authorizer] whether that ID may
// connect. Certificates are fetched on every handshake, so a source that
// rotates its SVID takes effect on the next connection.
//
// weft is stricter than go-spiffe in one respect: a peer's SVID must name a
// workload, so an ID with no path (spiffe://example.org) is refused.
// Parsing and chain verification are go-spiffe's.
package tlsid
