// Command benchserver is the server side of weft's comparison benchmarks,
// run as its own OS process as a real peer would be. It serves the same
// 64-byte HTTP answer and the demo gRPC method on one listener per row
// (plaintext, bare mutual TLS, weft, weft with telemetry), all on
// 127.0.0.1 with free ports, and prints their addresses as one JSON line
// on stdout.
//
// It is driven over stdin, one command per line: "cpu" prints the CPU
// time (user + system, in nanoseconds) the process has used so far; end
// of input stops it. The benchmarks start it and stop it themselves.
//
//	benchserver -dir <directory with svid.pem, svid.key, bundle.pem> -td <trust domain>
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/benchmarks/internal/otelmem"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

// Body is the answer to every HTTP request: 64 bytes.
var body = []byte("weft benchmark answer: sixty-four bytes of payload, no more....\n")

func main() {
	dir := flag.String("dir", "", "directory holding svid.pem, svid.key and bundle.pem")
	td := flag.String("td", "", "trust domain of the bundle")
	flag.Parse()
	if err := run(*dir, *td); err != nil {
		fmt.Fprintln(os.Stderr, "benchserver:", err)
		os.Exit(1)
	}
}

func run(dir, trustDomain string) error {
	if len(body) != 64 {
		return fmt.Errorf("body is %d bytes, want 64", len(body))
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return err
	}
	svid, err := x509svid.Load(filepath.Join(dir, "svid.pem"), filepath.Join(dir, "svid.key"))
	if err != nil {
		return err
	}
	bundle, err := x509bundle.Load(td, filepath.Join(dir, "bundle.pem"))
	if err != nil {
		return err
	}
	src := tlsid.NewStaticSource(svid, bundle)
	handler := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(body)
	})
	// Bare mutual TLS: what a program would write with go-spiffe alone.
	bareTLS := tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeAny())

	addrs := map[string]string{}
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	listen := func(name string) (net.Listener, error) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		addrs[name] = ln.Addr().String()
		return ln, nil
	}

	// HTTP rows.
	for _, name := range []string{"http-plain", "http-mtls"} {
		ln, err := listen(name)
		if err != nil {
			return err
		}
		hs := &http.Server{Handler: handler}
		if name == "http-mtls" {
			hs.TLSConfig = bareTLS
			go func() { _ = hs.ServeTLS(ln, "", "") }()
		} else {
			go func() { _ = hs.Serve(ln) }()
		}
		closers = append(closers, func() { _ = hs.Close() })
	}
	// weft servers, without telemetry and with it (sampling as the
	// caller's trace says, spans to an in-memory exporter).
	otel, err := otelmem.New(sdktrace.ParentBased(sdktrace.AlwaysSample()))
	if err != nil {
		return err
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = otel.Shutdown(ctx)
	}()
	withOtel := mesh.WithTelemetry(otel.Telemetry)
	for name, opts := range map[string][]mesh.ServerOption{
		"http-weft":      {mesh.WithIdentity(src)},
		"http-weft-otel": {mesh.WithIdentity(src), withOtel},
	} {
		ws, err := mesh.NewServer(handler, opts...)
		if err != nil {
			return err
		}
		ln, err := listen(name)
		if err != nil {
			return err
		}
		go func() { _ = ws.Serve(ln) }()
		closers = append(closers, func() { _ = ws.Close() })
	}

	// gRPC rows.
	weftOpts, err := mesh.GRPCServerOptions(mesh.WithIdentity(src))
	if err != nil {
		return err
	}
	weftOtelOpts, err := mesh.GRPCServerOptions(mesh.WithIdentity(src), withOtel)
	if err != nil {
		return err
	}
	for name, opts := range map[string][]grpc.ServerOption{
		"grpc-plain":     nil,
		"grpc-mtls":      {grpc.Creds(credentials.NewTLS(bareTLS))},
		"grpc-weft":      weftOpts,
		"grpc-weft-otel": weftOtelOpts,
	} {
		ln, err := listen(name)
		if err != nil {
			return err
		}
		gs := grpc.NewServer(opts...)
		demo.Register(gs, "bench", nil)
		go func() { _ = gs.Serve(ln) }()
		closers = append(closers, gs.Stop)
	}

	out := bufio.NewWriter(os.Stdout)
	if err := json.NewEncoder(out).Encode(addrs); err != nil {
		return err
	}
	if err := out.Flush(); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		switch in.Text() {
		case "cpu":
			var ru syscall.Rusage
			if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
				return err
			}
			fmt.Fprintln(out, ru.Utime.Nano()+ru.Stime.Nano())
		default:
			fmt.Fprintln(out, "error: unknown command", in.Text())
		}
		if err := out.Flush(); err != nil {
			return err
		}
	}
	return in.Err()
}
