// Package tlsid proves who is calling whom: SPIFFE identities carried in
// X.509-SVIDs over mutual TLS 1.3, and the authorization of those
// identities per connection and per request.
//
// # Identities
//
// SPIFFE IDs are go-spiffe's [spiffeid.ID]. [ParseID] parses them with
// go-spiffe and adds weft's limits: IDs over [MaxIDLength] bytes and trust
// domains over [MaxTrustDomainLength] bytes are refused with
// [ErrIDTooLong]. weft is stricter than go-spiffe in one more respect: a
// peer's SVID must name a workload, so an ID with no path
// (spiffe://example.org) is refused with [ErrRootPathID]
// ([ParseWorkloadID], [CheckWorkloadID]).
//
// # Sources
//
// Security inputs are one-method interfaces, go-spiffe's own: an
// [SVIDSource] ([x509svid.Source]) serves this process's current SVID and
// a [BundleSource] ([x509bundle.Source]) the trust bundles it verifies
// peers against. A [Source] is both, so go-spiffe's sources plug in with
// no adapter: workloadapi.X509Source is a Source, an [*x509svid.SVID] is
// its own SVID source, and an [*x509bundle.Bundle] or [*x509bundle.Set]
// its own bundle source; [Join] makes a Source of the two halves. Sources
// may announce rotations by implementing [Notifier]; [Changed] reads the
// notice of any source and is nil for one without. These sources rotate
// without a restart:
//
//   - [DevCA] is an in-process development CA: [DevCA.Source] serves an
//     SVID renewed at a random point between 50% and 90% of its life
//     ([DefaultSVIDTTL] one hour) and [DevCA.RotateRoot] replaces the
//     root with an overlap during which both roots are trusted.
//     [DevCA.Save] and [LoadDevCA] keep it in a directory, so it survives
//     restarts and several processes share it; [WriteSVIDFiles] writes
//     an SVID and bundle for a [FileSource] (the weft-ca command does
//     both).
//   - [FileSource] reads certificate chain, key and bundle PEM files and
//     reloads them when they change on disk.
//   - [WorkloadSource] takes SVIDs and bundles from the SPIFFE Workload
//     API, as a SPIRE agent serves it, through go-spiffe's workloadapi
//     client: rotated SVIDs and the bundles of federated trust domains
//     apply from the next handshake on.
//   - [ConsulSource] takes the leaf certificate of a service and the CA
//     roots from a Consul agent's Connect CA, each watched with blocking
//     queries; the trust domain is Consul's. [ConsulServiceID] builds the
//     ID Consul gives a service.
//
// [StaticSource] never changes.
//
// # Verification and TLS configs
//
// [Verify] checks a chain by the X.509-SVID rules: go-spiffe's
// [x509svid.Verify] (the leaf is no CA and has neither keyCertSign nor
// cRLSign; the chain leads to the bundle of the trust domain named in the
// leaf, not to any trusted root) plus what it leaves out (exactly one URI
// SAN holding a workload ID, a critical key usage with digitalSignature,
// serverAuth and clientAuth when an extended key usage is present, an
// empty bundle trusting nothing, signing certificates that are CAs with
// keyCertSign and path-less IDs).
//
// [ServerConfig] and [ClientConfig] build TLS 1.3 configs that present the
// source's SVID through GetCertificate / GetClientCertificate and verify
// the peer in VerifyConnection, which runs on every handshake, resumed
// ones included: a new SVID is presented from the next handshake on, and
// a session resumed after a bundle change is checked against the new
// bundle. An [Authorizer] ([AuthorizeAny], [AuthorizeID],
// [AuthorizeOneOf], [AuthorizeMemberOf]) then decides whether the peer
// may connect.
//
// # Request policies
//
// A [RequestPolicy] decides per request: [Policy] compiles allow and deny
// [Rule]s matching the peer (exact ID, trust domain, path prefix) against
// the HTTP method and the canonical path ([CleanPath]) or gRPC method;
// deny wins and, once there is any rule, what no rule allows is denied.
// Requests carry their [Headers] (gRPC: the call's metadata).
//
// Consul's service intentions are enforced two ways, side by side.
// [WatchConsulIntentions] watches the service-intentions config entries
// with blocking queries and compiles them ([CompileIntentions]) into
// [Intentions] decided in-process, L7 permissions included: Consul's
// precedence of sources, allow and deny actions, HTTP permissions on
// paths (exact, prefix, RE2 regex), methods and headers, no matching
// permission denying, and a default ([WithIntentionsDefault]) that is
// deny unless set to match an ACL default of allow. It fails closed:
// until its first answer, and for callers that are not Consul services
// of the cluster's trust domain. Fields it cannot check (JWTs, peers,
// other namespaces) are named in [IntentionWarning]s and never allow
// more than Consul would. [ConsulIntentions] asks the agent's authorize
// endpoint per caller, with a bounded cache; it decides by caller only,
// treats any L7 intention as a deny, and also serves as a handshake
// [Authorizer]. Package mesh applies request policies to HTTP and gRPC
// servers.
//
// Errors that callers branch on are the exported Err values, wrapped with
// %w; every error of the package starts with "tlsid: ".
package tlsid
