// Command weft-ca issues X.509-SVIDs from a development CA kept in a
// directory, so that the processes of a local system share one trust
// domain through tlsid.FileSource.
//
//	go run ./cmd/weft-ca -ca .weft-ca -out certs/web spiffe://example.org/web
//
// The first run creates the CA for the ID's trust domain and saves it in
// the -ca directory (its key with mode 0600); later runs load it, so
// every SVID issued verifies against the same bundle. Each run writes
// svid.pem, svid.key (mode 0600) and bundle.pem into the -out directory
// and prints their paths. -ttl sets the SVID's lifetime (default 24h).
//
// Exit status: 0 on success, 2 for bad arguments, 1 for any other
// failure (such as a CA directory that holds another trust domain's CA).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/weftmesh/weft/tlsid"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// errUsage marks errors in the command line (exit status 2).
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if err := issue(args, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "weft-ca: %v\n", err)
		if errors.Is(err, errUsage) {
			return 2
		}
		return 1
	}
	return 0
}

func issue(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("weft-ca", flag.ContinueOnError)
	fl.SetOutput(stderr)
	caDir := fl.String("ca", ".weft-ca", "directory holding the CA (created on first use)")
	out := fl.String("out", ".", "directory to write svid.pem, svid.key and bundle.pem into")
	ttl := fl.Duration("ttl", 24*time.Hour, "lifetime of the SVID")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: weft-ca [-ca dir] [-out dir] [-ttl duration] spiffe://trust-domain/workload")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fl.NArg() != 1 {
		fl.Usage()
		return fmt.Errorf("%w: want exactly one SPIFFE ID, got %d arguments", errUsage, fl.NArg())
	}
	if *ttl <= 0 {
		return fmt.Errorf("%w: -ttl %s: must be positive", errUsage, *ttl)
	}
	id, err := tlsid.ParseWorkloadID(fl.Arg(0))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	ca, err := tlsid.LoadDevCA(*caDir, tlsid.WithSVIDTTL(*ttl))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if ca, err = tlsid.NewDevCA(id.TrustDomain().Name(), tlsid.WithSVIDTTL(*ttl)); err != nil {
			return err
		}
		if err := ca.Save(*caDir); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "created CA for %s in %s\n", ca.TrustDomain(), *caDir)
	case err != nil:
		return err
	}
	svid, err := ca.Issue(id)
	if err != nil {
		return err
	}
	if err := tlsid.WriteSVIDFiles(*out, svid, ca.Bundle()); err != nil {
		return err
	}
	for _, name := range []string{tlsid.SVIDCertFile, tlsid.SVIDKeyFile, tlsid.SVIDBundleFile} {
		fmt.Fprintln(stdout, filepath.Join(*out, name))
	}
	return nil
}
