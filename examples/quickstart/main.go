// Command quickstart runs a small mesh in one process, with no outside
// service: three instances of a demo service (HTTP and gRPC) with SPIFFE
// identities from an in-process development CA, and a client that calls
// them over mutual TLS 1.3 through static discovery and round-robin
// balancing. It then drains one instance and shows that the next calls
// all succeed on the other two.
//
// While it runs it serves the client's admin page (mesh.Client.AdminHandler)
// on a loopback port it prints: services, endpoints, breakers and route
// table, updated live. With -keep it goes on calling the service after the
// demo and serves the page until interrupted.
//
//	go run ./examples/quickstart
//	go run ./examples/quickstart -keep -admin 127.0.0.1:9901
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

// options are the command's flags.
type options struct {
	admin string // where to serve the admin page
	keep  bool   // keep calling and serving the page until interrupted
}

func main() {
	var opts options
	flag.StringVar(&opts.admin, "admin", "127.0.0.1:0", "`address` of the admin page; it answers loopback callers only")
	flag.BoolVar(&opts.keep, "keep", false, "after the demo, keep calling the service and serving the admin page until interrupted")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if !opts.keep {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	if err := run(ctx, os.Stdout, opts); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

// instance is one running copy of the demo service.
type instance struct {
	name     string
	httpAddr string
	grpcAddr string
	http     *mesh.Server
	grpc     *grpc.Server
}

func run(ctx context.Context, out io.Writer, opts options) error {
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		return err
	}
	serverID := spiffeid.RequireFromString("spiffe://example.org/demo")
	clientID := spiffeid.RequireFromString("spiffe://example.org/quickstart")

	// Three instances of the demo service, each with its own SVID.
	var instances []*instance
	for i := 1; i <= 3; i++ {
		inst, err := start(ca, serverID, fmt.Sprintf("instance-%d", i))
		if err != nil {
			return err
		}
		defer inst.stop()
		instances = append(instances, inst)
		fmt.Fprintf(out, "started %s: http %s, grpc %s, identity %s\n", inst.name, inst.httpAddr, inst.grpcAddr, serverID)
	}
	static := &discovery.Static{}
	view := &demo.View{Watcher: static}
	publish := func(instances []*instance) error {
		var httpEPs, grpcEPs []discovery.Endpoint
		for _, in := range instances {
			httpEPs = append(httpEPs, discovery.Endpoint{ID: in.name, Addr: in.httpAddr})
			grpcEPs = append(grpcEPs, discovery.Endpoint{ID: in.name, Addr: in.grpcAddr})
		}
		if err := static.Set("demo", httpEPs...); err != nil {
			return err
		}
		return static.Set("demo-grpc", grpcEPs...)
	}
	if err := publish(instances); err != nil {
		return err
	}

	// The client: its own SVID, and it accepts only servers that prove
	// they are spiffe://example.org/demo.
	src, err := ca.Source(clientID)
	if err != nil {
		return err
	}
	client, err := mesh.NewClient(
		mesh.WithDiscovery(view),
		mesh.WithIdentity(src),
		mesh.WithAuthorizer(tlsid.AuthorizeID(serverID)),
		// A circuit breaker per instance, whose state and counts the
		// admin page shows.
		mesh.WithCircuitBreaker(breaker.Settings{}),
	)
	if err != nil {
		return err
	}
	defer client.Close()

	// The client's admin page, on loopback: weft never serves it on its own.
	adminLn, err := net.Listen("tcp", opts.admin)
	if err != nil {
		return fmt.Errorf("admin page: %w", err)
	}
	admin := &http.Server{Handler: client.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = admin.Serve(adminLn) }()
	defer admin.Close()
	fmt.Fprintf(out, "admin page: http://%s/ (JSON at /clusters, /routes, /identity, /config, /explain)\n", adminLn.Addr())

	cc, err := client.DialGRPC("demo-grpc")
	if err != nil {
		return err
	}
	defer cc.Close()
	hc := client.HTTPClient()

	// gRPC connects to instances in the background and balances over the
	// ready ones; wait until all three have answered once.
	if err := warmUp(ctx, cc, len(instances)); err != nil {
		return err
	}

	fmt.Fprintf(out, "\nclient %s: 30 HTTP calls to http://demo/whoami\n", clientID)
	if err := callHTTP(ctx, out, hc, 30, nil); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nclient %s: 30 gRPC calls to %s on demo-grpc\n", clientID, demo.WhoamiMethod)
	if err := callGRPC(ctx, out, cc, 30, nil); err != nil {
		return err
	}

	// Drain instance-1: leave discovery first and wait until the client
	// has applied the new set, then shut down, so no call is sent to an
	// instance that is going away.
	gone := instances[0]
	if err := publish(instances[1:]); err != nil {
		return err
	}
	if err := view.WaitWithout(ctx, gone.name); err != nil {
		return err
	}
	shutdownCtx, done := context.WithTimeout(ctx, 5*time.Second)
	defer done()
	if err := gone.http.Shutdown(shutdownCtx); err != nil {
		return err
	}
	gone.grpc.GracefulStop()
	fmt.Fprintf(out, "\nstopped %s; 10 more calls of each kind\n", gone.name)
	notGone := func(answer string) error {
		if strings.HasPrefix(answer, gone.name+" ") {
			return fmt.Errorf("stopped %s answered", gone.name)
		}
		return nil
	}
	if err := callHTTP(ctx, out, hc, 10, notGone); err != nil {
		return err
	}
	if err := callGRPC(ctx, out, cc, 10, notGone); err != nil {
		return err
	}

	// A client with no certificate from the CA is refused at the handshake.
	if err := anonymous(ctx, instances[1].httpAddr); err == nil {
		return errors.New("a client without a certificate was served")
	} else {
		fmt.Fprintf(out, "\na client without a certificate is refused: %v\n", err)
	}
	fmt.Fprintln(out, "\nall calls succeeded")
	if opts.keep {
		fmt.Fprintf(out, "\ncalling every 200ms; the admin page stays at http://%s/ until interrupted\n", adminLn.Addr())
		return keepCalling(ctx, hc, cc)
	}
	return nil
}

// keepCalling calls the demo service over HTTP and gRPC every 200 ms
// until ctx ends, so that the admin page has traffic to show.
func keepCalling(ctx context.Context, hc *http.Client, cc *grpc.ClientConn) error {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://demo/whoami", nil); err == nil {
			if resp, err := hc.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		_, _ = demo.Whoami(ctx, cc)
	}
}

func start(ca *tlsid.DevCA, id spiffeid.ID, name string) (*instance, error) {
	src, err := ca.Source(id)
	if err != nil {
		return nil, err
	}
	inst := &instance{name: name}
	// Callers must be of the same trust domain (the default).
	inst.http, err = mesh.NewServer(demo.Handler(name, mesh.PeerID), mesh.WithIdentity(src))
	if err != nil {
		return nil, err
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = inst.http.Serve(hl) }()
	opts, err := mesh.GRPCServerOptions(mesh.WithIdentity(src))
	if err != nil {
		return nil, err
	}
	inst.grpc = grpc.NewServer(opts...)
	demo.Register(inst.grpc, name, mesh.PeerID)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = inst.grpc.Serve(gl) }()
	inst.httpAddr, inst.grpcAddr = hl.Addr().String(), gl.Addr().String()
	return inst, nil
}

func (inst *instance) stop() {
	_ = inst.http.Close()
	inst.grpc.Stop()
}

func callHTTP(ctx context.Context, out io.Writer, hc *http.Client, n int, check func(string) error) error {
	for i := 1; i <= n; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://demo/whoami", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return fmt.Errorf("http call %d: %w", i, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("http call %d: %w", i, err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("http call %d: %s", i, resp.Status)
		}
		if check != nil {
			if err := check(string(body)); err != nil {
				return err
			}
		}
		fmt.Fprintf(out, "  http %2d  %s (%s)\n", i, body, tlsVersion(resp.TLS))
	}
	return nil
}

func callGRPC(ctx context.Context, out io.Writer, cc *grpc.ClientConn, n int, check func(string) error) error {
	for i := 1; i <= n; i++ {
		answer, err := demo.Whoami(ctx, cc)
		if err != nil {
			return fmt.Errorf("grpc call %d: %w", i, err)
		}
		if check != nil {
			if err := check(answer); err != nil {
				return err
			}
		}
		fmt.Fprintf(out, "  grpc %2d  %s\n", i, answer)
	}
	return nil
}

// warmUp calls until n distinct instances have answered, for at most
// 30 seconds: each instance's connection and TLS handshake complete in
// the background, late on a busy machine.
func warmUp(ctx context.Context, cc *grpc.ClientConn, n int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	seen := map[string]bool{}
	for len(seen) < n {
		answer, err := demo.Whoami(ctx, cc)
		if err != nil {
			return fmt.Errorf("gRPC warm-up: %w (%d of %d instances ready)", err, len(seen), n)
		}
		seen[strings.Fields(answer)[0]] = true
	}
	return nil
}

// anonymous makes a TLS request with no client certificate.
func anonymous(ctx context.Context, addr string) error {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/whoami", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

func tlsVersion(s *tls.ConnectionState) string {
	if s == nil {
		return "plaintext"
	}
	return tls.VersionName(s.Version)
}
