package tlsid

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Names of the files [DevCA.Save] writes into its directory.
const (
	DevCACertFile = "ca.pem" // the root certificate, PEM
	DevCAKeyFile  = "ca.key" // the root's private key, PKCS#8 PEM, mode 0600
)

// ErrBadDevCA reports a dev CA directory that cannot be read or does not
// hold a usable CA: a root certificate that is no CA of a trust domain, a
// key that does not match it, a root that has expired.
var ErrBadDevCA = errors.New("tlsid: bad dev CA files")

// Save writes the CA's current root certificate and key into dir (created
// with mode 0700 if missing) as [DevCACertFile] and [DevCAKeyFile], the
// key with mode 0600, so that [LoadDevCA] can bring the same CA back in
// this or another process. Each file is written whole and then renamed
// into place, so a reader never sees a half-written file. During a root
// rotation's overlap only the new root is saved: a loaded CA trusts it
// alone.
func (ca *DevCA) Save(dir string) error {
	st := ca.current()
	keyDER, err := x509.MarshalPKCS8PrivateKey(st.key)
	if err != nil {
		return fmt.Errorf("tlsid: dev CA: save: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tlsid: dev CA: save: %w", err)
	}
	// The key first: a CA is only loaded when both files agree.
	if err := writeFileAtomic(filepath.Join(dir, DevCAKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return fmt.Errorf("tlsid: dev CA: save: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, DevCACertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: st.root.Raw}), 0o644); err != nil {
		return fmt.Errorf("tlsid: dev CA: save: %w", err)
	}
	return nil
}

// LoadDevCA brings back a CA that [DevCA.Save] wrote into dir: same trust
// domain (read from the root's ID), same root and key, so SVIDs it issues
// verify against the bundle of the CA that was saved, in any process. It
// reads [WithSVIDTTL] and [WithClock]. It fails with [ErrBadDevCA] when
// the files are unreadable or do not form a valid CA; when neither file
// exists (a directory that holds no CA yet) the error wraps
// [fs.ErrNotExist] as well. A directory with only one of the two files is
// a bad CA, not a missing one.
func LoadDevCA(dir string, opts ...DevCAOption) (*DevCA, error) {
	certPEM, certErr := os.ReadFile(filepath.Join(dir, DevCACertFile))
	keyPEM, keyErr := os.ReadFile(filepath.Join(dir, DevCAKeyFile))
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: %s holds no CA: %w", ErrBadDevCA, dir, fs.ErrNotExist)
	case certErr != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadDevCA, certErr)
	case keyErr != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadDevCA, keyErr)
	}
	ca := &DevCA{ttl: DefaultSVIDTTL, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o.applyDevCA(ca)
		}
	}
	td, root, key, err := parseDevCA(certPEM, keyPEM, ca.now())
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadDevCA, dir, err)
	}
	ca.td = td
	ca.state.Store(&caState{root: root, key: key, bundle: x509bundle.FromX509Authorities(td, []*x509.Certificate{root})})
	return ca, nil
}

// parseDevCA checks that certPEM and keyPEM hold one CA certificate of a
// trust domain, valid at now, and its P-256 key.
func parseDevCA(certPEM, keyPEM []byte, now time.Time) (spiffeid.TrustDomain, *x509.Certificate, *ecdsa.PrivateKey, error) {
	var none spiffeid.TrustDomain
	certDER, err := onePEMBlock(certPEM, "CERTIFICATE", DevCACertFile)
	if err != nil {
		return none, nil, nil, err
	}
	root, err := x509.ParseCertificate(certDER)
	if err != nil {
		return none, nil, nil, fmt.Errorf("%s: %v", DevCACertFile, err)
	}
	if !root.IsCA || !root.BasicConstraintsValid || root.KeyUsage&x509.KeyUsageCertSign == 0 {
		return none, nil, nil, errors.New(DevCACertFile + " is not a CA certificate with keyCertSign")
	}
	if len(root.URIs) != 1 || root.URIs[0] == nil {
		return none, nil, nil, errors.New(DevCACertFile + " does not name exactly one trust domain")
	}
	id, err := ParseID(root.URIs[0].String())
	if err != nil {
		return none, nil, nil, fmt.Errorf("%s: %w", DevCACertFile, err)
	}
	if id.Path() != "" {
		return none, nil, nil, fmt.Errorf("%s: the CA's ID %s has a path", DevCACertFile, id)
	}
	if now.Before(root.NotBefore) || !now.Before(root.NotAfter) {
		return none, nil, nil, fmt.Errorf("%s: the root is valid from %s to %s", DevCACertFile, root.NotBefore.Format(time.RFC3339), root.NotAfter.Format(time.RFC3339))
	}
	keyDER, err := onePEMBlock(keyPEM, "PRIVATE KEY", DevCAKeyFile)
	if err != nil {
		return none, nil, nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return none, nil, nil, fmt.Errorf("%s: %v", DevCAKeyFile, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return none, nil, nil, fmt.Errorf("%s: a %T, want an ECDSA key", DevCAKeyFile, k)
	}
	if !key.PublicKey.Equal(root.PublicKey) {
		return none, nil, nil, errors.New(DevCAKeyFile + " does not match " + DevCACertFile)
	}
	return id.TrustDomain(), root, key, nil
}

// onePEMBlock returns the bytes of the only PEM block of data, which must
// be of type typ; file names the file in errors.
func onePEMBlock(data []byte, typ, file string) ([]byte, error) {
	b, rest := pem.Decode(data)
	if b == nil || b.Type != typ {
		return nil, fmt.Errorf("no %s block in %s", typ, file)
	}
	if extra, _ := pem.Decode(rest); extra != nil {
		return nil, fmt.Errorf("more than one PEM block in %s", file)
	}
	return b.Bytes, nil
}

// Names of the files [WriteSVIDFiles] writes, as [NewFileSource] reads
// them.
const (
	SVIDCertFile   = "svid.pem"   // the SVID's certificate chain, leaf first
	SVIDKeyFile    = "svid.key"   // its private key, PKCS#8, mode 0600
	SVIDBundleFile = "bundle.pem" // the bundle of its trust domain
)

// WriteSVIDFiles writes svid and bundle into dir (created with mode 0700
// if missing) as [SVIDCertFile], [SVIDKeyFile] (mode 0600) and
// [SVIDBundleFile], each written whole and renamed into place, for a
// [FileSource] to read: NewFileSource(filepath.Join(dir, SVIDCertFile),
// ...). The key is written first and the certificate last; a FileSource
// that catches the files mid-update keeps its SVID until they agree.
func WriteSVIDFiles(dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) error {
	if svid == nil || bundle == nil {
		return fmt.Errorf("tlsid: write SVID files: %w", ErrNilSource)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		return fmt.Errorf("tlsid: write SVID files: %w", err)
	}
	bundlePEM, err := bundle.Marshal()
	if err != nil {
		return fmt.Errorf("tlsid: write SVID files: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tlsid: write SVID files: %w", err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode fs.FileMode
	}{{SVIDKeyFile, keyPEM, 0o600}, {SVIDBundleFile, bundlePEM, 0o644}, {SVIDCertFile, certPEM, 0o644}} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("tlsid: write SVID files: %w", err)
		}
	}
	return nil
}

// writeFileAtomic writes data to a temporary file next to name, with the
// given mode whatever the umask, and renames it to name.
func writeFileAtomic(name string, data []byte, mode fs.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(name), "."+filepath.Base(name)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // gone after the rename; cleans up after a failure
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, name)
}
