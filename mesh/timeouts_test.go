package mesh

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/weftmesh/weft/breaker"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"
)

// TestBodyIdleTimeout: callers whose request bodies stop flowing hold
// the server's concurrency slots only until the body idle timeout cuts
// them, over HTTP/1.1 and HTTP/2; then legitimate callers are served.
func TestBodyIdleTimeout(t *testing.T) {
	leaktest.Check(t)
	tests := []struct {
		name string
		h2   bool
	}{{"HTTP/1.1", false}, {"HTTP/2", true}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, 0)
			var entered atomic.Int64
			addr := env.serveAs("upload", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered.Add(1)
				if _, err := io.Copy(io.Discard, r.Body); err != nil {
					http.Error(w, "body: "+err.Error(), http.StatusRequestTimeout)
				}
			}),
				WithConcurrencyLimit(breaker.ConcurrencySettings{Limit: 4, CriticalReserve: -1, CriticalWait: -1}),
				WithServerTimeouts(ServerTimeouts{BodyIdle: 500 * time.Millisecond}),
			)

			// Four stalled uploads, from a caller holding a valid SVID.
			tlsConfig, err := tlsid.ClientConfig(env.source(testClientID), tlsid.AuthorizeAny())
			if err != nil {
				t.Fatal(err)
			}
			tr := &http.Transport{TLSClientConfig: tlsConfig}
			if tt.h2 {
				tlsConfig.NextProtos = []string{"h2"}
				tr.ForceAttemptHTTP2 = true
			}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithCancel(context.Background())
			var stalled sync.WaitGroup
			defer func() {
				cancel()
				stalled.Wait()
			}()
			for range 4 {
				body, pw := io.Pipe()
				defer pw.Close()
				req, _ := http.NewRequestWithContext(ctx, "POST", "https://"+addr+"/upload", body)
				req.ContentLength = 1_000_000
				stalled.Add(1)
				go func() {
					defer stalled.Done()
					if resp, err := tr.RoundTrip(req); err == nil {
						if tt.h2 != (resp.ProtoMajor == 2) {
							t.Errorf("the stalled upload went over %s", resp.Proto)
						}
						resp.Body.Close()
					}
				}()
				_, _ = pw.Write([]byte("card=4111")) // a first chunk, then nothing
			}
			poll(t, "four stalled uploads in the handler", func() bool { return entered.Load() >= 4 })

			hc := env.client().HTTPClient()
			code, _, err := call(t, hc, http.MethodGet, "http://upload/", "", nil)
			if err != nil || code != http.StatusServiceUnavailable {
				t.Fatalf("a call while the slots are held: %d %v, want 503", code, err)
			}
			poll(t, "a legitimate call served", func() bool {
				code, _, err := call(t, hc, http.MethodGet, "http://upload/", "", nil)
				return err == nil && code == http.StatusOK
			})
		})
	}
}

// TestServerTimeouts: the timeouts of the http.Server are the defaults,
// or what WithServerTimeouts sets; a negative value turns one off.
func TestServerTimeouts(t *testing.T) {
	tests := []struct {
		opts                          []ServerOption
		readHeader, read, write, idle time.Duration
	}{
		{nil, DefaultReadHeaderTimeout, 0, 0, DefaultIdleTimeout},
		{[]ServerOption{WithServerTimeouts(ServerTimeouts{ReadHeader: time.Second, Read: time.Minute, Write: 2 * time.Minute, Idle: -1})}, time.Second, time.Minute, 2 * time.Minute, 0},
	}
	for i, tt := range tests {
		srv, err := NewServer(http.NotFoundHandler(), tt.opts...)
		if err != nil {
			t.Fatal(err)
		}
		h := srv.http
		if h.ReadHeaderTimeout != tt.readHeader || h.ReadTimeout != tt.read || h.WriteTimeout != tt.write || h.IdleTimeout != tt.idle {
			t.Errorf("#%d: timeouts %v %v %v %v", i, h.ReadHeaderTimeout, h.ReadTimeout, h.WriteTimeout, h.IdleTimeout)
		}
	}
}
