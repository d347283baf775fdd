package discovery

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/leaktest"
)

// TestConsulIndexRules checks the blocking-query index rules against a
// hand-written stand-in for the health endpoint: a real agent cannot be
// made to answer with an index of 0, an index that goes backwards without
// a restart in between, or a 500 on demand. Everything else is tested
// against real agents.
func TestConsulIndexRules(t *testing.T) {
	leaktest.Check(t)
	// Answers, in order: index 100, then 50 (backwards), then 0, then a
	// 500, then index 7 forever (long polls are held until the test ends).
	answers := []struct {
		index  int
		status int
	}{{100, 200}, {50, 200}, {50, 200}, {0, 200}, {0, 200}, {0, 500}, {7, 200}}
	var (
		mu   sync.Mutex
		seen []string
	)
	done := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(seen)
		seen = append(seen, r.URL.Query().Get("index"))
		mu.Unlock()
		if n >= len(answers) {
			select {
			case <-r.Context().Done():
			case <-done:
			}
			return
		}
		a := answers[n]
		w.Header().Set("X-Consul-Index", fmt.Sprint(a.index))
		if a.status != 200 {
			http.Error(w, "rpc error: no leader", a.status)
			return
		}
		fmt.Fprintf(w, `[{"Node":{"Address":"127.0.0.1"},"Service":{"ID":"x%d","Port":80},"Checks":[]}]`, a.index)
	}))
	defer srv.Close()
	defer close(done)
	w := newConsul(t, &api.Config{Address: srv.Listener.Addr().String(), HttpClient: &http.Client{Transport: noKeepAlive}}, WithBackoff(time.Millisecond, time.Millisecond), WithRate(1000))
	r, stop := watch(t, w, "svc")
	defer stop()
	r.waitFor(t, stateWait, "index 7 answer", hasIDs("x7"))
	deadline := time.Now().Add(stateWait)
	for {
		mu.Lock()
		got := strings.Join(seen, ",")
		mu.Unlock()
		// A first read without index; 100; 50 < 100 → a fresh read; 50;
		// 0 < 50 → a fresh read; 0 again → wait on 1, never on 0; an
		// error → a fresh read; then 7.
		if strings.HasPrefix(got, ",100,,50,,1,,7") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("indexes sent: %q, want prefix %q", got, ",100,,50,,1,,7")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
	// The 500 was reported with the last good set, then cleared.
	var sawErr bool
	for _, u := range r.all() {
		if u.Err != nil {
			sawErr = true
			if len(u.Endpoints) != 1 || u.Endpoints[0].ID != "x0" {
				t.Errorf("error update without the last good set: %+v", u)
			}
		}
	}
	if !sawErr {
		t.Error("the 500 was not reported")
	}
}

func TestNewConsulOptions(t *testing.T) {
	leaktest.Check(t)
	// An HTTP client timeout shorter than a blocking query would cut every
	// long poll: refused up front.
	_, err := NewConsul(&api.Config{Address: "127.0.0.1:1", HttpClient: &http.Client{Timeout: time.Minute}})
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("short client timeout: %v", err)
	}
	if _, err := NewConsul(&api.Config{Address: "127.0.0.1:1", HttpClient: &http.Client{Timeout: time.Minute}}, WithWait(10*time.Second)); err != nil {
		t.Errorf("timeout above a short wait: %v", err)
	}
	// nil options and out-of-range values are ignored.
	w, err := NewConsul(&api.Config{Address: "127.0.0.1:1"}, nil, WithWait(-1), WithRate(0), WithBackoff(0, 0),
		WithToken(""), WithFilter(""), WithConsulLogger(nil), WithWait(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if w.cfg.wait != 10*time.Minute || w.cfg.limit != DefaultConsulRate || w.cfg.backoffMin != DefaultConsulBackoff || !w.cfg.stale || !w.cfg.passingOnly {
		t.Errorf("config = %+v", w.cfg)
	}
	if _, err := w.Watch("", func(Update) {}); err == nil {
		t.Error("empty service accepted")
	}
	if _, ok := w.Status("never-watched"); ok {
		t.Error("status of an unwatched service")
	}
}
