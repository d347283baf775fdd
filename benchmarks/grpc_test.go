package benchmarks

import (
	"context"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/weftmesh/weft/internal/demo"
)

// grpcPaths returns the gRPC paths to srv: bare grpc-go plaintext and
// with mutual TLS, each weft variant and, with HAProxy, one and two proxy
// hops. Every call is the demo service's unary Whoami.
func grpcPaths(tb testing.TB, srv *serverProc, sc *sidecars, skip string) []path {
	e := getEnv(tb)
	dial := func(target string, opts ...grpc.DialOption) *grpc.ClientConn {
		cc, err := grpc.NewClient(target, opts...)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = cc.Close() })
		return cc
	}
	call := func(cc *grpc.ClientConn) func(context.Context) error {
		return func(ctx context.Context) error {
			_, err := demo.Whoami(ctx, cc)
			return err
		}
	}
	plainCreds := grpc.WithTransportCredentials(insecure.NewCredentials())
	mtlsCreds := grpc.WithTransportCredentials(credentials.NewTLS(e.bareClientTLS()))
	server := []cpuSource{srv}
	paths := []path{
		{name: "plain", do: call(dial("passthrough:///"+srv.addr(tb, "grpc-plain"), plainCreds)), cpu: server},
		{name: "mtls", do: call(dial("passthrough:///"+srv.addr(tb, "grpc-mtls"), mtlsCreds)), cpu: server},
	}
	for _, v := range weftVariants() {
		c, check := newWeftClient(tb, "bench-grpc", srv.addr(tb, v.listener("grpc")), v)
		cc, err := c.DialGRPC("bench-grpc")
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = cc.Close() })
		paths = append(paths, path{name: v.name, do: call(cc), cpu: server, check: check})
	}
	if sc == nil {
		return append(paths, path{name: "haproxy-1hop", skip: skip}, path{name: "haproxy-2hop", skip: skip})
	}
	return append(paths,
		path{name: "haproxy-1hop", do: call(dial("passthrough:///"+sc.inGRPC, mtlsCreds)), cpu: append(sc.cpu(1), srv)},
		path{name: "haproxy-2hop", do: call(dial("passthrough:///"+sc.outGRPC, plainCreds)), cpu: append(sc.cpu(2), srv)},
	)
}

// BenchmarkGRPC measures a unary gRPC call (the demo Whoami: a short
// string each way) on loopback, to a server in another process, along
// every path, one goroutine (mode=seq) and GOMAXPROCS goroutines
// (mode=par), with cpu-ns/op as in [BenchmarkHTTP].
func BenchmarkGRPC(b *testing.B) {
	srv := startServer(b)
	sc, skip := maybeSidecars(b, srv)
	benchPaths(b, grpcPaths(b, srv, sc, skip))
}
