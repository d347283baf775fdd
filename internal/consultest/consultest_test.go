package consultest_test

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// eventually checks cond every 10 ms until it holds, failing the test
// after 30 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("not within 30 s: %s", what)
		}
	}
}

func TestStartRegisterRestart(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t, consultest.WithDNS())
	if a.DNSAddr() == "" {
		t.Fatal("DNSAddr empty with WithDNS")
	}
	c := a.Client()
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "x1", Name: "x", Port: 1234}); err != nil {
		t.Fatalf("register: %v", err)
	}
	// The agent syncs its services to the catalog in the background:
	// poll until the catalog's health endpoint lists it.
	listed := func() (*api.QueryMeta, bool) {
		svcs, m, err := c.Health().Service("x", "", false, nil)
		return m, err == nil && len(svcs) == 1
	}
	var meta *api.QueryMeta
	eventually(t, "the catalog listing the service", func() (ok bool) {
		meta, ok = listed()
		return ok
	})
	before := meta.LastIndex
	a.Kill()
	if a.Running() {
		t.Fatal("running after Kill")
	}
	if _, _, err := c.Health().Service("x", "", false, nil); err == nil {
		t.Fatal("killed agent still answers")
	}
	a.Restart()
	_, meta, err := c.Health().Service("x", "", false, nil)
	if err != nil {
		t.Fatalf("after restart: %v", err)
	}
	// A dev agent starts afresh: its Raft state, and so the index, starts
	// over (a busy new agent may have caught up with the old one's count,
	// never passed it by much). The service registered through the agent
	// is kept in its data directory and comes back by anti-entropy.
	eventually(t, "the agent's own registration coming back", func() bool {
		_, ok := listed()
		return ok
	})
	if meta.LastIndex > before {
		t.Errorf("index after restart %d, before %d: want no higher", meta.LastIndex, before)
	}
}

func TestCluster(t *testing.T) {
	leaktest.Check(t)
	if testing.Short() {
		t.Skip("cluster in -short")
	}
	c := consultest.StartCluster(t, 3)
	l, err := c.Leader()
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.Follower()
	if err != nil || f == l || !f.Running() {
		t.Fatalf("follower %v (leader %v): %v", f, l, err)
	}
	l.Kill()
	nl, err := c.WaitLeader(30e9)
	if err != nil {
		t.Fatal(err)
	}
	if nl == l {
		t.Fatal("killed leader is still leader")
	}
}
