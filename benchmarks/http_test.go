package benchmarks

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"testing"

	"github.com/weftmesh/weft/internal/leaktest"
)

// path is one way of making the same call: bare, through weft, or
// through sidecar proxies.
type path struct {
	name string
	// do makes one call; nil when the path is unavailable (skip says why).
	do   func(ctx context.Context) error
	skip string
	// cpu lists the processes besides this one whose CPU the call costs.
	cpu []cpuSource
	// check, when not nil, is called by TestPaths after the calls.
	check func() error
}

// httpTransport is the client transport of the bare rows: pooled
// keep-alive connections, as the weft client's.
func httpTransport(tb testing.TB) *http.Transport {
	tr := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 64}
	tb.Cleanup(tr.CloseIdleConnections)
	return tr
}

// httpPaths returns the HTTP paths to srv: bare plaintext, bare mutual
// TLS, each weft variant and, with HAProxy, one and two proxy hops.
func httpPaths(tb testing.TB, srv *serverProc, sc *sidecars, skip string) []path {
	e := getEnv(tb)
	get := func(c *http.Client, url string) func(context.Context) error {
		return func(ctx context.Context) error { return httpGet(ctx, c, url) }
	}
	server := []cpuSource{srv}
	plain := &http.Client{Transport: httpTransport(tb)}
	mtlsTr := httpTransport(tb)
	mtlsTr.TLSClientConfig = e.bareClientTLS()
	mtls := &http.Client{Transport: mtlsTr}
	paths := []path{
		{name: "plain", do: get(plain, "http://"+srv.addr(tb, "http-plain")+"/"), cpu: server},
		{name: "mtls", do: get(mtls, "https://"+srv.addr(tb, "http-mtls")+"/"), cpu: server},
	}
	for _, v := range weftVariants() {
		c, check := newWeftClient(tb, "bench", srv.addr(tb, v.listener("http")), v)
		paths = append(paths, path{name: v.name, do: get(c.HTTPClient(), "http://bench/"), cpu: server, check: check})
	}
	if sc == nil {
		paths = append(paths, path{name: "haproxy-1hop", skip: skip}, path{name: "haproxy-2hop", skip: skip})
		return paths
	}
	return append(paths,
		path{name: "haproxy-1hop", do: get(mtls, "https://"+sc.inHTTP+"/"), cpu: append(sc.cpu(1), srv)},
		path{name: "haproxy-2hop", do: get(plain, "http://"+sc.outHTTP+"/"), cpu: append(sc.cpu(2), srv)},
	)
}

// maybeSidecars starts the HAProxy pair when HAProxy is installed; else it
// returns nil and the reason.
func maybeSidecars(tb testing.TB, srv *serverProc) (*sidecars, string) {
	if _, err := exec.LookPath("haproxy"); err != nil {
		return nil, noHAProxy
	}
	return startSidecars(tb, srv), ""
}

// BenchmarkHTTP measures a 64-byte GET over a keep-alive connection on
// loopback, to a server in another process, along every path, one
// goroutine (mode=seq) and GOMAXPROCS goroutines (mode=par). Besides time
// and allocations (of this, the client, process) it reports cpu-ns/op:
// the CPU time of every process on the path (client, proxies, server)
// per request.
func BenchmarkHTTP(b *testing.B) {
	srv := startServer(b)
	sc, skip := maybeSidecars(b, srv)
	benchPaths(b, httpPaths(b, srv, sc, skip))
}

// benchPaths runs every path, sequentially and in parallel. With
// WEFT_BENCH_REVERSE=1 (run.sh sets it every other round) the paths run
// in reverse order, so that no row always runs first or last.
func benchPaths(b *testing.B, paths []path) {
	ctx := context.Background()
	if os.Getenv("WEFT_BENCH_REVERSE") == "1" {
		slices.Reverse(paths)
	}
	for _, mode := range []string{"seq", "par"} {
		for _, p := range paths {
			b.Run("mode="+mode+"/path="+p.name, func(b *testing.B) {
				if p.do == nil {
					b.Skip(p.skip)
				}
				// Warm up: connections made and pooled before timing.
				for range 4 {
					if err := p.do(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				m := startCPU(b, p.cpu...)
				if mode == "seq" {
					for range b.N {
						if err := p.do(ctx); err != nil {
							b.Fatal(err)
						}
					}
				} else {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							if err := p.do(ctx); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				m.stop(b)
			})
		}
	}
}

// TestPaths checks that every path of the benchmarks works: each
// answers a few calls correctly (the sidecar paths only where HAProxy is
// installed).
func TestPaths(t *testing.T) {
	leaktest.Check(t)
	srv := startServer(t)
	sc, skip := maybeSidecars(t, srv)
	if sc == nil {
		t.Log(skip)
	}
	ctx := context.Background()
	for kind, paths := range map[string][]path{
		"http": httpPaths(t, srv, sc, skip),
		"grpc": grpcPaths(t, srv, sc, skip),
	} {
		for _, p := range paths {
			t.Run(kind+"/"+p.name, func(t *testing.T) {
				if p.do == nil {
					t.Skip(p.skip)
				}
				for range 3 {
					if err := p.do(ctx); err != nil {
						t.Fatal(err)
					}
				}
				if p.check != nil {
					if err := p.check(); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	// The CPU meters read something.
	if c, err := srv.CPU(); err != nil || c <= 0 {
		t.Errorf("server CPU = %v, %v; want > 0", c, err)
	}
}
