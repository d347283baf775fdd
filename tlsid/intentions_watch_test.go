package tlsid

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/consultest"
	"github.com/weftmesh/weft/internal/leaktest"
)

// fastBackoff shortens the watch's backoff, so that tests that stop the
// agent see it recover in seconds.
var fastBackoff = consulOptionFunc(func(o *consulOptions) { o.backoff, o.maxBackof = 50*time.Millisecond, time.Second })

func setHTTP(t *testing.T, c *api.Client, service string) {
	t.Helper()
	if _, _, err := c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: service, Protocol: "http"}, nil); err != nil {
		t.Fatal(err)
	}
}

func decide(w *ConsulIntentionsWatch, td spiffeid.TrustDomain, from, method, path string) error {
	id := spiffeid.RequireFromString("spiffe://" + td.Name() + "/ns/default/dc/dc1/svc/" + from)
	return w.AuthorizeRequest(context.Background(), Request{Peer: id, Method: method, Path: path})
}

// TestConsulIntentionsWatch follows a real agent's service-intentions
// entries: L7 permissions apply within a blocking query, an entry that
// does not compile leaves the last good intentions in force, an agent
// that is down leaves them deciding, and an agent that comes back with
// its state wiped (the index goes back, a new CA) is followed again.
func TestConsulIntentionsWatch(t *testing.T) {
	leaktest.Check(t)
	agent := consultest.Start(t)
	c := agent.Client()
	setHTTP(t, c, "api")
	w, err := WatchConsulIntentions(c, "api", fastBackoff)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	eventually(t, 30*time.Second, "first intentions", func() bool { return w.Intentions() != nil })
	roots, _, err := c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(roots.TrustDomain)
	if err := decide(w, td, "web", "GET", "/"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("no intentions, default deny: %v, want denied", err)
	}

	entry := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "api", Sources: []*api.SourceIntention{
		l7("web",
			perm(denyI, api.IntentionHTTPPermission{PathPrefix: "/admin", Methods: []string{"POST"}}),
			perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})),
		l4("db", denyI),
	}}
	if _, _, err := c.ConfigEntries().Set(entry, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the L7 intention", func() bool { return decide(w, td, "web", "GET", "/admin") == nil })
	for _, tc := range []struct {
		from, method, path string
		allow              bool
	}{
		{"web", "GET", "/admin", true}, {"web", "POST", "/admin", false}, {"web", "POST", "/orders", true}, {"db", "GET", "/", false}, {"cache", "GET", "/", false},
	} {
		if err := decide(w, td, tc.from, tc.method, tc.path); (err == nil) != tc.allow || (err != nil && !errors.Is(err, ErrUnauthorized)) {
			t.Errorf("%s %s %s: %v, want allowed=%v", tc.from, tc.method, tc.path, err, tc.allow)
		}
	}

	// Consul stores a regular expression RE2 refuses (a Perl lookahead):
	// the entry does not compile, so none of it applies — not the new
	// deny, not the regex — and Err says why.
	bad := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "api", Sources: []*api.SourceIntention{
		l7("web",
			perm(denyI, api.IntentionHTTPPermission{PathRegex: "/(?=x)"}),
			perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})),
		l4("cache", allowI),
	}}
	updates := w.Updates()
	if _, _, err := c.ConfigEntries().Set(bad, nil); err != nil {
		t.Logf("Consul refuses the regular expression itself: %v", err)
	} else {
		eventually(t, 30*time.Second, "the compile error", func() bool { return errors.Is(w.Err(), ErrBadIntention) })
		if w.Updates() != updates {
			t.Fatalf("an entry that does not compile was applied")
		}
		if err := decide(w, td, "cache", "GET", "/"); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("cache after a bad entry: %v, want the last good intentions (denied)", err)
		}
		if _, _, err := c.ConfigEntries().Set(entry, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the good entry again", func() bool { return w.Err() == nil && w.Updates() > updates })
	}

	// The agent goes away: the watch fails, the last intentions decide.
	agent.Stop()
	eventually(t, 30*time.Second, "a failing watch", func() bool { return w.Err() != nil })
	if err := decide(w, td, "web", "POST", "/admin"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("POST /admin with Consul down: %v, want denied", err)
	}
	if err := decide(w, td, "web", "GET", "/admin"); err != nil {
		t.Fatalf("GET /admin with Consul down: %v, want allowed", err)
	}

	// It comes back with nothing: a -dev agent's state is in memory, so
	// its index is lower and its CA new. The watch starts over.
	agent.Restart()
	setHTTP(t, c, "api")
	roots, _, err = c.Agent().ConnectCARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	td2 := spiffeid.RequireTrustDomainFromString(roots.TrustDomain)
	if _, _, err := c.ConfigEntries().Set(&api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: "api", Sources: []*api.SourceIntention{l4("db", allowI)}}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "the restarted agent's intentions", func() bool { return decide(w, td2, "db", "GET", "/") == nil })
	if err := decide(w, td2, "web", "GET", "/"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("web after the restart: %v, want denied (no intention names it)", err)
	}
	eventually(t, 30*time.Second, "a healthy watch", func() bool { return w.Err() == nil })
}

// TestConsulIntentionsWatchFailsClosed starts a watch whose agent cannot
// be reached (a closed port: a real refused connection): every request
// is refused as undecidable, never allowed and never counted as denied.
func TestConsulIntentionsWatchFailsClosed(t *testing.T) {
	leaktest.Check(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	w, err := WatchConsulIntentions(c, "api", WithIntentionsDefault(true), fastBackoff)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	err = decide(w, consulTD, "web", "GET", "/")
	if !errors.Is(err, ErrNoIntentions) || errors.Is(err, ErrUnauthorized) {
		t.Fatalf("before the first answer: %v, want ErrNoIntentions", err)
	}
	eventually(t, 30*time.Second, "the query error", func() bool { return w.Err() != nil })
	err = decide(w, consulTD, "web", "GET", "/")
	if !errors.Is(err, ErrNoIntentions) || !strings.Contains(err.Error(), "roots") {
		t.Fatalf("with the agent unreachable: %v, want ErrNoIntentions saying why", err)
	}
	if w.Intentions() != nil || w.Warnings() != nil || w.Updates() != 0 {
		t.Fatalf("intentions without an answer")
	}
}

func TestWatchConsulIntentionsBadInput(t *testing.T) {
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		client *api.Client
		target string
	}{
		{"nil client", nil, "api"},
		{"empty target", c, ""},
		{"wildcard target", c, "*"},
		{"target with a slash", c, "a/b"},
	} {
		if w, err := WatchConsulIntentions(tc.client, tc.target); err == nil || w != nil || !strings.HasPrefix(err.Error(), "tlsid: ") {
			t.Errorf("%s: %v, %v; want an error", tc.name, w, err)
		}
	}
}

// TestConsulIntentionsWatchLogsWarningsOnce checks that each warning is
// logged the first time a compiled set has it, not again on later sets
// that keep it, and that a new warning is logged when it appears.
func TestConsulIntentionsWatchLogsWarningsOnce(t *testing.T) {
	var buf bytes.Buffer
	w := &ConsulIntentionsWatch{target: "api", opts: newConsulOptions([]ConsulOption{WithConsulLogger(slog.New(slog.NewTextHandler(&buf, nil)))}), logged: map[IntentionWarning]bool{}}
	peer := IntentionWarning{Entry: "api", Field: "Sources[web].Peer", Reason: "ignored"}
	jwt := IntentionWarning{Entry: "api", Field: "JWT", Reason: "denies"}
	for _, set := range [][]IntentionWarning{{peer}, {peer}, {peer, jwt}, {jwt, peer}} {
		w.logWarnings(set)
	}
	if n := strings.Count(buf.String(), "Consul intention field not applied"); n != 2 {
		t.Fatalf("%d warning lines, want 2:\n%s", n, buf.String())
	}
	for _, field := range []string{"field=Sources[web].Peer", "field=JWT"} {
		if strings.Count(buf.String(), field) != 1 {
			t.Fatalf("%s not logged exactly once:\n%s", field, buf.String())
		}
	}
}
