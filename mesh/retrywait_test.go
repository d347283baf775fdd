package mesh

import (
	"context"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
)

// TestRetryWaitCapped: a Retry-After or gRPC pushback longer than the cap
// ends the retries, deadline or not: the call returns the server's answer
// at once, after one attempt.
func TestRetryWaitCapped(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name     string
		opts     []ClientOption
		wait     time.Duration // what the server asks for
		deadline time.Duration // of the call; 0: none
	}{
		{name: "a year, no deadline", wait: 365 * 24 * time.Hour},
		{name: "a year, an hour's deadline", wait: 365 * 24 * time.Hour, deadline: time.Hour},
		{name: "a minute, an hour's deadline", wait: time.Minute, deadline: time.Hour},
		{name: "5 s over a cap of 1 s", opts: []ClientOption{WithMaxRetryWait(time.Second)}, wait: 5 * time.Second, deadline: time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, 0)
			var attempts atomic.Int64
			env.serveAs("park", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				attempts.Add(1)
				w.Header().Set("Retry-After", strconv.FormatInt(int64(tt.wait/time.Second), 10))
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			gopts, err := GRPCServerOptions(WithIdentity(env.source(testServerID)))
			if err != nil {
				t.Fatal(err)
			}
			gopts = append(gopts, grpc.ChainUnaryInterceptor(func(ctx context.Context, _ any, _ *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
				attempts.Add(1)
				_ = grpc.SetTrailer(ctx, metadata.Pairs(RetryPushbackKey, strconv.FormatInt(tt.wait.Milliseconds(), 10)))
				return nil, status.Error(codes.ResourceExhausted, "busy")
			}))
			gs := grpc.NewServer(gopts...)
			demo.Register(gs, "park", PeerID)
			if err := env.discovery.Set("park-grpc", discovery.Endpoint{ID: "g1", Addr: serveGRPC(t, gs)}); err != nil {
				t.Fatal(err)
			}
			c := env.client(append([]ClientOption{WithRetry(RetryPolicy{}), WithIdempotent(func(string, string) bool { return true })}, tt.opts...)...)
			cc, err := c.DialGRPC("park-grpc")
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()

			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.deadline > 0 {
				ctx, cancel = context.WithTimeout(ctx, tt.deadline)
			}
			defer cancel()
			done := make(chan error, 2)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://park/", nil)
				resp, err := c.RoundTrip(req)
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != http.StatusServiceUnavailable {
						err = status.Errorf(codes.Internal, "HTTP status %d, want the 503", resp.StatusCode)
					}
				}
				done <- err
			}()
			go func() {
				_, err := demo.Whoami(ctx, cc)
				if status.Code(err) == codes.ResourceExhausted {
					err = nil
				}
				done <- err
			}()
			limit := time.NewTimer(10 * time.Second) // the failure: a caller parked
			defer limit.Stop()
			for range 2 {
				select {
				case err := <-done:
					if err != nil {
						t.Error(err)
					}
				case <-limit.C:
					t.Fatalf("a caller is still waiting after 10 s (%d attempts)", attempts.Load())
				}
			}
			if n := attempts.Load(); n != 2 {
				t.Errorf("%d attempts, want one per protocol", n)
			}
		})
	}
}
