package tlsid

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ErrNoPeerID is returned by [PeerID] when the connection carries no
// verified peer SVID.
var ErrNoPeerID = errors.New("tlsid: no peer SPIFFE ID")

// ErrRootPathID reports a peer SVID whose ID has no path: such an ID names
// a trust domain, not a workload, and weft refuses it as a peer identity.
var ErrRootPathID = errors.New("tlsid: peer ID has no path")

// ServerConfig returns a TLS 1.3 server configuration that presents the
// SVID of src, requires a client certificate, verifies it as an X.509-SVID
// against src's bundles and admits only peers that authorize allows. A nil
// authorize refuses every peer: say [AuthorizeAny] to admit all.
func ServerConfig(src Source, authorize Authorizer) (*tls.Config, error) {
	if src == nil {
		return nil, errors.New("tlsid: server config: nil source")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	tlsconfig.HookMTLSServerConfig(cfg, src, src, adapt(authorize))
	cfg.MinVersion = tls.VersionTLS13
	return cfg, nil
}

// ClientConfig returns a TLS 1.3 client configuration that presents the
// SVID of src and accepts only a server whose X.509-SVID verifies against
// src's bundles and whose ID authorize allows. A nil authorize refuses
// every server.
//
// Host names are not checked: the server's identity is its SPIFFE ID.
func ClientConfig(src Source, authorize Authorizer) (*tls.Config, error) {
	if src == nil {
		return nil, errors.New("tlsid: client config: nil source")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	tlsconfig.HookMTLSClientConfig(cfg, src, src, adapt(authorize))
	cfg.MinVersion = tls.VersionTLS13
	return cfg, nil
}

// adapt turns an Authorizer into go-spiffe's, adding the checks weft makes
// beyond go-spiffe's verification.
func adapt(authorize Authorizer) tlsconfig.Authorizer {
	return func(id spiffeid.ID, _ [][]*x509.Certificate) error {
		if id.Path() == "" {
			return fmt.Errorf("%w: %s", ErrRootPathID, id)
		}
		if authorize == nil {
			return fmt.Errorf("%w: no authorizer configured", ErrUnauthorized)
		}
		return authorize(id)
	}
}

// PeerID returns the SPIFFE ID of the peer of a TLS connection whose
// handshake verified it (a connection made with [ServerConfig] or
// [ClientConfig]).
func PeerID(state *tls.ConnectionState) (spiffeid.ID, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return spiffeid.ID{}, ErrNoPeerID
	}
	id, err := x509svid.IDFromCert(state.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %v", ErrNoPeerID, err)
	}
	return id, nil
}
