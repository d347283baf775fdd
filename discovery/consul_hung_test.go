package discovery

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/internal/leaktest"
)

// silentListener accepts TCP connections and never answers on them: an
// agent that is up but hung. It is a fake because a real agent cannot be
// made to hang while keeping its port open (SIGSTOP would do it, but
// stops the agent for every other test as well).
type silentListener struct {
	ln   net.Listener
	done chan struct{}

	mu    sync.Mutex
	conns []net.Conn
}

func newSilentListener(t *testing.T) *silentListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &silentListener{ln: ln, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
		}
	}()
	return s
}

func (s *silentListener) Close() {
	s.ln.Close()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
}

// hangAfterFirst answers the first query with an empty set at index 5,
// and leaves every query after it (the blocking query, then the retries)
// hanging until the client gives up: an agent that hangs in the middle of
// a watch. It is a fake for the reason silentListener is.
type hangAfterFirst struct {
	srv *httptest.Server

	release chan struct{}

	mu       sync.Mutex
	answered bool
	hungAt   time.Time
}

func newHangAfterFirst() *hangAfterFirst {
	h := &hangAfterFirst{release: make(chan struct{})}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body, so the server notices when the client hangs up.
		_, _ = io.Copy(io.Discard, r.Body)
		h.mu.Lock()
		if !h.answered {
			h.answered = true
			h.mu.Unlock()
			w.Header().Set("X-Consul-Index", "5")
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte("[]"))
			return
		}
		if h.hungAt.IsZero() {
			h.hungAt = time.Now()
		}
		h.mu.Unlock()
		select {
		case <-r.Context().Done():
		case <-h.release:
		}
	}))
	return h
}

// Close releases the hung requests and stops the server.
func (h *hangAfterFirst) Close() {
	close(h.release)
	h.srv.Close()
}

func (h *hangAfterFirst) firstHang() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hungAt
}

// TestConsulHungAgent: an agent that accepts connections and never
// answers becomes an error wrapping ErrAgentTimeout, reported within
// wait + 2 × margin, with backoff and a status the user can read —
// whether it hangs from the start or in the middle of a blocking query.
// Wait and margin are short so the test takes a few seconds.
func TestConsulHungAgent(t *testing.T) {
	leaktest.Check(t)
	const (
		wait   = time.Second
		margin = 500 * time.Millisecond
		bound  = wait + 2*margin
	)
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) (addr string, hungAt func() time.Time, stop func())
	}{
		{"hung from the start", func(t *testing.T) (string, func() time.Time, func()) {
			s := newSilentListener(t)
			at := time.Now()
			return s.ln.Addr().String(), func() time.Time { return at }, s.Close
		}},
		{"hung during a blocking query", func(t *testing.T) (string, func() time.Time, func()) {
			h := newHangAfterFirst()
			return h.srv.Listener.Addr().String(), h.firstHang, h.Close
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, hungAt, stop := tc.start(t)
			defer stop()
			cfg := api.DefaultNonPooledConfig()
			cfg.Address = addr
			cfg.HttpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			w := newConsul(t, cfg, WithWait(wait), WithQueryMargin(margin), WithBackoff(100*time.Millisecond, 200*time.Millisecond))
			r, stopWatch := watch(t, w, "hung")
			defer stopWatch()
			u, seen := r.waitFor(t, 10*time.Second, "the timeout error", func(u Update) bool { return u.Err != nil })
			if !errors.Is(u.Err, ErrAgentTimeout) || !errors.Is(u.Err, ErrConsul) {
				t.Errorf("error = %v, want ErrAgentTimeout and ErrConsul", u.Err)
			}
			at := hungAt()
			if at.IsZero() {
				t.Fatal("the agent never received a query to hang")
			}
			if took := seen.Sub(at); took > bound {
				t.Errorf("hung agent reported %v after it hung, want ≤ wait + 2×margin = %v", took, bound)
			}
			// It keeps trying, with backoff, and says so in its status.
			deadline := time.Now().Add(10 * time.Second)
			for {
				st, ok := w.Status("hung")
				if ok && st.Failures >= 2 && errors.Is(st.Err, ErrAgentTimeout) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("status after repeated hangs = %+v, %v; want ≥ 2 failures wrapping ErrAgentTimeout", st, ok)
				}
				time.Sleep(20 * time.Millisecond) // poll interval
			}
		})
	}
}
