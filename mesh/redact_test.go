package mesh

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"
)

// secretToken is what no log line may hold.
const secretToken = "tok-4111111111111111"

// policyFunc is a request policy written as a function.
type policyFunc func(tlsid.Request) error

func (f policyFunc) AuthorizeRequest(_ context.Context, r tlsid.Request) error { return f(r) }

// TestLogsRedacted drives each of a server's log lines that print an
// error or a URL with an error carrying a token: none reaches the log,
// and each line was written.
func TestLogsRedacted(t *testing.T) {
	leaktest.Check(t)
	tokenErr := func(wrapped error) error {
		return fmt.Errorf(`policy backend: Get "https://authz.internal/check?access_token=%s": %w`, secretToken, wrapped)
	}
	denied := policyFunc(func(tlsid.Request) error { return tokenErr(tlsid.ErrUnauthorized) })
	broken := policyFunc(func(tlsid.Request) error { return tokenErr(errors.New("connection refused")) })
	tests := []struct {
		name    string
		opts    []ServerOption
		handler http.Handler
		path    string
		want    string // the log line that must be there
	}{
		{name: "access denied", opts: []ServerOption{WithAccessPolicy(denied)}, path: "/reset/token=" + secretToken, want: "mesh: access denied"},
		{name: "access check failed", opts: []ServerOption{WithAccessPolicy(broken)}, path: "/x", want: "mesh: access check failed"},
		{name: "access audit", opts: []ServerOption{WithAccessAudit(denied)}, path: "/reset/api_key=" + secretToken, want: "mesh: access audit: would deny"},
		{
			name: "server error log",
			// A panic is how a handler's error reaches net/http's error log.
			handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
				panic(tokenErr(errors.New("upstream failed")))
			}),
			path: "/x", want: "http: panic serving",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := newTestEnv(t, 0)
			var buf lockedBuffer
			logger := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
			h := tt.handler
			if h == nil {
				h = echoPath
			}
			env.serveAs("svc", h, append([]ServerOption{WithLogger(logger)}, tt.opts...)...)
			req, err := http.NewRequestWithContext(testContext(t, 10*time.Second), "GET", "http://svc"+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp, err := env.client().RoundTrip(req); err == nil {
				resp.Body.Close()
			}
			poll(t, "the log line "+tt.want, func() bool { return strings.Contains(buf.String(), tt.want) })
			if out := buf.String(); strings.Contains(out, secretToken) {
				t.Errorf("the log holds the token:\n%s", out)
			}
		})
	}
}
