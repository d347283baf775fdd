package discovery

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// TestConsulAgentKilled kills the agent while three instances are known:
// the watcher keeps them, reports the error, backs off (the requests it
// makes during the outage are counted), and recovers when the agent comes
// back empty with a lower index.
func TestConsulAgentKilled(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	c := a.Client()
	const svc = "outage"
	counter := &consultest.RoundTripCounter{Base: noKeepAlive}
	cfg := a.Config()
	cfg.HttpClient = &http.Client{Transport: counter}
	w := newConsul(t, cfg, WithBackoff(100*time.Millisecond, time.Second))
	for i := 1; i <= 3; i++ {
		register(t, c, &api.AgentServiceRegistration{ID: fmt.Sprintf("o%d", i), Name: svc, Address: "127.0.0.1", Port: i})
	}
	// Raise the service's index well above a fresh agent's.
	for i := 0; i < 40; i++ {
		register(t, c, &api.AgentServiceRegistration{ID: "o1", Name: svc, Address: "127.0.0.1", Port: 1,
			Meta: map[string]string{"round": fmt.Sprint(i)}})
	}
	register(t, c, &api.AgentServiceRegistration{ID: "o1", Name: svc, Address: "127.0.0.1", Port: 1})
	r, _ := watch(t, w, svc)
	r.waitFor(t, stateWait, "three instances", hasIDs("o1", "o2", "o3"))
	st, _ := w.Status(svc)
	indexBefore := st.Index

	a.Kill()
	u, _ := r.waitFor(t, stateWait, "an error with the last good set", func(u Update) bool { return u.Err != nil })
	if len(u.Endpoints) != 3 || !errors.Is(u.Err, ErrConsul) {
		t.Fatalf("during the outage: %+v", u)
	}
	before := counter.Count()
	const outage = 3 * time.Second
	deadline := time.Now().Add(outage)
	for time.Now().Before(deadline) {
		st, _ := w.Status(svc)
		if st.Err == nil {
			t.Fatal("status lost the error during the outage")
		}
		if u, _ := r.last(); len(u.Endpoints) != 3 {
			t.Fatalf("last good set lost: %+v", u)
		}
		time.Sleep(50 * time.Millisecond) // sampling interval over a fixed outage
	}
	requests := counter.Count() - before
	st, _ = w.Status(svc)
	t.Logf("outage of %v: %d requests, %d consecutive failures, error %v", outage, requests, st.Failures, st.Err)
	// Backoff 100 ms doubling to 1 s, drawn from the upper half: at most
	// about 3 + 2 + 1.5·... requests in 3 s; a spinning loop would make
	// thousands, a bare rate limit 30.
	if requests > 12 {
		t.Errorf("%d requests during a %v outage; want a bounded backoff (≤ 12)", requests, outage)
	}
	if requests < 2 {
		t.Errorf("%d requests during the outage: the watch stopped retrying", requests)
	}

	restarted := time.Now()
	a.Restart()
	// A -dev agent comes back with an empty catalog and a lower index
	// (its own services return through anti-entropy soon after): the
	// watch must answer again, without error.
	r.waitFor(t, stateWait, "recovery (an answer without error)", func(u Update) bool { return u.Err == nil })
	st, _ = w.Status(svc)
	t.Logf("recovered %v after the restart; index %d -> %d", time.Since(restarted), indexBefore, st.Index)
	if st.Index >= indexBefore {
		t.Errorf("restarted agent's index %d is not lower than %d: the backwards case was not exercised", st.Index, indexBefore)
	}
	// Blocking on the new, lower index works: new instances show up.
	register(t, c, &api.AgentServiceRegistration{ID: "o4", Name: svc, Address: "127.0.0.1", Port: 4})
	r.waitFor(t, stateWait, "a registration after the restart", func(u Update) bool {
		return u.Err == nil && slices.Contains(ids(u), "o4")
	})
	if st, _ := w.Status(svc); st.Err != nil || st.Failures != 0 {
		t.Errorf("status after recovery: %+v", st)
	}
}

// TestConsulClusterLeaderKilled kills the leader of a 3-server cluster: a
// watch with stale reads (on a follower) keeps answering while there is no
// leader, and changes flow again once a new one is elected.
func TestConsulClusterLeaderKilled(t *testing.T) {
	leaktest.Check(t)
	if testing.Short() {
		t.Skip("3-server cluster skipped in -short mode")
	}
	cl := consultest.StartCluster(t, 3)
	leader, err := cl.Leader()
	if err != nil {
		t.Fatal(err)
	}
	var follower *consultest.Agent
	for _, a := range cl.Agents() {
		if a != leader {
			follower = a
			break
		}
	}
	c := follower.Client()
	const svc = "clustered"
	reg := func(id string) {
		t.Helper()
		_, err := c.Catalog().Register(&api.CatalogRegistration{Node: "node-" + id, Address: "127.0.0.1",
			Service: &api.AgentService{ID: id, Service: svc, Port: 80}}, nil)
		if err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	reg("c1")
	w := newConsul(t, follower.Config(), WithBackoff(50*time.Millisecond, 500*time.Millisecond))
	r, _ := watch(t, w, svc)
	r.waitFor(t, stateWait, "c1", hasIDs("c1"))

	leader.Kill()
	// A new watch (a fresh, stale read) answers on the follower, with the
	// last-contact age exposed.
	w2 := newConsul(t, follower.Config(), WithBackoff(50*time.Millisecond, 500*time.Millisecond))
	r2, _ := watch(t, w2, svc)
	r2.waitFor(t, stateWait, "a stale answer without the old leader", hasIDs("c1"))
	st, _ := w2.Status(svc)
	t.Logf("stale read after the leader's death: last contact %v, known leader %v", st.LastContact, st.KnownLeader)

	newLeader, err := cl.WaitLeader(30 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if newLeader == leader {
		t.Fatal("the killed server is still the leader")
	}
	// Writes go through the new leader and reach both watches.
	var regErr error
	deadline := time.Now().Add(stateWait)
	for time.Now().Before(deadline) {
		if _, regErr = c.Catalog().Register(&api.CatalogRegistration{Node: "node-c2", Address: "127.0.0.1",
			Service: &api.AgentService{ID: "c2", Service: svc, Port: 80}}, nil); regErr == nil {
			break
		}
		time.Sleep(100 * time.Millisecond) // retry a write refused during the election
	}
	if regErr != nil {
		t.Fatal(regErr)
	}
	r.waitFor(t, stateWait, "c2 on the first watch", hasIDs("c1", "c2"))
	r2.waitFor(t, stateWait, "c2 on the second watch", hasIDs("c1", "c2"))
}

// TestConsulTokenNeverLeaks runs an agent with ACLs on: a wrong token gives
// errors that must not contain it, in updates, statuses or logs; the right
// token, sent as a header, lets the watch through.
func TestConsulTokenNeverLeaks(t *testing.T) {
	leaktest.Check(t)
	const root = "4f1f7c3b-0000-4000-8000-rootrootroot"
	a := consultest.Start(t, consultest.WithHCL(`acl {
  enabled = true
  default_policy = "deny"
  tokens { initial_management = "`+root+`" }
}`))
	// Wait until the ACL system accepts the management token.
	admin := a.Config()
	admin.Token = root
	ac, err := api.NewClient(admin)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err = ac.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "acl-1", Name: "secured", Address: "127.0.0.1", Port: 80})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // poll for ACL bootstrap
	}

	const secret = "c0ffee00-dead-beef-0000-5ec12e7t0ken"
	var logs syncBuffer
	seen := &headerCheck{token: secret}
	cfg := a.Config()
	cfg.HttpClient = &http.Client{Transport: seen}
	w := newConsul(t, cfg, WithToken(secret), WithBackoff(50*time.Millisecond, 200*time.Millisecond),
		WithConsulLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	r, _ := watch(t, w, "secured")
	u, _ := r.waitFor(t, stateWait, "an ACL error", func(u Update) bool { return u.Err != nil })
	st, _ := w.Status("secured")
	for what, s := range map[string]string{"update error": u.Err.Error(), "status error": fmt.Sprint(st.Err), "logs": logs.String()} {
		if strings.Contains(s, secret) || strings.Contains(s, secret[:8]) {
			t.Errorf("%s contains the token: %s", what, s)
		}
	}
	if !strings.Contains(logs.String(), "403") && !strings.Contains(logs.String(), "ACL") {
		t.Errorf("the error was not logged: %s", logs.String())
	}
	if n, bad := seen.result(); n == 0 || bad != "" {
		t.Errorf("token placement: %d requests, %s", n, bad)
	}

	// Registering with the wrong token fails without naming it.
	badCfg := a.Config()
	badCfg.Token = secret
	if _, err := Register(t.Context(), badCfg, Instance{ID: "acl-2", Name: "secured", Address: "127.0.0.1", Port: 81}); err == nil {
		t.Error("registration with a wrong token succeeded")
	} else if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), secret[:8]) {
		t.Errorf("registration error contains the token: %v", err)
	}

	// With the management token the watch sees the service.
	good := newConsul(t, a.Config(), WithToken(root))
	rg, _ := watch(t, good, "secured")
	rg.waitFor(t, stateWait, "the service with a valid token", hasIDs("acl-1"))
}

// headerCheck checks that every request carries the token in the
// X-Consul-Token header and nowhere in the URL.
type headerCheck struct {
	token string

	mu  sync.Mutex
	n   int
	bad string
}

func (h *headerCheck) RoundTrip(r *http.Request) (*http.Response, error) {
	h.mu.Lock()
	h.n++
	if r.Header.Get("X-Consul-Token") != h.token {
		h.bad = "request without the token header"
	}
	if strings.Contains(r.URL.String(), h.token) {
		h.bad = "token in the URL"
	}
	h.mu.Unlock()
	return noKeepAlive.RoundTrip(r)
}

func (h *headerCheck) result() (int, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n, h.bad
}
