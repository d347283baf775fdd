package benchmarks

import (
	"context"
	"encoding/json"
	"strconv"
	"sync"
	"testing"
	"time"

	grpcbalancer "google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/leastrequest"
	"google.golang.org/grpc/balancer/roundrobin"
	"google.golang.org/grpc/connectivity"
	estats "google.golang.org/grpc/experimental/stats"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/internal/leaktest"
)

// BenchmarkPick compares weft's round robin and least request picks with
// grpc-go's own round_robin and least_request pickers over the same
// endpoint counts, in the same run: sequentially and under RunParallel,
// each pick finished the way the implementation finishes it (weft's
// Endpoint.Done, grpc-go's PickResult.Done when it has one). The ratio
// weft/grpc of each pair is what the comparison is judged by.
//
// grpc-go's pickers are built by its registered builders
// (balancer.Get(name).Build) on a fake balancer.ClientConn: a test double
// of grpc's internal plumbing, since a real ClientConn would dial every
// endpoint. Its SubConns report READY when asked to connect, and it keeps
// the picker the policy publishes; the pick path measured is grpc-go's
// own (for round_robin: endpointsharding's picker over pick_first
// children).
func BenchmarkPick(b *testing.B) {
	ctx := context.Background()
	for _, pol := range []struct {
		name string
		weft func() balancer.Policy
		grpc string
	}{
		{"round-robin", func() balancer.Policy { return balancer.RoundRobin() }, roundrobin.Name},
		{"least-request", func() balancer.Policy { return balancer.LeastRequest() }, leastrequest.Name},
	} {
		for _, n := range []int{3, 100, 10_000} {
			prefix := "policy=" + pol.name + "/n=" + strconv.Itoa(n)
			wb := balancer.New(pol.weft())
			wb.Update(endpoints(n))
			gp, closeGRPC := grpcPicker(b, pol.grpc, n)
			weftPick := func(info balancer.Info) {
				e, err := wb.Pick(info)
				if err != nil {
					b.Fatal(err)
				}
				e.Done(balancer.Outcome{Latency: time.Millisecond})
			}
			grpcPick := func(info grpcbalancer.PickInfo) {
				res, err := gp.Pick(info)
				if err != nil {
					b.Fatal(err)
				}
				if res.Done != nil {
					res.Done(grpcbalancer.DoneInfo{})
				}
			}
			b.Run(prefix+"/mode=seq/impl=weft", func(b *testing.B) {
				b.ReportAllocs()
				info := balancer.Info{Context: ctx, Method: "/bench.Bench/Call"}
				for b.Loop() {
					weftPick(info)
				}
			})
			b.Run(prefix+"/mode=seq/impl=grpc", func(b *testing.B) {
				b.ReportAllocs()
				info := grpcbalancer.PickInfo{Ctx: ctx, FullMethodName: "/bench.Bench/Call"}
				for b.Loop() {
					grpcPick(info)
				}
			})
			b.Run(prefix+"/mode=parallel/impl=weft", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					info := balancer.Info{Context: ctx, Method: "/bench.Bench/Call"}
					for pb.Next() {
						weftPick(info)
					}
				})
			})
			b.Run(prefix+"/mode=parallel/impl=grpc", func(b *testing.B) {
				b.ReportAllocs()
				b.RunParallel(func(pb *testing.PB) {
					info := grpcbalancer.PickInfo{Ctx: ctx, FullMethodName: "/bench.Bench/Call"}
					for pb.Next() {
						grpcPick(info)
					}
				})
			})
			closeGRPC()
		}
	}
}

// TestGRPCPickerDouble checks the fake ClientConn: grpc-go's pickers built
// on it spread picks over every endpoint, so the benchmark measures real
// picks and not an error path.
func TestGRPCPickerDouble(t *testing.T) {
	leaktest.Check(t)
	for _, name := range []string{roundrobin.Name, leastrequest.Name} {
		p, closeGRPC := grpcPicker(t, name, 5)
		seen := map[grpcbalancer.SubConn]bool{}
		for range 200 {
			res, err := p.Pick(grpcbalancer.PickInfo{Ctx: context.Background()})
			if err != nil {
				t.Fatalf("%s: pick: %v", name, err)
			}
			seen[res.SubConn] = true
			if res.Done != nil {
				res.Done(grpcbalancer.DoneInfo{})
			}
		}
		closeGRPC()
		if len(seen) != 5 {
			t.Errorf("%s: picks went to %d SubConns, want 5", name, len(seen))
		}
	}
}

// grpcPicker builds grpc-go's balancer name over n endpoints on a fake
// ClientConn and returns the READY picker it publishes.
func grpcPicker(tb testing.TB, name string, n int) (grpcbalancer.Picker, func()) {
	tb.Helper()
	builder := grpcbalancer.Get(name)
	if builder == nil {
		tb.Fatalf("grpc balancer %q is not registered", name)
	}
	cc := &fakeClientConn{}
	bal := builder.Build(cc, grpcbalancer.BuildOptions{})
	var cfg serviceconfig.LoadBalancingConfig
	if parser, ok := builder.(grpcbalancer.ConfigParser); ok {
		var err error
		if cfg, err = parser.ParseConfig(json.RawMessage(`{}`)); err != nil {
			tb.Fatal(err)
		}
	}
	eps := make([]resolver.Endpoint, n)
	for i, e := range endpoints(n) {
		eps[i] = resolver.Endpoint{Addresses: []resolver.Address{{Addr: e.Addr}}}
	}
	if err := bal.UpdateClientConnState(grpcbalancer.ClientConnState{
		ResolverState:  resolver.State{Endpoints: eps},
		BalancerConfig: cfg,
	}); err != nil {
		tb.Fatal(err)
	}
	// Deliver the SubConn state changes, as gRPC would, until the policy
	// stops asking (bounded: a few rounds per endpoint).
	for range 8*n + 8 {
		if !cc.step() {
			break
		}
	}
	p, state := cc.current()
	if state != connectivity.Ready || p == nil {
		tb.Fatalf("grpc %s over %d endpoints: state %v, want READY", name, n, state)
	}
	return p, bal.Close
}

// fakeClientConn is a test double of grpc's internal plumbing (see
// BenchmarkPick). Embedding the interface satisfies grpc-go's embedding
// check; the methods the policies call are implemented below.
type fakeClientConn struct {
	grpcbalancer.ClientConn

	mu      sync.Mutex
	queue   []func()
	picker  grpcbalancer.Picker
	state   connectivity.State
	created int
}

func (c *fakeClientConn) NewSubConn(_ []resolver.Address, opts grpcbalancer.NewSubConnOptions) (grpcbalancer.SubConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.created++
	return &fakeSubConn{cc: c, listener: opts.StateListener}, nil
}

func (c *fakeClientConn) UpdateState(s grpcbalancer.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.picker, c.state = s.Picker, s.ConnectivityState
}

func (c *fakeClientConn) ResolveNow(resolver.ResolveNowOptions)                    {}
func (c *fakeClientConn) RemoveSubConn(grpcbalancer.SubConn)                       {}
func (c *fakeClientConn) UpdateAddresses(grpcbalancer.SubConn, []resolver.Address) {}
func (c *fakeClientConn) Target() string                                           { return "weft:///bench" }
func (c *fakeClientConn) MetricsRecorder() estats.MetricsRecorder                  { return noopMetrics{} }

func (c *fakeClientConn) current() (grpcbalancer.Picker, connectivity.State) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.picker, c.state
}

func (c *fakeClientConn) enqueue(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, f)
}

// step runs the queued state changes; false when there were none.
func (c *fakeClientConn) step() bool {
	c.mu.Lock()
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	for _, f := range q {
		f()
	}
	return len(q) > 0
}

type fakeSubConn struct {
	grpcbalancer.SubConn
	cc       *fakeClientConn
	listener func(grpcbalancer.SubConnState)
}

func (s *fakeSubConn) Connect() {
	s.cc.enqueue(func() {
		s.listener(grpcbalancer.SubConnState{ConnectivityState: connectivity.Connecting})
		s.listener(grpcbalancer.SubConnState{ConnectivityState: connectivity.Ready})
	})
}

func (s *fakeSubConn) RegisterHealthListener(f func(grpcbalancer.SubConnState)) {
	s.cc.enqueue(func() { f(grpcbalancer.SubConnState{ConnectivityState: connectivity.Ready}) })
}

func (s *fakeSubConn) UpdateAddresses([]resolver.Address) {}
func (s *fakeSubConn) Shutdown()                          {}
func (s *fakeSubConn) GetOrBuildProducer(grpcbalancer.ProducerBuilder) (grpcbalancer.Producer, func()) {
	return nil, func() {}
}

// noopMetrics discards the metrics a policy records.
type noopMetrics struct{ estats.MetricsRecorder }

func (noopMetrics) RecordInt64Count(*estats.Int64CountHandle, int64, ...string)             {}
func (noopMetrics) RecordFloat64Count(*estats.Float64CountHandle, float64, ...string)       {}
func (noopMetrics) RecordInt64Histo(*estats.Int64HistoHandle, int64, ...string)             {}
func (noopMetrics) RecordFloat64Histo(*estats.Float64HistoHandle, float64, ...string)       {}
func (noopMetrics) RecordInt64Gauge(*estats.Int64GaugeHandle, int64, ...string)             {}
func (noopMetrics) RecordInt64UpDownCount(*estats.Int64UpDownCountHandle, int64, ...string) {}
func (noopMetrics) RegisterAsyncReporter(estats.AsyncMetricReporter, ...estats.AsyncMetric) func() {
	return func() {}
}
