// Package spiretest runs real SPIRE servers and agents on loopback, for
// weft's tests and examples.
//
// [StartServer] runs spire-server on 127.0.0.1 with a free port, an SQLite
// datastore and the join_token node attestor, and waits until it is
// healthy. [Server.StartAgent] runs a spire-agent attested to it with a
// fresh join token and the unix workload attestor, and waits until its
// Workload API socket answers. [Agent.Entry] registers a workload of this
// process (selector unix:uid:<uid>) under that agent. Everything is
// stopped when the test ends. [LaunchServer], [Server.LaunchAgent] and
// [Agent.CreateEntry] do the same without a test and return errors, for
// programs such as examples/spire; [Server.Close] and [Agent.Close] stop
// them.
//
// The binaries are found by [Binaries]; `make tools` builds them into
// .bin/. Servers and agents are safe for concurrent use.
package spiretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Environment variables that hold the paths of the SPIRE binaries. The
// Makefile sets them; when one is set and its binary is missing, tests
// fail instead of being skipped.
const (
	EnvServer = "WEFT_SPIRE_SERVER"
	EnvAgent  = "WEFT_SPIRE_AGENT"
)

// ErrNoBinary is wrapped by [Binaries] when a SPIRE binary cannot be found.
var ErrNoBinary = errors.New("spiretest: no SPIRE binaries (run `make tools` to build .bin/spire-server and .bin/spire-agent)")

// Binaries returns the paths of spire-server and spire-agent:
// $WEFT_SPIRE_SERVER and $WEFT_SPIRE_AGENT when set, else the ones in
// .bin/ at the root of weft's module. It fails, wrapping [ErrNoBinary],
// when a file does not exist.
func Binaries() (server, agent string, err error) {
	server, err = binary(EnvServer, "spire-server")
	if err != nil {
		return "", "", err
	}
	agent, err = binary(EnvAgent, "spire-agent")
	if err != nil {
		return "", "", err
	}
	return server, agent, nil
}

func binary(env, name string) (string, error) {
	p := os.Getenv(env)
	if p == "" {
		// This file is internal/spiretest/spiretest.go in weft's module.
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			return "", fmt.Errorf("%w: %s not set", ErrNoBinary, env)
		}
		p = filepath.Join(filepath.Dir(file), "..", "..", ".bin", name)
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrNoBinary, name, err)
	}
	return p, nil
}

// Option configures a server started by [StartServer] or [LaunchServer]
// and its agents.
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	svidTTL  time.Duration
	startMax time.Duration
}

// WithSVIDTTL sets the server's default X.509-SVID lifetime (default 2
// minutes; entries may set their own, see [WithEntryTTL]). SPIRE agents
// renew an SVID when half of its life has passed. Values ≤ 0 are ignored.
func WithSVIDTTL(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.svidTTL = d
		}
	})
}

// WithStartTimeout bounds how long the server and each of its agents may
// take to become healthy (default 60 s). Values ≤ 0 are ignored.
func WithStartTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.startMax = d
		}
	})
}

// process is one SPIRE server or agent process.
type process struct {
	name string
	bin  string
	args []string
	dir  string // its own files; removed by close
	log  string // file holding stdout and stderr

	mu     sync.Mutex
	cancel context.CancelFunc // interrupts the process
	done   chan struct{}      // closed when it has exited
}

// newProcess makes the directory of a process. Unix socket names are
// limited to 108 bytes, which a test's temporary directory may exceed, so
// it is a short one under the system's temporary directory.
func newProcess(name, bin string) (*process, error) {
	dir, err := os.MkdirTemp("", "spire")
	if err != nil {
		return nil, fmt.Errorf("spiretest: %w", err)
	}
	return &process{name: name, bin: bin, dir: dir, log: filepath.Join(dir, "log")}, nil
}

func (p *process) start() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spiretest: %s log: %w", p.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Stopping asks SPIRE to shut down cleanly, and kills it after 10 s.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		f.Close()
		return fmt.Errorf("spiretest: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(done)
	}()
	p.mu.Lock()
	p.cancel, p.done = cancel, done
	p.mu.Unlock()
	return nil
}

func (p *process) exited() bool {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// stop interrupts the process and waits for it to exit.
func (p *process) stop() {
	p.mu.Lock()
	cancel, done := p.cancel, p.done
	p.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// close stops the process and removes its files.
func (p *process) close() {
	p.stop()
	os.RemoveAll(p.dir)
}

// Log returns what the process has written since its last start.
func (p *process) Log() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// waitHealthy polls `<bin> healthcheck -socketPath socket` until it
// succeeds, the process exits or max passes.
func (p *process) waitHealthy(socket string, max time.Duration) error {
	deadline := time.Now().Add(max)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("spiretest: %s exited", p.name)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := exec.CommandContext(ctx, p.bin, "healthcheck", "-socketPath", socket).CombinedOutput()
		cancel()
		if err == nil {
			return nil
		}
		last = fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		time.Sleep(250 * time.Millisecond) // poll interval of the health wait
	}
	return fmt.Errorf("spiretest: %s not healthy after %s: %v", p.name, max, last)
}

// binariesFor skips the test when the binaries are missing, or fails it
// when the environment says they should be there.
func binariesFor(t testing.TB) {
	t.Helper()
	if _, _, err := Binaries(); err != nil {
		if os.Getenv(EnvServer) != "" || os.Getenv(EnvAgent) != "" {
			t.Fatalf("%v", err)
		}
		t.Skipf("%v", err)
	}
}

// Server is one running SPIRE server.
type Server struct {
	*process
	td     spiffeid.TrustDomain
	agent  string // spire-agent binary
	socket string
	port   int
	cfg    config

	agents sync.Mutex
	nagent int
}

// StartServer is [LaunchServer] for a test: it registers the server's
// stop with t.Cleanup and fails the test if the server does not start. It
// skips the test when the binaries are missing (see [Binaries]) unless
// $WEFT_SPIRE_SERVER or $WEFT_SPIRE_AGENT is set, in which case it fails.
func StartServer(t testing.TB, trustDomain string, opts ...Option) *Server {
	t.Helper()
	binariesFor(t)
	s, err := LaunchServer(trustDomain, opts...)
	if s != nil {
		t.Cleanup(s.Close)
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	return s
}

// LaunchServer runs a SPIRE server for trustDomain (such as
// "example.org") on 127.0.0.1 with a free port and waits until it is
// healthy, retrying with another port when one was taken meanwhile. On
// failure the error carries the server's log. Stop the server (nil only
// when it never ran) with [Server.Close], on failure too.
func LaunchServer(trustDomain string, opts ...Option) (*Server, error) {
	serverBin, agentBin, err := Binaries()
	if err != nil {
		return nil, err
	}
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return nil, fmt.Errorf("spiretest: trust domain: %w", err)
	}
	cfg := config{svidTTL: 2 * time.Minute, startMax: 60 * time.Second}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	p, err := newProcess("spire-server "+trustDomain, serverBin)
	if err != nil {
		return nil, err
	}
	s := &Server{process: p, td: td, agent: agentBin, socket: filepath.Join(p.dir, "server.sock"), cfg: cfg}
	for attempt := 0; attempt < 3; attempt++ {
		if err = s.startOnce(); err == nil {
			return s, nil
		}
		s.stop()
	}
	return s, fmt.Errorf("%w\n%s", err, s.Log())
}

// Close stops the server, waits for it to exit and removes its files.
func (s *Server) Close() { s.close() }

func (s *Server) startOnce() error {
	port, err := freePort()
	if err != nil {
		return err
	}
	s.port = port
	conf := fmt.Sprintf(`server {
  bind_address = "127.0.0.1"
  bind_port = "%d"
  socket_path = %q
  trust_domain = %q
  data_dir = %q
  log_level = "WARN"
  ca_key_type = "ec-p256"
  ca_ttl = "24h"
  default_x509_svid_ttl = %q
}
plugins {
  DataStore "sql" {
    plugin_data {
      database_type = "sqlite3"
      connection_string = %q
    }
  }
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
}
`, port, s.socket, s.td.Name(), filepath.Join(s.dir, "data"), s.cfg.svidTTL.String(), filepath.Join(s.dir, "data", "datastore.sqlite3"))
	path := filepath.Join(s.dir, "server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return fmt.Errorf("spiretest: write server config: %w", err)
	}
	s.args = []string{"run", "-config", path}
	if err := s.start(); err != nil {
		return err
	}
	return s.waitHealthy(s.socket, s.cfg.startMax)
}

// freePort returns a TCP port that was free on 127.0.0.1 a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("spiretest: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// TrustDomain returns the server's trust domain.
func (s *Server) TrustDomain() spiffeid.TrustDomain { return s.td }

// Addr returns the address agents connect to.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Run runs `spire-server <command> -socketPath <socket> args...` against
// the server, with stdin as its standard input (nil for none), and
// returns its output.
func (s *Server) Run(stdin []byte, command string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, s.bin, append(strings.Fields(command), append([]string{"-socketPath", s.socket}, args...)...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("spiretest: spire-server %s: %w: %s", command, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Bundle returns the server's current X.509 bundle.
func (s *Server) Bundle() (*x509bundle.Bundle, error) {
	out, err := s.Run(nil, "bundle show", "-format", "pem")
	if err != nil {
		return nil, err
	}
	return x509bundle.Parse(s.td, []byte(out))
}

// SetBundle makes the server hold b as the bundle of b's (foreign) trust
// domain, as `spire-server bundle set` does; workloads whose entries
// federate with that trust domain then receive it.
func (s *Server) SetBundle(b *x509bundle.Bundle) error {
	pemBytes, err := b.Marshal()
	if err != nil {
		return fmt.Errorf("spiretest: bundle: %w", err)
	}
	_, err = s.Run(pemBytes, "bundle set", "-format", "pem", "-id", b.TrustDomain().IDString())
	return err
}

// Federate makes s and other each hold the other's bundle.
func (s *Server) Federate(other *Server) error {
	for _, p := range [][2]*Server{{s, other}, {other, s}} {
		b, err := p[1].Bundle()
		if err != nil {
			return err
		}
		if err := p[0].SetBundle(b); err != nil {
			return err
		}
	}
	return nil
}

// Agent is one running SPIRE agent.
type Agent struct {
	*process
	server *Server
	id     spiffeid.ID
	socket string
}

// StartAgent is [Server.LaunchAgent] for a test: it registers the
// agent's stop with t.Cleanup and fails the test if it does not start.
func (s *Server) StartAgent(t testing.TB) *Agent {
	t.Helper()
	a, err := s.LaunchAgent()
	if a != nil {
		t.Cleanup(a.Close)
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	return a
}

// LaunchAgent runs a SPIRE agent attested to s with a fresh join token,
// whose node gets the ID spiffe://<td>/node/<n>, and waits until its
// Workload API answers. On failure the error carries the agent's log.
// Stop the agent (nil only when it never ran) with [Agent.Close], on
// failure too.
func (s *Server) LaunchAgent() (*Agent, error) {
	s.agents.Lock()
	s.nagent++
	n := s.nagent
	s.agents.Unlock()
	id, err := spiffeid.FromSegments(s.td, "node", strconv.Itoa(n))
	if err != nil {
		return nil, fmt.Errorf("spiretest: %w", err)
	}
	out, err := s.Run(nil, "token generate", "-spiffeID", id.String(), "-ttl", "3600")
	if err != nil {
		return nil, err
	}
	token, ok := strings.CutPrefix(strings.TrimSpace(out), "Token: ")
	if !ok {
		return nil, fmt.Errorf("spiretest: token generate: unexpected output %q", out)
	}
	p, err := newProcess("spire-agent "+id.String(), s.agent)
	if err != nil {
		return nil, err
	}
	a := &Agent{process: p, server: s, id: id, socket: filepath.Join(p.dir, "agent.sock")}
	conf := fmt.Sprintf(`agent {
  data_dir = %q
  log_level = "WARN"
  server_address = "127.0.0.1"
  server_port = "%d"
  socket_path = %q
  trust_domain = %q
  insecure_bootstrap = true
}
plugins {
  NodeAttestor "join_token" {
    plugin_data {}
  }
  KeyManager "memory" {
    plugin_data {}
  }
  WorkloadAttestor "unix" {
    plugin_data {}
  }
}
`, filepath.Join(a.dir, "data"), s.port, a.socket, s.td.Name())
	path := filepath.Join(a.dir, "agent.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return a, fmt.Errorf("spiretest: write agent config: %w", err)
	}
	a.args = []string{"run", "-config", path, "-joinToken", token}
	if err := a.start(); err != nil {
		return a, err
	}
	if err := a.waitHealthy(a.socket, s.cfg.startMax); err != nil {
		return a, fmt.Errorf("%w\n%s", err, a.Log())
	}
	return a, nil
}

// Close stops the agent, waits for it to exit and removes its files.
func (a *Agent) Close() { a.close() }

// ID returns the SPIFFE ID of the agent's node: the parent of the
// entries [Agent.CreateEntry] makes.
func (a *Agent) ID() spiffeid.ID { return a.id }

// SocketPath returns the path of the agent's Workload API socket.
func (a *Agent) SocketPath() string { return a.socket }

// Addr returns the agent's Workload API address, as go-spiffe's
// workloadapi.WithAddr takes it ("unix:///...").
func (a *Agent) Addr() string { return "unix://" + a.socket }

// EntryOption configures a registration entry made by [Agent.Entry].
type EntryOption interface{ applyEntry(*entryConfig) }

type entryOptionFunc func(*entryConfig)

func (f entryOptionFunc) applyEntry(c *entryConfig) { f(c) }

type entryConfig struct {
	ttl       time.Duration
	federates []spiffeid.TrustDomain
}

// WithEntryTTL sets the X.509-SVID lifetime of the entry's SVIDs
// (whole seconds; SPIRE renews at half of it). Values < 1 s are ignored.
func WithEntryTTL(d time.Duration) EntryOption {
	return entryOptionFunc(func(c *entryConfig) {
		if d >= time.Second {
			c.ttl = d
		}
	})
}

// WithFederatesWith makes the entry's workload receive the bundles of
// these trust domains, which the server must hold ([Server.SetBundle]).
func WithFederatesWith(tds ...spiffeid.TrustDomain) EntryOption {
	return entryOptionFunc(func(c *entryConfig) { c.federates = append(c.federates, tds...) })
}

var entryIDLine = regexp.MustCompile(`(?m)^Entry ID\s*:\s*(\S+)`)

// Entry is [Agent.CreateEntry] for a test, failing it on error.
func (a *Agent) Entry(t testing.TB, path string, opts ...EntryOption) (spiffeid.ID, string) {
	t.Helper()
	id, entryID, err := a.CreateEntry(path, opts...)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return id, entryID
}

// CreateEntry registers a workload of this process under the agent: an
// entry with SPIFFE ID spiffe://<td>/<path>, the agent's node as parent
// and the selector unix:uid:<uid of this process>. It returns the ID and
// the entry's ID in SPIRE. The agent learns of it at its next sync
// (every few seconds).
func (a *Agent) CreateEntry(path string, opts ...EntryOption) (spiffeid.ID, string, error) {
	var c entryConfig
	for _, o := range opts {
		if o != nil {
			o.applyEntry(&c)
		}
	}
	id, err := spiffeid.FromPath(a.server.td, "/"+strings.TrimPrefix(path, "/"))
	if err != nil {
		return spiffeid.ID{}, "", fmt.Errorf("spiretest: entry %q: %w", path, err)
	}
	args := []string{"-parentID", a.id.String(), "-spiffeID", id.String(), "-selector", "unix:uid:" + strconv.Itoa(os.Getuid())}
	if c.ttl > 0 {
		args = append(args, "-x509SVIDTTL", strconv.Itoa(int(c.ttl/time.Second)))
	}
	for _, td := range c.federates {
		args = append(args, "-federatesWith", td.IDString())
	}
	out, err := a.server.Run(nil, "entry create", args...)
	if err != nil {
		return spiffeid.ID{}, "", err
	}
	m := entryIDLine.FindStringSubmatch(out)
	if m == nil {
		return spiffeid.ID{}, "", fmt.Errorf("spiretest: entry create: no entry ID in %q", out)
	}
	return id, m[1], nil
}
