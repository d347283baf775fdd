package mesh

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// The telemetry benchmarks measure one sequential call over mutual TLS on
// loopback, client and server in this process, in five set-ups:
//
//	bare            net/http or grpc-go with weft's TLS configs, nothing else
//	weft            mesh client and server, no telemetry
//	weft-unsampled  mesh with telemetry, sampler off (metrics still recorded)
//	weft-sampled    mesh with telemetry, every span sampled to an in-memory exporter
//	contrib-sampled bare plus otelhttp / otelgrpc on both sides, every span sampled
//
// Each sub-benchmark after "bare" reports its wall time ("x-bare") and
// its process CPU time ("cpu-x-bare") as multiples of the bare call's, so
// one run gives the ratios:
//
//	go test -run='^$' -bench=BenchmarkTelemetry -benchtime=3000x ./mesh
//
// On a shared machine, repeat whole runs (not -count, which runs each
// set-up back to back) and take the median of the ratios:
//
//	go test -c -o /tmp/mesh.test ./mesh && cd mesh &&
//	for i in 1 2 3 4 5 6 7 8; do /tmp/mesh.test -test.run='^$' -test.bench=BenchmarkTelemetry -test.benchtime=3000x; done

// otelSetup is an SDK for a benchmark: sampled or not, spans to an
// in-memory exporter through a batcher, metrics to a manual reader. weft
// decides with sampler (telemetry.WithSampler), followed by the server;
// the provider records what it is asked for, as otelhttp and otelgrpc
// sample.
type otelSetup struct {
	sampler sdktrace.Sampler
	tp      *sdktrace.TracerProvider
	mp      *sdkmetric.MeterProvider
	exp     *recycledExporter
}

// recycledExporter is an in-memory exporter emptied every few thousand
// spans, so that the benchmark measures recording and exporting spans,
// not a heap growing with every span ever made (which the garbage
// collector would scan on every cycle).
type recycledExporter struct {
	*tracetest.InMemoryExporter
	mu sync.Mutex
	n  int
}

func (e *recycledExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.InMemoryExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.n += len(spans); e.n >= 4096 {
		e.Reset()
		e.n = 0
	}
	return err
}

func newOtelSetup(b *testing.B, sampled bool) *otelSetup {
	s := &otelSetup{exp: &recycledExporter{InMemoryExporter: tracetest.NewInMemoryExporter()}}
	s.sampler = sdktrace.ParentBased(sdktrace.NeverSample())
	if sampled {
		s.sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(s.exp, sdktrace.WithBatchTimeout(50*time.Millisecond)), sdktrace.WithSampler(s.sampler))
	s.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = s.tp.Shutdown(context.Background())
		_ = s.mp.Shutdown(context.Background())
	})
	return s
}

func (s *otelSetup) telemetry(b *testing.B) *telemetry.Telemetry {
	t, err := telemetry.New(telemetry.WithSampler(s.sampler), telemetry.WithTracerProvider(s.tp), telemetry.WithMeterProvider(s.mp))
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// benchRatios keeps the wall and CPU time per call of the last run of
// each sub-benchmark, to report the others as multiples of "bare". CPU
// time (user+system of the whole process: client, server, exporters) is
// the steadier figure on a shared machine, where wall time mostly
// measures waiting for a core.
type benchRatios struct {
	mu   sync.Mutex
	wall map[string]float64
	cpu  map[string]float64
}

func (r *benchRatios) report(b *testing.B, name string, cpu time.Duration) {
	wall := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	cpuNs := float64(cpu.Nanoseconds()) / float64(b.N)
	b.ReportMetric(cpuNs, "cpu-ns/op")
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.wall == nil {
		r.wall, r.cpu = map[string]float64{}, map[string]float64{}
	}
	r.wall[name], r.cpu[name] = wall, cpuNs
	if name != "bare" && r.wall["bare"] > 0 && r.cpu["bare"] > 0 {
		b.ReportMetric(wall/r.wall["bare"], "x-bare")
		b.ReportMetric(cpuNs/r.cpu["bare"], "cpu-x-bare")
	}
}

// cpuTime returns the CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type benchTLS struct {
	ca     *tlsid.DevCA
	client *tlsid.DevSource
	server *tlsid.DevSource
}

func newBenchTLS(b *testing.B) *benchTLS {
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		b.Fatal(err)
	}
	x := &benchTLS{ca: ca}
	if x.client, err = ca.Source(telClientID); err != nil {
		b.Fatal(err)
	}
	if x.server, err = ca.Source(telBID); err != nil {
		b.Fatal(err)
	}
	return x
}

func (x *benchTLS) configs(b *testing.B) (client, server *tls.Config) {
	c, err := tlsid.ClientConfig(x.client, tlsid.AuthorizeID(telBID))
	if err != nil {
		b.Fatal(err)
	}
	s, err := tlsid.ServerConfig(x.server, tlsid.AuthorizeID(telClientID))
	if err != nil {
		b.Fatal(err)
	}
	return c, s
}

// listen serves with serve on a fresh loopback listener until the
// benchmark ends and returns its address; stop stops serving.
func listen(b *testing.B, serve func(net.Listener), stop func()) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		serve(ln)
	}()
	b.Cleanup(func() { stop(); <-done })
	return ln.Addr().String()
}

func drain(b *testing.B, hc *http.Client, req *http.Request) {
	resp, err := hc.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("status %d", resp.StatusCode)
	}
}

func BenchmarkTelemetryHTTP(b *testing.B) {
	var ratios benchRatios
	handler := demo.Handler("b", PeerID)

	b.Run("bare", func(b *testing.B) {
		x := newBenchTLS(b)
		ccfg, scfg := x.configs(b)
		srv := &http.Server{Handler: handler, TLSConfig: scfg}
		addr := listen(b, func(ln net.Listener) { _ = srv.ServeTLS(ln, "", "") }, func() { srv.Close() })
		tr := &http.Transport{TLSClientConfig: ccfg}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		ratios.report(b, "bare", benchHTTP(b, hc, "https://"+addr+"/"))
	})

	weft := func(name string, setup func(*testing.B) (client, server []Option)) {
		b.Run(name, func(b *testing.B) {
			x := newBenchTLS(b)
			copts, sopts := setup(b)
			srv, err := NewServer(handler, append(toServer(sopts), WithIdentity(x.server))...)
			if err != nil {
				b.Fatal(err)
			}
			addr := listen(b, func(ln net.Listener) { _ = srv.Serve(ln) }, func() { srv.Close() })
			d := &discovery.Static{}
			if err := d.Set("b", discovery.Endpoint{ID: "b-1", Addr: addr}); err != nil {
				b.Fatal(err)
			}
			c, err := NewClient(append(toClient(copts), WithIdentity(x.client), WithDiscovery(d))...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ratios.report(b, name, benchHTTP(b, c.HTTPClient(), "http://b/"))
		})
	}
	weft("weft", func(*testing.B) ([]Option, []Option) { return nil, nil })
	weft("weft-unsampled", func(b *testing.B) ([]Option, []Option) {
		s := newOtelSetup(b, false)
		return []Option{WithTelemetry(s.telemetry(b))}, []Option{WithTelemetry(s.telemetry(b))}
	})
	weft("weft-sampled", func(b *testing.B) ([]Option, []Option) {
		s := newOtelSetup(b, true)
		return []Option{WithTelemetry(s.telemetry(b))}, []Option{WithTelemetry(s.telemetry(b))}
	})

	b.Run("contrib-sampled", func(b *testing.B) {
		s := newOtelSetup(b, true)
		x := newBenchTLS(b)
		ccfg, scfg := x.configs(b)
		prop := propagation.TraceContext{}
		srv := &http.Server{Handler: otelhttp.NewHandler(handler, "server",
			otelhttp.WithTracerProvider(s.tp), otelhttp.WithMeterProvider(s.mp), otelhttp.WithPropagators(prop)), TLSConfig: scfg}
		addr := listen(b, func(ln net.Listener) { _ = srv.ServeTLS(ln, "", "") }, func() { srv.Close() })
		tr := &http.Transport{TLSClientConfig: ccfg}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: otelhttp.NewTransport(tr,
			otelhttp.WithTracerProvider(s.tp), otelhttp.WithMeterProvider(s.mp), otelhttp.WithPropagators(prop))}
		ratios.report(b, "contrib-sampled", benchHTTP(b, hc, "https://"+addr+"/"))
	})
}

func benchHTTP(b *testing.B, hc *http.Client, url string) time.Duration {
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		b.Fatal(err)
	}
	drain(b, hc, req) // connect before timing
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		drain(b, hc, req)
	}
	b.StopTimer()
	return cpuTime() - start
}

func BenchmarkTelemetryGRPC(b *testing.B) {
	var ratios benchRatios

	b.Run("bare", func(b *testing.B) {
		x := newBenchTLS(b)
		ccfg, scfg := x.configs(b)
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)))
		demo.Register(srv, "b", PeerID)
		addr := listen(b, func(ln net.Listener) { _ = srv.Serve(ln) }, srv.Stop)
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ccfg)))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		ratios.report(b, "bare", benchGRPC(b, cc))
	})

	weft := func(name string, setup func(*testing.B) (client, server []Option)) {
		b.Run(name, func(b *testing.B) {
			x := newBenchTLS(b)
			copts, sopts := setup(b)
			gopts, err := GRPCServerOptions(append(toServer(sopts), WithIdentity(x.server))...)
			if err != nil {
				b.Fatal(err)
			}
			srv := grpc.NewServer(gopts...)
			demo.Register(srv, "b", PeerID)
			addr := listen(b, func(ln net.Listener) { _ = srv.Serve(ln) }, srv.Stop)
			d := &discovery.Static{}
			if err := d.Set("b", discovery.Endpoint{ID: "b-1", Addr: addr}); err != nil {
				b.Fatal(err)
			}
			c, err := NewClient(append(toClient(copts), WithIdentity(x.client), WithDiscovery(d))...)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			cc, err := c.DialGRPC("b")
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Close()
			ratios.report(b, name, benchGRPC(b, cc))
		})
	}
	weft("weft", func(*testing.B) ([]Option, []Option) { return nil, nil })
	weft("weft-unsampled", func(b *testing.B) ([]Option, []Option) {
		s := newOtelSetup(b, false)
		return []Option{WithTelemetry(s.telemetry(b))}, []Option{WithTelemetry(s.telemetry(b))}
	})
	weft("weft-sampled", func(b *testing.B) ([]Option, []Option) {
		s := newOtelSetup(b, true)
		return []Option{WithTelemetry(s.telemetry(b))}, []Option{WithTelemetry(s.telemetry(b))}
	})

	b.Run("contrib-sampled", func(b *testing.B) {
		s := newOtelSetup(b, true)
		x := newBenchTLS(b)
		ccfg, scfg := x.configs(b)
		prop := propagation.TraceContext{}
		srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(scfg)), grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(s.tp), otelgrpc.WithMeterProvider(s.mp), otelgrpc.WithPropagators(prop))))
		demo.Register(srv, "b", PeerID)
		addr := listen(b, func(ln net.Listener) { _ = srv.Serve(ln) }, srv.Stop)
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ccfg)), grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(s.tp), otelgrpc.WithMeterProvider(s.mp), otelgrpc.WithPropagators(prop))))
		if err != nil {
			b.Fatal(err)
		}
		defer cc.Close()
		ratios.report(b, "contrib-sampled", benchGRPC(b, cc))
	})
}

func benchGRPC(b *testing.B, cc *grpc.ClientConn) time.Duration {
	ctx := context.Background()
	if _, err := demo.Whoami(ctx, cc); err != nil { // connect before timing
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	for range b.N {
		if _, err := demo.Whoami(ctx, cc); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	return cpuTime() - start
}

func toServer(opts []Option) []ServerOption {
	out := make([]ServerOption, 0, len(opts))
	for _, o := range opts {
		out = append(out, o)
	}
	return out
}

func toClient(opts []Option) []ClientOption {
	out := make([]ClientOption, 0, len(opts))
	for _, o := range opts {
		out = append(out, o)
	}
	return out
}
