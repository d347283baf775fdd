package spiretest_test

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/internal/spiretest"
)

// TestServerAgentEntry starts a server and an agent, registers this
// process and fetches its SVID over the agent's Workload API; the SVID
// verifies against the server's bundle.
func TestServerAgentEntry(t *testing.T) {
	leaktest.Check(t)
	srv := spiretest.StartServer(t, "example.org")
	agent := srv.StartAgent(t)
	id, entryID := agent.Entry(t, "web", spiretest.WithEntryTTL(time.Minute))
	if entryID == "" || id.String() != "spiffe://example.org/web" {
		t.Fatalf("entry %q for %s", entryID, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The agent refuses the workload until it has synced the entry; the
	// source retries until then.
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(agent.Addr())))
	if err != nil {
		t.Fatalf("no SVID: %v\n%s", err, agent.Log())
	}
	defer src.Close()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if svid.ID != id {
		t.Fatalf("SVID for %s, want %s", svid.ID, id)
	}
	if left := time.Until(svid.Certificates[0].NotAfter); left > time.Minute {
		t.Fatalf("SVID valid for %v more, want at most the entry's 1m", left)
	}
	bundle, err := srv.Bundle()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("SVID against the server's bundle: %v", err)
	}
}
