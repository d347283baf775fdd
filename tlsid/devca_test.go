package tlsid

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/leaktest"
)

func TestDevSourceRenewalWindow(t *testing.T) {
	leaktest.Check(t)
	clock := newFakeClock()
	ca, err := NewDevCA("example.org", WithClock(clock.Now), WithSVIDTTL(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		src, err := ca.Source(spiffeid.RequireFromString(fmt.Sprintf("spiffe://example.org/w%d", i)))
		if err != nil {
			t.Fatal(err)
		}
		cur := src.current.Load()
		leaf := cur.svid.Certificates[0]
		life := leaf.NotAfter.Sub(leaf.NotBefore)
		at := cur.renewAt.Sub(leaf.NotBefore)
		if at < life/2 || at > life*9/10 {
			t.Fatalf("renewal at %v of a %v life, want within 50%%–90%%", at, life)
		}
	}
}

func TestDevCARootRotationOverlap(t *testing.T) {
	leaktest.Check(t)
	clock := newFakeClock()
	ca, srv, cli := devPair(t, WithClock(clock.Now))
	changed := ca.Changed()
	oldSVID := mustSVID(t, cli)
	if err := ca.RotateRoot(10 * time.Minute); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire on rotation")
	}
	if n := len(ca.Bundle().X509Authorities()); n != 2 {
		t.Fatalf("bundle has %d roots during the overlap, want 2", n)
	}
	// An SVID of the old root still verifies during the overlap.
	if _, err := Verify(oldSVID.Certificates, ca, clock.Now()); err != nil {
		t.Fatalf("old SVID during overlap: %v", err)
	}
	// Sources renew at once onto the new root.
	newSVID := mustSVID(t, cli)
	if newSVID == oldSVID || cli.Renewals() != 1 {
		t.Fatal("the source did not renew after the rotation")
	}
	if _, err := Verify(newSVID.Certificates, ca, clock.Now()); err != nil {
		t.Fatalf("new SVID: %v", err)
	}
	changed = ca.Changed()
	clock.Advance(11 * time.Minute)
	if n := len(ca.Bundle().X509Authorities()); n != 1 {
		t.Fatalf("bundle has %d roots after the overlap, want 1", n)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire at the end of the overlap")
	}
	if _, err := Verify(oldSVID.Certificates, ca, clock.Now()); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("old SVID after the overlap: %v, want ErrUntrusted", err)
	}
	_ = srv
}

// TestDevCARotationUnderLoad runs HTTPS requests over mutual TLS without
// pause while the SVIDs of client and server are renewed several times
// and the root is rotated twice, and checks that no request fails.
func TestDevCARotationUnderLoad(t *testing.T) {
	leaktest.Check(t)
	clock := newFakeClock()
	ca, srv, cli := devPair(t, WithClock(clock.Now))
	s, c := configs(t, srv, cli, AuthorizeID(cli.ID()), AuthorizeID(srv.ID()), WithClock(clock.Now))

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	server := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	go func() { _ = server.Serve(tls.NewListener(ln, s)) }()
	defer server.Close()
	url := "https://" + ln.Addr().String() + "/"

	const workers = 4
	var ok, failed atomic.Int64
	progress := make([]atomic.Int64, workers)
	var firstErr atomic.Pointer[error]
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		// Half the workers reuse connections, half handshake every time.
		tr := &http.Transport{TLSClientConfig: c.Clone(), DisableKeepAlives: w%2 == 0}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := hc.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, &err)
				} else {
					ok.Add(1)
				}
				progress[w].Add(1)
			}
		}()
	}
	// settle waits until every worker has finished two more requests, so
	// no handshake spans a step.
	settle := func() {
		var marks [workers]int64
		for i := range marks {
			marks[i] = progress[i].Load()
		}
		for i := range marks {
			eventually(t, 30*time.Second, "two more requests of each worker", func() bool { return progress[i].Load() >= marks[i]+2 })
		}
	}
	// Three hours of SVID lives in 5-minute steps, a root rotation with a
	// 10-minute overlap at 1 h and at 2 h.
	for step := 1; step <= 36; step++ {
		clock.Advance(5 * time.Minute)
		if step == 12 || step == 24 {
			if err := ca.RotateRoot(10 * time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		settle()
	}
	cancel()
	wg.Wait()
	t.Logf("dev CA under load: %d requests ok, %d failed; renewals: server %d, client %d; 2 root rotations",
		ok.Load(), failed.Load(), srv.Renewals(), cli.Renewals())
	if e := firstErr.Load(); e != nil {
		t.Errorf("first failure: %v", *e)
	}
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during renewals and rotations", failed.Load())
	}
	if srv.Renewals() < 4 || cli.Renewals() < 4 {
		t.Fatalf("renewals: server %d, client %d, want at least 4 each", srv.Renewals(), cli.Renewals())
	}
}
