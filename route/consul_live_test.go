package route_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/route"
)

// TestConsulPropagation changes a split in a real agent 20 times and
// measures how long each change takes to reach a published table: from
// the write's answer to the table's publication.
func TestConsulPropagation(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	c := a.Client()
	setEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"})
	setEntry(t, c, resolver(`Service.Meta.version == "2"`))
	setEntry(t, c, splitter(90, 10))
	tables := make(chan *route.Table, 64)
	src, err := route.NewConsul(c, []string{"web"}, route.WithOnUpdate(func(tab *route.Table) { tables <- tab }))
	if err != nil {
		t.Fatal(err)
	}
	runConsul(t, src)
	plain := &route.Request{Method: "GET", Path: "/", Header: http.Header{}}
	await := func(v1 int) time.Time {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case tab := <-tables:
				if share(tab, "web", plain)["v1"] == v1 {
					return time.Now()
				}
			case <-deadline:
				t.Fatalf("no table with v1 at %d within 30 s: %v", v1, share(src.Table(), "web", plain))
			}
		}
	}
	await(9000)
	var took []time.Duration
	for i := range 20 {
		v1 := float32(50 + i) // 50%, 51%, … 69%: every change differs
		setEntry(t, c, splitter(v1, 100-v1))
		written := time.Now()
		took = append(took, await(int(v1*100)).Sub(written))
	}
	slices.Sort(took)
	p50, p99 := took[len(took)/2], took[len(took)-1]
	t.Logf("split change → published table over %d changes: p50 %v, p99 (max) %v", len(took), p50, p99)
	if p99 > 2*time.Second {
		t.Errorf("slowest change took %v, want within 2 s", p99)
	}
}

// TestConsulAgentRestart stops the agent under a source: the last good
// table keeps serving and the failure is a rejection wrapping ErrConsul;
// when the agent comes back with its state wiped, the source reads it
// afresh, and entries written again apply.
func TestConsulAgentRestart(t *testing.T) {
	leaktest.Check(t)
	a := consultest.Start(t)
	c := a.Client()
	write := func(v1, v2 float32) {
		setEntry(t, c, &api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "web", Protocol: "http"})
		setEntry(t, c, resolver(`Service.Meta.version == "2"`))
		setEntry(t, c, splitter(v1, v2))
	}
	write(90, 10)
	src, err := route.NewConsul(c, []string{"web"}, route.WithConsulBackoff(10*time.Millisecond, 200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	runConsul(t, src)
	plain := &route.Request{Method: "GET", Path: "/", Header: http.Header{}}
	waitFor(t, "the first table", func() bool { return share(src.Table(), "web", plain)["v1"] == 9000 })
	good := src.Table()

	a.Stop()
	waitFor(t, "a rejection while the agent is down", func() bool {
		r := src.Status().LastRejection
		return r != nil && errors.Is(r.Err, route.ErrConsul)
	})
	if src.Table() != good {
		t.Fatal("the table changed while the agent was down")
	}
	t.Logf("while down: %v", src.Status().LastRejection)

	a.RestartFresh()
	// The wiped agent has no entries: its chain is Consul's default, a
	// table without subsets.
	waitFor(t, "the default chain of the wiped agent", func() bool {
		cfg := src.Table().Config()
		return cfg.Services["web"] != nil && len(cfg.Services["web"].Subsets) == 0
	})
	write(30, 70)
	waitFor(t, "the entries written again", func() bool { return share(src.Table(), "web", plain)["v1"] == 3000 })
	if st := src.Status(); st.LastRejection == nil || !strings.Contains(st.LastRejection.Error(), "web") {
		t.Errorf("status %+v lost the outage's rejection", st)
	}
}

// scriptedChain stands in for an agent's discovery-chain endpoint: it
// gives its answers in order, then holds every later query until
// released, and records the index each query asked for. Config entries
// are all missing.
type scriptedChain struct {
	answers []chainAnswer
	release chan struct{}

	mu      sync.Mutex
	indexes []string
}

// chainAnswer is an X-Consul-Index with a protocol, or an HTTP error.
type chainAnswer struct {
	index    uint64
	protocol string
	fail     int
}

func (s *scriptedChain) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.URL.Path, "/v1/discovery-chain/") {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	n := len(s.indexes)
	s.indexes = append(s.indexes, r.URL.Query().Get("index"))
	s.mu.Unlock()
	if n >= len(s.answers) {
		select {
		case <-r.Context().Done():
		case <-s.release:
		}
		return
	}
	ans := s.answers[n]
	w.Header().Set("X-Consul-Index", fmt.Sprint(ans.index))
	if ans.fail != 0 {
		http.Error(w, "rpc error: no leader", ans.fail)
		return
	}
	const target = `{"ID":"svc.default.default.dc1","Service":"svc","Datacenter":"dc1"}`
	fmt.Fprintf(w, `{"Chain":{"ServiceName":"svc","Datacenter":"dc1","Protocol":%q,"StartNode":"r",
		"Nodes":{"r":{"Type":"resolver","Name":"svc.default.default.dc1","Resolver":{"Target":"svc.default.default.dc1"}}},
		"Targets":{"svc.default.default.dc1":%s}}}`, ans.protocol, target)
}

// sent returns the indexes asked for so far, comma-separated.
func (s *scriptedChain) sent() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.indexes, ",")
}

// TestConsulIndexRules checks the blocking-query index rules of a Consul
// source against a stand-in for the discovery-chain endpoint: a real
// agent cannot be made to answer with an index of 0, an index that goes
// backwards without a restart in between, or a 500 on demand. Everything
// else is tested against real agents.
func TestConsulIndexRules(t *testing.T) {
	leaktest.Check(t)
	script := &scriptedChain{release: make(chan struct{}), answers: []chainAnswer{
		{index: 100, protocol: "http"},
		{index: 50, protocol: "http"}, // backwards
		{index: 50, protocol: "http"},
		{index: 0, protocol: "http"}, // backwards, to 0
		{index: 0, protocol: "http"},
		{fail: http.StatusInternalServerError},
		{index: 7, protocol: "grpc"},
	}}
	srv := httptest.NewServer(script)
	defer srv.Close()
	defer close(script.release)
	client, err := api.NewClient(&api.Config{Address: srv.Listener.Addr().String(), HttpClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}})
	if err != nil {
		t.Fatal(err)
	}
	rejected := make(chan route.Rejection, 8)
	src, err := route.NewConsul(client, []string{"svc"}, route.WithConsulBackoff(time.Millisecond, time.Millisecond),
		route.WithConsulRate(1000), route.WithOnReject(func(r route.Rejection) { rejected <- r }))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		_ = src.Run(ctx)
	}()
	defer func() { cancel(); <-stopped }()

	waitFor(t, "the grpc chain of index 7", func() bool {
		s := src.Table().Config().Services["svc"]
		return s != nil && s.Protocol == "grpc"
	})
	// No index first; 100; 50 < 100 → a fresh read; 50; 0 < 50 → a fresh
	// read; 0 again → wait on 1, never on 0; the 500 → a fresh read; 7.
	const want = ",100,,50,,1,,7"
	waitFor(t, "indexes "+want, func() bool { return strings.HasPrefix(script.sent(), want) })
	select {
	case r := <-rejected:
		if !errors.Is(r, route.ErrConsul) || !strings.Contains(r.Error(), "no leader") {
			t.Errorf("rejection %v, want the 500 wrapping ErrConsul", r)
		}
	default:
		t.Error("the 500 was not reported")
	}
}
