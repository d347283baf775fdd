package mesh_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/internal/spiretest"
	"github.com/weftmesh/weft/mesh"
)

// TestSPIREWorkloadAPI runs a weft service whose identity comes from a
// real SPIRE agent's Workload API through go-spiffe's X509Source, and
// a weft client with the same kind of identity; they call each other
// over HTTP and gRPC with mutual TLS. SVIDs live one minute, and the
// calls go on, without a failure, until SPIRE has rotated both.
func TestSPIREWorkloadAPI(t *testing.T) {
	leaktest.Check(t)
	srv := spiretest.StartServer(t, "example.org")
	agent := srv.StartAgent(t)
	webID, _ := agent.Entry(t, "web", spiretest.WithEntryTTL(time.Minute))
	clientID, _ := agent.Entry(t, "client", spiretest.WithEntryTTL(time.Minute))
	webSrc := agent.X509Source(t, webID)
	clientSrc := agent.X509Source(t, clientID)

	// The service, over HTTP and gRPC.
	hs, err := mesh.NewServer(demo.Handler("web", mesh.PeerID), mesh.WithIdentity(webSrc))
	if err != nil {
		t.Fatal(err)
	}
	gopts, err := mesh.GRPCServerOptions(mesh.WithIdentity(webSrc))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, "web", mesh.PeerID)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var serving sync.WaitGroup
	serving.Add(2)
	go func() {
		defer serving.Done()
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	go func() {
		defer serving.Done()
		_ = gs.Serve(gl)
	}()
	t.Cleanup(func() {
		hs.Close()
		gs.Stop()
		serving.Wait()
	})

	d := &discovery.Static{}
	if err := d.Set("web", discovery.Endpoint{ID: "web-1", Addr: hl.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	if err := d.Set("web-grpc", discovery.Endpoint{ID: "web-1", Addr: gl.Addr().String()}); err != nil {
		t.Fatal(err)
	}
	client, err := mesh.NewClient(mesh.WithDiscovery(d), mesh.WithIdentity(clientSrc))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hc := client.HTTPClient()
	cc, err := client.DialGRPC("web-grpc")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()

	want := "web saw " + clientID.String()
	callHTTP := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://web/", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != want {
			return errors.New("HTTP answer " + resp.Status + ": " + string(body))
		}
		return nil
	}
	callGRPC := func(ctx context.Context) error {
		got, err := demo.Whoami(ctx, cc)
		if err != nil {
			return err
		}
		if got != want {
			return errors.New("gRPC answer " + got)
		}
		return nil
	}
	for name, call := range map[string]func(context.Context) error{"HTTP": callHTTP, "gRPC": callGRPC} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := call(ctx)
		cancel()
		if err != nil {
			t.Fatalf("%s call over SPIRE identities: %v", name, err)
		}
	}
	if testing.Short() {
		return
	}

	// Steady load across the rotation of both SVIDs.
	rotation := spiretest.NewRotation(webSrc, clientSrc)
	load := spiretest.StartLoad(5*time.Millisecond, callHTTP, callGRPC)
	rotated := rotation.Wait(90 * time.Second)
	load.WaitCalls(50, 30*time.Second)
	calls, failures, first := load.Stop()
	if !rotated {
		t.Fatalf("SPIRE did not rotate both SVIDs within 90 s\n%s", agent.Log())
	}
	if failures != 0 {
		t.Fatalf("%d of %d calls failed across the SVID rotation; first: %v", failures, calls, first)
	}
	t.Logf("%d HTTP and gRPC calls across the rotation of both SVIDs, 0 failed", calls)
}
