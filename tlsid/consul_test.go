package tlsid

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// RotateConsulCA gives Consul's built-in CA a new private key, as
// `consul connect ca set-config` with a new key does: Consul makes a new
// root, cross-signed by the old one, and re-issues every leaf.
func rotateConsulCA(t testing.TB, c *api.Client) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))
	if _, err := c.Connect().CASetConfig(&api.CAConfig{Provider: "consul", Config: map[string]any{"PrivateKey": keyPEM}}, nil); err != nil {
		t.Fatalf("rotate the Consul CA: %v", err)
	}
}

func waitChanged(t testing.TB, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(90 * time.Second):
		t.Fatalf("%s: no change within 90 s", what)
	}
}

func TestConsulSource(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	client := agent.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	src, err := NewConsulSource(ctx, client, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	td := src.TrustDomain()
	if !strings.HasSuffix(td.Name(), ".consul") {
		t.Fatalf("trust domain %s, want <cluster-id>.consul", td)
	}
	svid := mustSVID(t, src)
	if want := "spiffe://" + td.Name() + "/ns/default/dc/dc1/svc/alpha"; svid.ID.String() != want {
		t.Fatalf("leaf ID %s, want %s", svid.ID, want)
	}
	if _, err := Verify(svid.Certificates, src, time.Time{}); err != nil {
		t.Fatalf("Consul's leaf does not verify as an X.509-SVID: %v", err)
	}
	if _, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("example.org")); !errors.Is(err, ErrNoBundle) {
		t.Fatalf("bundle of another domain: %v", err)
	}

	// A root rotation reaches the source: new roots, then a new leaf
	// signed by the new root, without restarting anything.
	changed := src.Changed()
	leaves, roots := src.Updates()
	rotateConsulCA(t, client)
	waitChanged(t, changed, "roots")
	eventually(t, 90*time.Second, "a new leaf and new roots after the rotation", func() bool {
		l, r := src.Updates()
		return l > leaves && r > roots
	})
	next := mustSVID(t, src)
	if next.Certificates[0].Equal(svid.Certificates[0]) {
		t.Fatal("the leaf did not change after the rotation")
	}
	if _, err := Verify(next.Certificates, src, time.Time{}); err != nil {
		t.Fatalf("new leaf: %v", err)
	}
	// The old leaf still verifies: the old root stays in the bundle.
	if _, err := Verify(svid.Certificates, src, time.Time{}); err != nil {
		t.Fatalf("old leaf after rotation: %v", err)
	}
	if err := src.Err(); err != nil {
		t.Fatalf("Err() = %v", err)
	}
}

func TestConsulIntentions(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	client := agent.Client()
	clock := newFakeClock()
	ixn, err := NewConsulIntentions(client, "db", WithClock(clock.Now), WithIntentionsTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	roots, _, err := client.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	web := spiffeid.RequireFromString("spiffe://" + roots.TrustDomain + "/ns/default/dc/dc1/svc/web")
	ctx := context.Background()
	if err := ixn.AuthorizeRequest(ctx, Request{Peer: web}); err != nil {
		t.Fatalf("default allow: %v", err)
	}
	if _, err := client.Connect().IntentionUpsert(&api.Intention{SourceName: "web", DestinationName: "db", Action: api.IntentionActionDeny}, nil); err != nil {
		t.Fatal(err)
	}
	// Within the TTL the cached decision stands; after it, the deny.
	if err := ixn.AuthorizeRequest(ctx, Request{Peer: web}); err != nil {
		t.Fatalf("cached decision: %v", err)
	}
	// The agent's view of intentions follows the servers eventually:
	// wait until it denies before expiring the cached decision.
	waitAgentAuthorizes(t, client, "db", web, false)
	clock.Advance(2 * time.Second)
	if err := ixn.Authorizer()(web); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("after a deny intention: %v, want ErrUnauthorized", err)
	}
	if err := ixn.AuthorizeRequest(ctx, Request{}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("no peer ID: %v", err)
	}
	if _, err := client.Connect().IntentionDeleteExact("web", "db", nil); err != nil {
		t.Fatal(err)
	}
	waitAgentAuthorizes(t, client, "db", web, true)
	clock.Advance(2 * time.Second)
	if err := ixn.AuthorizeRequest(ctx, Request{Peer: web}); err != nil {
		t.Fatalf("after removing the intention: %v", err)
	}
}

// waitAgentAuthorizes polls the agent's own authorization endpoint until
// its answer for peer calling target is want, for at most 30 s: an
// intention written to the servers reaches the agent's cache eventually.
func waitAgentAuthorizes(t testing.TB, client *api.Client, target string, peer spiffeid.ID, want bool) {
	t.Helper()
	eventually(t, 30*time.Second, fmt.Sprintf("the agent answering authorized=%v for %s → %s", want, peer, target), func() bool {
		res, err := client.Agent().ConnectAuthorize(&api.AgentAuthorizeParams{Target: target, ClientCertURI: peer.String()})
		return err == nil && res.Authorized == want
	})
}

// TestConsulSourceAgentDown stops the agent under a running source: the
// source keeps serving its last SVID and bundle, reports the failure, and
// Close ends its watches at once (goleak checks none is left).
func TestConsulSourceAgentDown(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	src, err := NewConsulSource(ctx, agent.Client(), "alpha", WithConsulWait(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	svid := mustSVID(t, src)
	agent.Stop()
	eventually(t, 30*time.Second, "an error reported with the agent down", func() bool { return src.Err() != nil })
	if got := mustSVID(t, src); got != svid {
		t.Fatal("the SVID changed with the agent down")
	}
	if _, err := Verify(svid.Certificates, src, time.Time{}); err != nil {
		t.Fatalf("the bundle was lost with the agent down: %v", err)
	}
	closed := make(chan struct{})
	go func() { src.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return while the watches back off")
	}
	if _, err := NewConsulSource(ctx, agent.Client(), "alpha"); err == nil {
		t.Fatal("a source was built with the agent down")
	}
}

// TestConsulIntentionsSlowAgent stands a listener that accepts and never
// answers in for a hung agent (a fault a live agent does not produce on
// demand): requests stop waiting after the timeout, are refused as
// undecided (not as unauthorized), and concurrent ones share one query.
func TestConsulIntentionsSlowAgent(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int64
	var conns sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				<-stop
			}()
		}
	}()
	defer func() { ln.Close(); close(stop); conns.Wait() }()

	cfg := api.DefaultNonPooledConfig()
	cfg.Address = ln.Addr().String()
	cfg.HttpClient = &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ixn, err := NewConsulIntentions(client, "db", WithIntentionsTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	peer := spiffeid.RequireFromString("spiffe://dc1.consul/ns/default/dc/dc1/svc/web")
	var wg sync.WaitGroup
	errs := make([]error, 8)
	start := time.Now()
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = ixn.AuthorizeRequest(context.Background(), Request{Peer: peer})
		}()
	}
	wg.Wait()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("requests waited %v for a hung agent", d)
	}
	for i, err := range errs {
		if err == nil || errors.Is(err, ErrUnauthorized) || !strings.HasPrefix(err.Error(), "tlsid: ") {
			t.Fatalf("request %d: %v, want an undecided error", i, err)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d queries to the agent for one caller, want 1", n)
	}
	// A cancelled request stops waiting at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := ixn.AuthorizeRequest(ctx, Request{Peer: peer}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	// Wait for the shared query to give up (the HTTP timeout) so no
	// goroutine outlives the test.
	eventually(t, 30*time.Second, "the shared query ending", func() bool {
		ixn.mu.Lock()
		defer ixn.mu.Unlock()
		return len(ixn.pending) == 0
	})
}
