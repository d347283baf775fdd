package mesh

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"
)

// TestPriorityTrusted: a claim of critical priority lets a call past load
// shedding only when the server trusts the caller's claims; by default,
// and from any caller the authorizer refuses, the call is sheddable.
// The server's one sheddable slot is held by a blocked call meanwhile.
func TestPriorityTrusted(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name   string
		trust  []ServerOption
		caller spiffeidOf
		claim  string
		admit  bool
	}{
		{name: "nobody trusted by default", caller: clientOf, claim: "critical"},
		{name: "nobody trusted by default, any case", caller: clientOf, claim: "CRITICAL"},
		{name: "untrusted caller", trust: []ServerOption{WithTrustedPriority(tlsid.AuthorizeID(otherClientID))}, caller: clientOf, claim: "Critical"},
		{name: "trusted caller", trust: []ServerOption{WithTrustedPriority(tlsid.AuthorizeID(otherClientID))}, caller: otherOf, claim: "critical", admit: true},
		{name: "trusted caller, no claim", trust: []ServerOption{WithTrustedPriority(tlsid.AuthorizeID(otherClientID))}, caller: otherOf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, 0)
			release := make(chan struct{})
			var blocked sync.WaitGroup
			defer func() {
				close(release)
				blocked.Wait()
			}()
			entered := make(chan struct{}, 2)
			block := func(ctx context.Context) {
				entered <- struct{}{}
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			opts := append([]ServerOption{WithConcurrencyLimit(breaker.ConcurrencySettings{Limit: 2, CriticalReserve: 0.5, CriticalWait: -1})}, tt.trust...)

			// HTTP: /block holds the sheddable slot.
			env.serveAs("busy", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/block" {
					block(r.Context())
				}
			}), opts...)
			// gRPC: metadata "block" holds it.
			gopts, err := GRPCServerOptions(append([]ServerOption{WithIdentity(env.source(testServerID))}, opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			gopts = append(gopts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("block")) > 0 {
					block(ctx)
				}
				return h(ctx, req)
			}))
			gs := grpc.NewServer(gopts...)
			demo.Register(gs, "busy", PeerID)
			if err := env.discovery.Set("busy-grpc", discovery.Endpoint{ID: "busy-grpc-1", Addr: serveGRPC(t, gs)}); err != nil {
				t.Fatal(err)
			}
			blocker := env.client()
			caller := env.client(WithIdentity(env.source(tt.caller())))
			ctx := testContext(t, 20*time.Second)

			blocked.Add(1)
			go func() {
				defer blocked.Done()
				req, _ := http.NewRequestWithContext(ctx, "GET", "http://busy/block", nil)
				if resp, err := blocker.RoundTrip(req); err == nil {
					resp.Body.Close()
				}
			}()
			blockCC, err := blocker.DialGRPC("busy-grpc")
			if err != nil {
				t.Fatal(err)
			}
			defer blockCC.Close()
			blocked.Add(1)
			go func() {
				defer blocked.Done()
				_, _ = demo.Whoami(metadata.AppendToOutgoingContext(ctx, "block", "1"), blockCC)
			}()
			<-entered
			<-entered

			req, _ := http.NewRequestWithContext(ctx, "GET", "http://busy/x", nil)
			if tt.claim != "" {
				req.Header.Set(PriorityHeader, tt.claim)
			}
			resp, err := caller.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.StatusCode == http.StatusOK; got != tt.admit || (!got && resp.StatusCode != http.StatusServiceUnavailable) {
				t.Errorf("HTTP: %d, want admitted %v", resp.StatusCode, tt.admit)
			}

			cc, err := caller.DialGRPC("busy-grpc")
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			gctx := ctx
			if tt.claim != "" {
				gctx = metadata.AppendToOutgoingContext(ctx, PriorityMetadataKey, tt.claim)
			}
			_, err = demo.Whoami(gctx, cc)
			if got := err == nil; got != tt.admit || (!got && status.Code(err) != codes.Unavailable) {
				t.Errorf("gRPC: %v, want admitted %v", err, tt.admit)
			}
		})
	}
}

// spiffeidOf names a test identity.
type spiffeidOf func() spiffeid.ID

func clientOf() spiffeid.ID { return testClientID }
func otherOf() spiffeid.ID  { return otherClientID }
