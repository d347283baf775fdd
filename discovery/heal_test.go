package discovery

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// hookLog keeps the re-registrations a registration reports.
type hookLog struct {
	mu  sync.Mutex
	evs []Reregistration
}

func (h *hookLog) add(ev Reregistration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.evs = append(h.evs, ev)
}

func (h *hookLog) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.evs)
}

// waitPassing polls the agent until every id is a passing instance of
// service, failing the test after max.
func waitPassing(t *testing.T, c *api.Client, service string, max time.Duration, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(max)
	var last []string
	for {
		entries, _, err := c.Health().Service(service, "", true, nil)
		last = last[:0]
		for _, e := range entries {
			last = append(last, e.Service.ID)
		}
		if err == nil && containsAll(last, ids) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v not all passing in %q within %v: passing %v, last error %v", ids, service, max, last, err)
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// waitStatus polls reg's status until ok holds, failing after max.
func waitStatus(t *testing.T, reg *Registration, max time.Duration, what string, ok func(RegistrationStatus) bool) RegistrationStatus {
	t.Helper()
	deadline := time.Now().Add(max)
	for {
		st := reg.Status()
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: status %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond) // poll interval
	}
}

// TestReregister: a registration whose instance the agent forgets puts
// it back, with its check, and says so in Status and through its hook.
// The agent is real; the instance is forgotten the two ways Consul
// forgets one: it is deregistered behind the registration's back (what
// the reaper does after DeregisterCriticalServiceAfter, which Consul
// cannot be made to apply in less than a minute), and the agent restarts
// with a fresh data directory.
func TestReregister(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	leaktest.Check(t)
	// The restarted agent's process has goroutines of its own: stop it
	// before the leak check.
	defer a.Stop()
	const svc = "heal"
	var ttlHook, plainHook hookLog
	ttlReg, err := Register(context.Background(), a.Config(), Instance{ID: "heal-ttl", Name: svc, Address: "127.0.0.1", Port: 7101},
		WithTTLCheck(time.Second), WithDeregisterCriticalAfter(time.Minute), WithReregisterHook(ttlHook.add),
		WithReregisterBackoff(100*time.Millisecond, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer ttlReg.Deregister(context.Background())
	plainReg, err := Register(context.Background(), a.Config(), Instance{ID: "heal-plain", Name: svc, Address: "127.0.0.1", Port: 7102},
		WithResyncInterval(300*time.Millisecond), WithReregisterHook(plainHook.add))
	if err != nil {
		t.Fatal(err)
	}
	defer plainReg.Deregister(context.Background())
	waitPassing(t, a.Client(), svc, 10*time.Second, "heal-ttl", "heal-plain")

	for i, tc := range []struct {
		name   string
		forget func(t *testing.T)
		regs   []*Registration // the registrations whose instance is forgotten
	}{
		{"reaped TTL instance", func(t *testing.T) {
			if err := a.Client().Agent().ServiceDeregister("heal-ttl"); err != nil {
				t.Fatal(err)
			}
		}, []*Registration{ttlReg}},
		{"deregistered instance without TTL", func(t *testing.T) {
			if err := a.Client().Agent().ServiceDeregister("heal-plain"); err != nil {
				t.Fatal(err)
			}
		}, []*Registration{plainReg}},
		{"agent restarted with a fresh data dir", func(t *testing.T) { a.RestartFresh() }, []*Registration{ttlReg, plainReg}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := make([]int, len(tc.regs))
			for j, r := range tc.regs {
				before[j] = r.Status().Reregistrations
			}
			forgotAt := time.Now()
			tc.forget(t)
			// Back and passing within 10 s of being forgotten (of the
			// agent answering again, after a restart).
			waitPassing(t, a.Client(), svc, 10*time.Second, "heal-ttl", "heal-plain")
			for j, r := range tc.regs {
				st := waitStatus(t, r, 5*time.Second, "a counted re-registration", func(s RegistrationStatus) bool {
					return s.Reregistrations > before[j]
				})
				if !st.Registered || st.LastReregistration.Before(forgotAt) || st.Err != nil {
					t.Errorf("%s after re-registration: status %+v", r.ID(), st)
				}
			}
			if got, want := ttlHook.count()+plainHook.count(), i+1+boolInt(len(tc.regs) == 2); got < want {
				t.Errorf("hook reported %d re-registrations, want at least %d", got, want)
			}
		})
	}
	// The TTL check came back with the instance: it still passes several
	// TTLs later, kept so by the resumed heartbeat.
	time.Sleep(3 * time.Second) // three TTLs of the scenario
	waitPassing(t, a.Client(), svc, time.Second, "heal-ttl", "heal-plain")
	checks, err := a.Client().Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	if c := checks["service:heal-ttl"]; c == nil || c.Type != "ttl" {
		t.Errorf("TTL check not registered again: %+v", c)
	}
	ttlHook.mu.Lock()
	for _, ev := range ttlHook.evs {
		if ev.ID != "heal-ttl" || ev.Service != svc || ev.Attempts < 1 || ev.Cause == nil || !errors.Is(ev.Cause, ErrRegistration) {
			t.Errorf("reported re-registration %+v", ev)
		}
	}
	ttlHook.mu.Unlock()
	if err := ttlReg.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := ttlReg.Status(); st.Registered {
		t.Errorf("status after Deregister = %+v, want not registered", st)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestReregisterFailureStatus: while the agent refuses the registration
// again, Status reports the failures and the error, and the registration
// keeps trying with backoff. The refusal comes from a fake agent (an
// httptest server answering 404 to the heartbeat and 500 to the
// registration): a real agent cannot be made to refuse a registration it
// accepted a moment before without ACLs being set up for it.
func TestReregisterFailureStatus(t *testing.T) {
	leaktest.Check(t)
	fake := newFakeAgent()
	defer fake.srv.Close()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = fake.srv.Listener.Addr().String()
	cfg.HttpClient = &http.Client{Transport: noKeepAlive}
	reg, err := Register(context.Background(), cfg, Instance{ID: "f-1", Name: "f", Address: "127.0.0.1", Port: 80},
		WithTTLCheck(time.Second), WithReregisterBackoff(20*time.Millisecond, 40*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	fake.refuse(true)
	st := waitStatus(t, reg, 10*time.Second, "failed re-registrations", func(s RegistrationStatus) bool { return s.Failures >= 3 })
	if st.Registered || st.Err == nil || !errors.Is(st.Err, ErrRegistration) || reg.Err() == nil {
		t.Errorf("status while refused = %+v", st)
	}
	fake.refuse(false)
	st = waitStatus(t, reg, 10*time.Second, "re-registered", func(s RegistrationStatus) bool { return s.Registered && s.Reregistrations == 1 })
	if st.Failures != 0 || st.Err != nil {
		t.Errorf("status once accepted = %+v", st)
	}
	if err := reg.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// fakeAgent answers the registration, TTL update and deregistration
// calls of one instance; while refusing, it has forgotten the instance
// (404 to the heartbeat) and fails its registration (500).
type fakeAgent struct {
	srv *httptest.Server

	mu         sync.Mutex
	refusing   bool
	registered bool
}

func newFakeAgent() *fakeAgent {
	f := &fakeAgent{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case r.URL.Path == "/v1/agent/service/register" && f.refusing:
			http.Error(w, "refused", http.StatusInternalServerError)
		case r.URL.Path == "/v1/agent/service/register":
			f.registered = true
		case strings.HasPrefix(r.URL.Path, "/v1/agent/check/update/") && !f.registered:
			http.Error(w, `Unknown check ID "service:f-1"`, http.StatusNotFound)
		}
	}))
	return f
}

func (f *fakeAgent) refuse(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refusing = on
	if on {
		f.registered = false
	}
}

// TestRegistrationHungAgent: an agent that took the registration and then
// stops answering (a fake, as in TestConsulHungAgent) turns the
// heartbeat into failures in Status, each bounded by the heartbeat
// interval, instead of a goroutine stuck on a call; Deregister still
// returns within its context.
func TestRegistrationHungAgent(t *testing.T) {
	leaktest.Check(t)
	h := newHangAfterFirst()
	defer h.Close()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = h.srv.Listener.Addr().String()
	cfg.HttpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	reg, err := Register(context.Background(), cfg, Instance{ID: "hung-1", Name: "hung", Address: "127.0.0.1", Port: 80}, WithTTLCheck(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, reg, 10*time.Second, "failed heartbeats", func(s RegistrationStatus) bool { return s.Failures >= 2 })
	if !errors.Is(st.Err, ErrRegistration) || !strings.Contains(st.Err.Error(), "hung-1") {
		t.Errorf("status with a hung agent = %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := reg.Deregister(ctx); err == nil {
		t.Error("Deregister against a hung agent succeeded")
	}
}
