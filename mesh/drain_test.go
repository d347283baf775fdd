package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/tlsid"
)

// drainInstance is one mesh.Server of the demo service, registered in a
// real Consul agent.
type drainInstance struct {
	name     string
	srv      *Server
	reg      *discovery.Registration
	served   atomic.Int64
	serveErr chan error
}

// TestDrainUnderLoad shuts one of three instances down gracefully while
// another weft client sends a steady load through a Consul watcher: no
// request may fail because of the shutdown, and the drained instance gets
// no traffic once it is gone.
func TestDrainUnderLoad(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		t.Fatal(err)
	}
	source := func(id string) *tlsid.DevSource {
		src, err := ca.Source(spiffeid.RequireFromString(id))
		if err != nil {
			t.Fatal(err)
		}
		return src
	}
	const service = "drain-demo"
	var instances []*drainInstance
	for i := 1; i <= 3; i++ {
		inst := &drainInstance{name: fmt.Sprintf("drain-%d", i), serveErr: make(chan error, 1)}
		h := demo.Handler(inst.name, PeerID)
		inst.srv, err = NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			inst.served.Add(1)
			h.ServeHTTP(w, r)
		}), WithIdentity(source("spiffe://example.org/demo")))
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { inst.serveErr <- inst.srv.Serve(ln) }()
		t.Cleanup(func() { inst.srv.Close(); <-inst.serveErr })
		inst.reg, err = discovery.Register(t.Context(), agent.Config(), discovery.Instance{
			ID: inst.name, Name: service, Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port,
		}, discovery.WithTTLCheck(5*time.Second), discovery.WithDrainGrace(500*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = inst.reg.Deregister(context.Background()) })
		instances = append(instances, inst)
	}

	watcher, err := discovery.NewConsul(agent.Config())
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(WithDiscovery(watcher), WithIdentity(source("spiffe://example.org/client")))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hc := client.HTTPClient()

	// Steady load: 4 workers, each a request at a time, until stopped.
	var (
		ok, failed atomic.Int64
		firstErr   sync.Once
		errText    atomic.Value
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 200000; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := drainGet(ctx, hc, "http://"+service+"/")
				cancel()
				if err != nil {
					failed.Add(1)
					firstErr.Do(func() { errText.Store(err.Error()) })
					continue
				}
				ok.Add(1)
			}
		}()
	}
	defer func() {
		close(stop)
		wg.Wait()
	}()

	// Every instance serves a share of the load before the drain.
	drainWaitUntil(t, 10*time.Second, "all three instances serving", func() bool {
		for _, in := range instances {
			if in.served.Load() < 100 {
				return false
			}
		}
		return true
	})

	drained := instances[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := drained.reg.Drain(ctx); err != nil {
		t.Fatalf("Drain: %v", err)
	}
	t.Logf("Drain took %v", time.Since(start))
	// Once Drain returns, the client's watcher has dropped the instance:
	// it gets no new request, though its server still runs.
	servedAtDrain := drained.served.Load()
	afterDrain := instances[1].served.Load() + instances[2].served.Load()
	drainWaitUntil(t, 10*time.Second, "load after the drain", func() bool {
		return instances[1].served.Load()+instances[2].served.Load() > afterDrain+100
	})
	if n := drained.served.Load() - servedAtDrain; n != 0 {
		t.Errorf("drained (still running) instance got %d requests after Drain returned", n)
	}
	if err := drained.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-drained.serveErr; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
	drained.serveErr <- http.ErrServerClosed // for the cleanup
	servedAtShutdown := drained.served.Load()

	// The others keep serving.
	before := instances[1].served.Load() + instances[2].served.Load()
	drainWaitUntil(t, 10*time.Second, "load on the remaining instances", func() bool {
		return instances[1].served.Load()+instances[2].served.Load() > before+200
	})
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // the deferred close must not panic

	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during the drain; first: %v", n, n+ok.Load(), errText.Load())
	}
	if drained.served.Load() != servedAtShutdown {
		t.Errorf("drained instance served %d requests after its shutdown", drained.served.Load()-servedAtShutdown)
	}
	if svcs, err := agent.Client().Agent().Services(); err != nil || svcs[drained.name] != nil {
		t.Errorf("drained instance still registered (err %v)", err)
	}
	t.Logf("%d requests, %d failed; served: %d %d %d", ok.Load()+failed.Load(), failed.Load(),
		instances[0].served.Load(), instances[1].served.Load(), instances[2].served.Load())
}

func drainGet(ctx context.Context, hc *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
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
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), " saw spiffe://example.org/client") {
		return fmt.Errorf("status %d, body %q", resp.StatusCode, body)
	}
	return nil
}

// drainWaitUntil polls cond until it holds, failing the test after max.
func drainWaitUntil(t *testing.T, max time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(max)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond) // poll interval
	}
}
