package mesh_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

// interopLog is grpclog's logger in this test binary. grpc-go's interop
// case functions report a failure with grpclog's Fatal, after which
// grpclog exits the process. While a case runs (see runInteropCase),
// Fatal records the message and ends the case's goroutine instead, so the
// failure is reported as the case's and the other cases still run.
// Outside a case it logs, and grpclog exits, as by default. Other levels
// log as grpclog's default logger does: errors only, to stderr.
var interopLog = &caseLogger{LoggerV2: grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr)}

func init() {
	// grpclog's logger is a plain variable: it is set before any gRPC
	// code runs.
	grpclog.SetLoggerV2(interopLog)
}

type caseLogger struct {
	grpclog.LoggerV2
	mu       sync.Mutex
	running  bool     // a case runs
	failures []string // its Fatal messages
}

func (l *caseLogger) fatal(msg string) {
	l.mu.Lock()
	running := l.running
	if running {
		l.failures = append(l.failures, strings.TrimSpace(msg))
	}
	l.mu.Unlock()
	if !running {
		l.Errorln("FATAL: " + msg)
		return
	}
	runtime.Goexit()
}

func (l *caseLogger) Fatal(args ...any)                 { l.fatal(fmt.Sprint(args...)) }
func (l *caseLogger) Fatalf(format string, args ...any) { l.fatal(fmt.Sprintf(format, args...)) }
func (l *caseLogger) Fatalln(args ...any)               { l.fatal(fmt.Sprintln(args...)) }

// runInteropCase runs f, an interop case, on a goroutine of its own and
// fails t with the case's Fatal messages if it does not complete.
func runInteropCase(t *testing.T, f func()) {
	t.Helper()
	interopLog.mu.Lock()
	interopLog.running, interopLog.failures = true, nil
	interopLog.mu.Unlock()
	completed := make(chan bool)
	go func() {
		ok := false
		defer func() { completed <- ok }()
		f()
		ok = true
	}()
	ok := <-completed
	interopLog.mu.Lock()
	failures := interopLog.failures
	interopLog.running, interopLog.failures = false, nil
	interopLog.mu.Unlock()
	if !ok {
		t.Errorf("interop case failed: %s", strings.Join(failures, "; "))
	}
}

// interopEnv is grpc-go's interop test server, run as instances of the
// weft service "interop" over mutual TLS, and a weft client of it.
type interopEnv struct {
	client *mesh.Client
	cc     *grpc.ClientConn
	dial   []grpc.DialOption // DialGRPC's options, for fresh channels
	made   atomic.Int64      // unary calls the application made
	served atomic.Int64      // unary calls that reached a server's handler
}

// interopSetup is one client and server configuration the interop cases
// run under.
type interopSetup struct {
	name string
	// client returns the set-up's client options; server, its server
	// options.
	client func(t *testing.T) []mesh.ClientOption
	server []mesh.ServerOption
	// slow is the set-up's extra interceptor of the first instance.
	slow grpc.UnaryServerInterceptor
	// check checks the whole run once every case has run.
	check func(t *testing.T, env *interopEnv)
}

var (
	interopServerID = spiffeid.RequireFromString("spiffe://example.org/interop")
	interopClientID = spiffeid.RequireFromString("spiffe://example.org/interop-client")
)

// newInteropEnv starts n instances of the interop test server with the
// set-up's options and dials "interop" with a weft client.
func newInteropEnv(t *testing.T, n int, s interopSetup) *interopEnv {
	t.Helper()
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	serverSrc, err := ca.Source(interopServerID)
	if err != nil {
		t.Fatal(err)
	}
	clientSrc, err := ca.Source(interopClientID)
	if err != nil {
		t.Fatal(err)
	}
	env := &interopEnv{}
	var eps []discovery.Endpoint
	for i := range n {
		opts, err := mesh.GRPCServerOptions(append([]mesh.ServerOption{mesh.WithIdentity(serverSrc)}, s.server...)...)
		if err != nil {
			t.Fatal(err)
		}
		chain := []grpc.UnaryServerInterceptor{func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			env.served.Add(1)
			return h(ctx, req)
		}}
		if i == 0 && s.slow != nil {
			chain = append(chain, s.slow)
		}
		srv := grpc.NewServer(append(opts, grpc.ChainUnaryInterceptor(chain...))...)
		testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = srv.Serve(ln) }()
		t.Cleanup(func() { srv.Stop(); <-done })
		eps = append(eps, discovery.Endpoint{ID: fmt.Sprintf("interop-%d", i+1), Addr: ln.Addr().String()})
	}
	static := &discovery.Static{}
	if err := static.Set("interop", eps...); err != nil {
		t.Fatal(err)
	}
	var copts []mesh.ClientOption
	if s.client != nil {
		copts = s.client(t)
	}
	env.client, err = mesh.NewClient(append([]mesh.ClientOption{mesh.WithDiscovery(static), mesh.WithIdentity(clientSrc)}, copts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.client.Close() })
	// The one plain interceptor runs before any chained one: it sees the
	// calls the application makes, not weft's attempts.
	env.dial = []grpc.DialOption{grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		env.made.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})}
	env.cc = env.channel(t)
	t.Cleanup(func() { env.cc.Close() })
	return env
}

// channel dials a new weft channel to "interop".
func (env *interopEnv) channel(t testing.TB) *grpc.ClientConn {
	cc, err := env.client.DialGRPC("interop", env.dial...)
	if err != nil {
		t.Fatalf("dial interop: %v", err)
	}
	return cc
}

// soakConfig is the interop client's soak configuration, with fewer
// iterations and room for a loaded machine.
func soakConfig(channel func() (*grpc.ClientConn, func())) interop.SoakTestConfig {
	return interop.SoakTestConfig{
		RequestSize:                      271828,
		ResponseSize:                     314159,
		PerIterationMaxAcceptableLatency: 10 * time.Second,
		OverallTimeout:                   60 * time.Second,
		ServerAddr:                       "weft:///interop",
		NumWorkers:                       1,
		Iterations:                       10,
		MaxFailures:                      0,
		ChannelForTest:                   channel,
	}
}

// interopCases are grpc-go's interop client cases, run as its interop
// client runs them.
var interopCases = []struct {
	name string
	run  func(ctx context.Context, t *testing.T, env *interopEnv)
}{
	{"empty_unary", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoEmptyUnaryCall(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"large_unary", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoLargeUnaryCall(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"client_streaming", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoClientStreaming(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"server_streaming", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoServerStreaming(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"ping_pong", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoPingPong(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"empty_stream", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoEmptyStream(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"timeout_on_sleeping_server", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoTimeoutOnSleepingServer(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"cancel_after_begin", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoCancelAfterBegin(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"cancel_after_first_response", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoCancelAfterFirstResponse(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"status_code_and_message", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoStatusCodeAndMessage(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"special_status_message", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoSpecialStatusMessage(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"custom_metadata", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoCustomMetadata(ctx, testgrpc.NewTestServiceClient(env.cc))
	}},
	{"unimplemented_method", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoUnimplementedMethod(ctx, env.cc)
	}},
	{"unimplemented_service", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(env.cc))
	}},
	{"rpc_soak", func(ctx context.Context, _ *testing.T, env *interopEnv) {
		interop.DoSoakTest(ctx, soakConfig(func() (*grpc.ClientConn, func()) { return env.cc, func() {} }))
	}},
	{"channel_soak", func(ctx context.Context, t *testing.T, env *interopEnv) {
		interop.DoSoakTest(ctx, soakConfig(func() (*grpc.ClientConn, func()) {
			cc := env.channel(t)
			return cc, func() { cc.Close() }
		}))
	}},
}

// TestInterop runs grpc-go's interop client cases through a weft client
// against weft servers of grpc-go's interop test server, over mutual TLS,
// in three set-ups: plain; every resilience feature on, with every span
// sampled; and hedges that fire, against one slow instance.
func TestInterop(t *testing.T) {
	for _, s := range interopSetups() {
		t.Run(s.name, func(t *testing.T) {
			leaktest.Check(t)
			env := newInteropEnv(t, 3, s)
			for _, c := range interopCases {
				t.Run(c.name, func(t *testing.T) {
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					runInteropCase(t, func() { c.run(ctx, t, env) })
				})
			}
			if s.check != nil {
				s.check(t, env)
			}
		})
	}
}

func interopSetups() []interopSetup {
	return []interopSetup{
		{name: "plain"},
		{
			name: "resilient",
			client: func(t *testing.T) []mesh.ClientOption {
				spans := tracetest.NewSpanRecorder()
				tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(spans))
				reader := sdkmetric.NewManualReader()
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
				t.Cleanup(func() {
					_ = tp.Shutdown(context.Background())
					_ = mp.Shutdown(context.Background())
				})
				tel, err := telemetry.New(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(mp))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { checkAttemptsRecorded(t, spans, reader) })
				return []mesh.ClientOption{
					mesh.WithIdempotent(func(string, string) bool { return true }),
					mesh.WithRetry(mesh.RetryPolicy{}),
					mesh.WithHedging(mesh.HedgePolicy{}),
					mesh.WithCircuitBreaker(breaker.Settings{}),
					mesh.WithRateLimit(func(string) *mesh.ClientRateLimit {
						return &mesh.ClientRateLimit{RateLimit: breaker.RateLimit{PerSecond: 1e4, Burst: 1e3}}
					}),
					mesh.WithTelemetry(tel),
				}
			},
		},
		{
			name: "hedged",
			client: func(*testing.T) []mesh.ClientOption {
				return []mesh.ClientOption{
					mesh.WithIdempotent(func(string, string) bool { return true }),
					mesh.WithHedging(mesh.HedgePolicy{Delay: time.Millisecond}),
				}
			},
			slow: func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				// The slow instance's service time.
				timer := time.NewTimer(20 * time.Millisecond)
				defer timer.Stop()
				select {
				case <-timer.C:
				case <-ctx.Done():
					return nil, status.FromContextError(ctx.Err()).Err()
				}
				return h(ctx, req)
			},
			check: func(t *testing.T, env *interopEnv) {
				t.Run("hedges_fired", func(t *testing.T) {
					made, served := env.made.Load(), env.served.Load()
					if served <= made {
						t.Errorf("servers handled %d unary calls for %d made: no hedge reached a server", served, made)
					}
				})
			},
		},
	}
}

// checkAttemptsRecorded checks that every attempt ended its client span
// and measured its duration, once the cancelled streams' ends, which
// happen on their own, are in.
func checkAttemptsRecorded(t *testing.T, spans *tracetest.SpanRecorder, reader *sdkmetric.ManualReader) {
	t.Helper()
	var nSpans, nMeasured int
	deadline := time.Now().Add(20 * time.Second)
	for {
		nSpans = 0
		for _, s := range spans.Ended() {
			if s.SpanKind() == trace.SpanKindClient {
				nSpans++
			}
		}
		nMeasured = 0
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "rpc.client.call.duration" {
					for _, dp := range h.DataPoints {
						nMeasured += int(dp.Count)
					}
				}
			}
		}
		if nSpans == nMeasured || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	if nSpans != nMeasured {
		t.Errorf("%d client spans ended, %d call durations measured; want as many", nSpans, nMeasured)
	}
}
