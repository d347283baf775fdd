package tlsid

import (
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	// ErrBadSVID reports a certificate chain that breaks the X.509-SVID
	// rules: a leaf without exactly one URI SAN, a leaf that is a CA, a leaf
	// key usage that is missing, not critical, lacks digitalSignature or
	// has keyCertSign or cRLSign, an extended key usage without both
	// serverAuth and clientAuth, or a signing certificate that is not a CA
	// or whose own ID has a path.
	ErrBadSVID = errors.New("tlsid: not a valid X.509-SVID")

	// ErrUntrusted reports a chain that does not verify against the bundle
	// of the trust domain named in its leaf: unknown authority (including
	// a CA of another trust domain), expired or not yet valid, bad
	// signature.
	ErrUntrusted = errors.New("tlsid: SVID not trusted")

	// ErrNoBundle reports that there is no trust bundle, or only an empty
	// one, for the trust domain of a peer: an empty bundle trusts nothing.
	ErrNoBundle = errors.New("tlsid: no trust bundle for trust domain")
)

var oidKeyUsage = asn1.ObjectIdentifier{2, 5, 29, 15}

// Verify checks that chain (leaf first) is an X.509-SVID valid at time at
// (the current time if zero) and returns its leaf's SPIFFE ID.
//
// It runs go-spiffe's [x509svid.Verify], which checks that the leaf is not
// a CA and has neither keyCertSign nor cRLSign and that the chain leads to
// a root of the bundle of the leaf's own trust domain, and adds what
// go-spiffe leaves out: the leaf's ID names a workload and is at most
// [MaxIDLength] bytes, its key usage extension is present, critical and
// has digitalSignature, an extended key usage has both serverAuth and
// clientAuth, an empty bundle trusts nothing, and every signing
// certificate of the verified chain is a CA with keyCertSign whose ID, if
// it carries one, has no path.
//
// Errors wrap [ErrNoPeerID] (empty chain), [ErrBadID], [ErrIDTooLong],
// [ErrRootPathID], [ErrBadSVID], [ErrNoBundle] or [ErrUntrusted].
func Verify(chain []*x509.Certificate, bundles x509bundle.Source, at time.Time) (spiffeid.ID, error) {
	if len(chain) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: no certificate", ErrNoPeerID)
	}
	for i, c := range chain {
		if c == nil {
			return spiffeid.ID{}, fmt.Errorf("%w: certificate %d is nil", ErrBadSVID, i)
		}
	}
	if bundles == nil {
		return spiffeid.ID{}, fmt.Errorf("%w: no bundle source", ErrNoBundle)
	}
	leaf := chain[0]
	id, err := leafID(leaf)
	if err != nil {
		return spiffeid.ID{}, err
	}
	if err := checkLeaf(leaf); err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w (%s)", err, id)
	}
	bundle, err := bundles.GetX509BundleForTrustDomain(id.TrustDomain())
	if err != nil || bundle == nil {
		return spiffeid.ID{}, fmt.Errorf("%w %s: %v", ErrNoBundle, id.TrustDomain(), err)
	}
	if bundle.Empty() {
		return spiffeid.ID{}, fmt.Errorf("%w %s: the bundle is empty", ErrNoBundle, id.TrustDomain())
	}
	if at.IsZero() {
		at = time.Now()
	}
	_, chains, err := x509svid.Verify(chain, onlyBundle{bundle}, x509svid.WithTime(at))
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: %s: %v", ErrUntrusted, id, err)
	}
	var signerErr error
	for _, c := range chains {
		if signerErr = checkSigners(c[1:]); signerErr == nil {
			return id, nil
		}
	}
	return spiffeid.ID{}, fmt.Errorf("%w (%s)", signerErr, id)
}

// ParseAndVerify is [Verify] for a chain of DER certificates, as a TLS
// handshake delivers them. A certificate that does not parse fails with
// [ErrBadSVID].
func ParseAndVerify(rawCerts [][]byte, bundles x509bundle.Source, at time.Time) (spiffeid.ID, error) {
	if len(rawCerts) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: no certificate", ErrNoPeerID)
	}
	chain := make([]*x509.Certificate, 0, len(rawCerts))
	for i, raw := range rawCerts {
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return spiffeid.ID{}, fmt.Errorf("%w: certificate %d: %v", ErrBadSVID, i, err)
		}
		chain = append(chain, c)
	}
	return Verify(chain, bundles, at)
}

// onlyBundle serves one bundle for its own trust domain.
type onlyBundle struct{ b *x509bundle.Bundle }

func (o onlyBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != o.b.TrustDomain() {
		return nil, fmt.Errorf("no bundle for %s", td)
	}
	return o.b, nil
}

// leafID returns the ID of an SVID leaf: exactly one URI SAN holding a
// well-formed workload ID.
func leafID(leaf *x509.Certificate) (spiffeid.ID, error) {
	switch len(leaf.URIs) {
	case 0:
		return spiffeid.ID{}, fmt.Errorf("%w: leaf has no URI SAN", ErrBadSVID)
	case 1:
	default:
		return spiffeid.ID{}, fmt.Errorf("%w: leaf has %d URI SANs, want exactly one", ErrBadSVID, len(leaf.URIs))
	}
	if leaf.URIs[0] == nil {
		return spiffeid.ID{}, fmt.Errorf("%w: leaf has a nil URI SAN", ErrBadSVID)
	}
	id, err := ParseWorkloadID(leaf.URIs[0].String())
	if err != nil {
		return spiffeid.ID{}, err
	}
	return id, nil
}

// checkLeaf applies the X.509-SVID rules for a leaf certificate.
func checkLeaf(leaf *x509.Certificate) error {
	switch {
	case leaf.IsCA:
		return fmt.Errorf("%w: leaf is a CA", ErrBadSVID)
	case leaf.KeyUsage&x509.KeyUsageCertSign != 0:
		return fmt.Errorf("%w: leaf key usage has keyCertSign", ErrBadSVID)
	case leaf.KeyUsage&x509.KeyUsageCRLSign != 0:
		return fmt.Errorf("%w: leaf key usage has cRLSign", ErrBadSVID)
	case leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return fmt.Errorf("%w: leaf key usage lacks digitalSignature", ErrBadSVID)
	}
	critical := false
	for _, e := range leaf.Extensions {
		if e.Id.Equal(oidKeyUsage) {
			critical = e.Critical
			break
		}
	}
	if !critical {
		return fmt.Errorf("%w: leaf key usage is not critical", ErrBadSVID)
	}
	if len(leaf.ExtKeyUsage) > 0 || len(leaf.UnknownExtKeyUsage) > 0 {
		var server, client bool
		for _, u := range leaf.ExtKeyUsage {
			switch u {
			case x509.ExtKeyUsageServerAuth:
				server = true
			case x509.ExtKeyUsageClientAuth:
				client = true
			case x509.ExtKeyUsageAny:
				server, client = true, true
			}
		}
		if !server || !client {
			return fmt.Errorf("%w: leaf extended key usage lacks serverAuth or clientAuth", ErrBadSVID)
		}
	}
	return nil
}

// checkSigners applies the X.509-SVID rules for signing certificates.
func checkSigners(signers []*x509.Certificate) error {
	for _, c := range signers {
		if !c.IsCA || !c.BasicConstraintsValid {
			return fmt.Errorf("%w: signing certificate %q is not a CA", ErrBadSVID, c.Subject.String())
		}
		if c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return fmt.Errorf("%w: signing certificate %q lacks keyCertSign", ErrBadSVID, c.Subject.String())
		}
		for _, u := range c.URIs {
			id, err := spiffeid.FromURI(u)
			if err == nil && id.Path() != "" {
				return fmt.Errorf("%w: signing certificate ID %s has a path", ErrBadSVID, id)
			}
		}
	}
	return nil
}
