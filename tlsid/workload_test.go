package tlsid

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/internal/spiretest"
)

var (
	_ Source   = (*WorkloadSource)(nil)
	_ Notifier = (*WorkloadSource)(nil)
)

// quickRetry retries a refused or broken Workload API watch every 200 ms
// instead of go-spiffe's 1 s, 2 s, 3 s…, so a test sees an entry soon
// after the agent has synced it.
type quickRetry struct{}

func (quickRetry) NewBackoff() workloadapi.Backoff { return quickRetry{} }
func (quickRetry) Next() time.Duration             { return 200 * time.Millisecond }
func (quickRetry) Reset()                          {}

// workloadSource opens a WorkloadSource for id on agent, waiting up to
// 60 s for the agent to serve it.
func workloadSource(t *testing.T, agent *spiretest.Agent, id spiffeid.ID) *WorkloadSource {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	src, err := NewWorkloadSource(ctx, WithWorkloadAddr(agent.Addr()), WithWorkloadID(id),
		WithWorkloadClientOptions(workloadapi.WithBackoffStrategy(quickRetry{})))
	if err != nil {
		t.Fatalf("workload source for %s: %v\n%s", id, err, agent.Log())
	}
	t.Cleanup(func() { src.Close() })
	return src
}

// TestWorkloadSource gets two workloads' SVIDs from a real SPIRE agent
// and makes mTLS connections between them, with weft's source and with
// go-spiffe's own X509Source used as a Source as it is.
func TestWorkloadSource(t *testing.T) {
	leaktest.Check(t)
	srv := spiretest.StartServer(t, "example.org")
	agent := srv.StartAgent(t)
	webID, _ := agent.Entry(t, "web")
	apiID, _ := agent.Entry(t, "api")
	web := workloadSource(t, agent, webID)
	api := workloadSource(t, agent, apiID)
	if svid, _ := web.GetX509SVID(); svid.ID != webID {
		t.Fatalf("web source serves %s", svid.ID)
	}
	if web.Updates() < 1 || web.Err() != nil {
		t.Fatalf("web source: %d updates, error %v", web.Updates(), web.Err())
	}

	goSpiffe := agent.X509Source(t, apiID)

	for _, tc := range []struct {
		name   string
		server Source
		client Source
	}{
		{"weft sources", web, api},
		{"go-spiffe X509Source as client", web, goSpiffe},
		{"go-spiffe X509Source as server", goSpiffe, web},
	} {
		t.Run(tc.name, func(t *testing.T) {
			serverSVID, _ := tc.server.GetX509SVID()
			clientSVID, _ := tc.client.GetX509SVID()
			s, c := configs(t, tc.server, tc.client, AuthorizeID(clientSVID.ID), AuthorizeID(serverSVID.ID))
			res := dial(t, s, c)
			if res.serverErr != nil || res.clientErr != nil || res.got != "hello" {
				t.Fatalf("handshake: server %v, client %v", res.serverErr, res.clientErr)
			}
			if got, err := PeerID(&res.server); err != nil || got != clientSVID.ID {
				t.Fatalf("server saw %v, %v; want %s", got, err, clientSVID.ID)
			}
		})
	}
}

// TestWorkloadSourceBadInput: a source that cannot be served fails with
// ErrWorkloadAPI, saying why, and leaves nothing running.
func TestWorkloadSourceBadInput(t *testing.T) {
	leaktest.Check(t)
	srv := spiretest.StartServer(t, "example.org")
	agent := srv.StartAgent(t)
	webID, _ := agent.Entry(t, "web")
	workloadSource(t, agent, webID) // the agent serves this process

	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	for _, tc := range []struct {
		name string
		opts []WorkloadOption
		wait time.Duration
		want string
	}{
		{"no address", nil, time.Second, "no address"},
		{"not a URL", []WorkloadOption{WithWorkloadAddr("::not a url")}, time.Second, "address"},
		{"tcp without IP", []WorkloadOption{WithWorkloadAddr("tcp://localhost:1")}, time.Second, "address"},
		{"no such socket", []WorkloadOption{WithWorkloadAddr("unix:///nonexistent/agent.sock")}, 2 * time.Second, "deadline"},
		{"ID without entry", []WorkloadOption{WithWorkloadAddr(agent.Addr()), WithWorkloadID(spiffeid.RequireFromString("spiffe://example.org/nobody"))}, 5 * time.Second, "no SVID for spiffe://example.org/nobody"},
		{"nil and zero options ignored", []WorkloadOption{nil, WithWorkloadAddr(""), WithWorkloadID(spiffeid.ID{}), WithWorkloadClientOptions(nil)}, time.Second, "no address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), tc.wait)
			defer cancel()
			src, err := NewWorkloadSource(ctx, tc.opts...)
			if src != nil || !errors.Is(err, ErrWorkloadAPI) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewWorkloadSource = %v, %v; want an ErrWorkloadAPI saying %q", src, err, tc.want)
			}
		})
	}
}

// TestWorkloadSourceRotationUnderLoad makes mTLS connections without
// pause between two workloads whose SVIDs live one minute, until SPIRE
// has rotated both (at about half their life), and loses none.
func TestWorkloadSourceRotationUnderLoad(t *testing.T) {
	leaktest.Check(t)
	if testing.Short() {
		t.Skip("waits for SPIRE to rotate one-minute SVIDs")
	}
	srv := spiretest.StartServer(t, "example.org")
	agent := srv.StartAgent(t)
	webID, _ := agent.Entry(t, "web", spiretest.WithEntryTTL(time.Minute))
	apiID, _ := agent.Entry(t, "api", spiretest.WithEntryTTL(time.Minute))
	web := workloadSource(t, agent, webID)
	api := workloadSource(t, agent, apiID)
	firstWeb, _ := web.GetX509SVID()
	rotation := spiretest.NewRotation(web, api)
	s, c := configs(t, web, api, AuthorizeID(apiID), AuthorizeID(webID))
	handshake := func(context.Context) error {
		res := dial(t, s, c)
		if err := errors.Join(res.serverErr, res.clientErr); err != nil || res.got != "hello" {
			return fmt.Errorf("handshake: %v, read %q", err, res.got)
		}
		return nil
	}
	load := spiretest.StartLoad(5*time.Millisecond, handshake, handshake)
	rotated := rotation.Wait(90 * time.Second)
	// Keep the load on a little past the rotation: connections made with
	// the new SVIDs must succeed too.
	load.WaitCalls(20, 30*time.Second)
	calls, failures, first := load.Stop()
	if !rotated {
		t.Fatalf("SPIRE did not rotate both SVIDs within 90 s (web %d, api %d updates)\n%s", web.Updates(), api.Updates(), agent.Log())
	}
	if w, _ := web.GetX509SVID(); !w.Certificates[0].NotAfter.After(firstWeb.Certificates[0].NotAfter) {
		t.Fatal("the rotated SVID expires no later than the first")
	}
	if failures != 0 {
		t.Fatalf("%d of %d connections failed across the rotation; first: %v", failures, calls, first)
	}
	t.Logf("%d connections across the rotation of both SVIDs, 0 failed", calls)
}

// TestWorkloadSourceFederation runs two SPIRE servers of two trust
// domains that hold each other's bundle. A workload of each receives
// both bundles over the Workload API; a peer of the other domain gets in
// when the authorizer allows that domain, and is refused when it allows
// only its own.
func TestWorkloadSourceFederation(t *testing.T) {
	leaktest.Check(t)
	one := spiretest.StartServer(t, "one.test")
	two := spiretest.StartServer(t, "two.test")
	if err := one.Federate(two); err != nil {
		t.Fatal(err)
	}
	agentOne, agentTwo := one.StartAgent(t), two.StartAgent(t)
	webID, _ := agentOne.Entry(t, "web", spiretest.WithFederatesWith(two.TrustDomain()))
	apiID, _ := agentTwo.Entry(t, "api", spiretest.WithFederatesWith(one.TrustDomain()))
	web := workloadSource(t, agentOne, webID)
	api := workloadSource(t, agentTwo, apiID)
	for _, src := range []*WorkloadSource{web, api} {
		deadline := time.Now().Add(30 * time.Second)
		for src.Bundles().Len() < 2 && time.Now().Before(deadline) {
			select {
			case <-src.Changed():
			case <-time.After(time.Second):
			}
		}
		if n := src.Bundles().Len(); n != 2 {
			t.Fatalf("a federated workload holds %d bundles, want 2", n)
		}
	}

	for _, tc := range []struct {
		name     string
		admitted Authorizer // the server's
		ok       bool
	}{
		{"other domain allowed", AuthorizeMemberOf(two.TrustDomain()), true},
		{"exact peer allowed", AuthorizeID(apiID), true},
		{"only own domain allowed", AuthorizeMemberOf(one.TrustDomain()), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c := configs(t, web, api, tc.admitted, AuthorizeMemberOf(one.TrustDomain()))
			res := dial(t, s, c)
			if tc.ok {
				if res.serverErr != nil || res.clientErr != nil || res.got != "hello" {
					t.Fatalf("handshake: server %v, client %v", res.serverErr, res.clientErr)
				}
				if got, _ := PeerID(&res.server); got != apiID {
					t.Fatalf("server saw %s, want %s", got, apiID)
				}
				return
			}
			if !errors.Is(res.serverErr, ErrUnauthorized) {
				t.Fatalf("server error %v, want ErrUnauthorized", res.serverErr)
			}
		})
	}
}
