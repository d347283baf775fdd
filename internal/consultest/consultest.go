// Package consultest runs real Consul agents for weft's tests and examples.
//
// [Start] runs `consul agent -dev` bound to 127.0.0.1 with free ports and its
// own data directory, waits until it has a leader and stops it when the test
// ends. [StartCluster] runs several non-dev servers that form one cluster on
// loopback. [Launch] runs a dev agent for a program that is not a test. The
// agent binary is found by [Binary]; `make tools` builds it.
//
// Agents and clusters are safe for concurrent use by the goroutines of one
// test.
package consultest

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// EnvBinary names the environment variable that holds the path of the
// Consul binary. The Makefile sets it; when it is set and the binary is
// missing, tests fail instead of being skipped.
const EnvBinary = "WEFT_CONSUL"

// ErrNoBinary is wrapped by [Binary] when no Consul binary can be found.
var ErrNoBinary = errors.New("consultest: no consul binary (run `make tools` to build .bin/consul)")

// Binary returns the path of the Consul agent binary: $WEFT_CONSUL when set,
// else <module root>/.bin/consul. It fails, wrapping [ErrNoBinary], when the
// file does not exist.
func Binary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: %s=%s: %v", ErrNoBinary, EnvBinary, p, err)
		}
		return p, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoBinary, err)
	}
	p := filepath.Join(root, ".bin", "consul")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w: %v", ErrNoBinary, err)
	}
	return p, nil
}

// moduleRoot finds the directory holding weft's go.mod, starting from this
// source file (tests run with the package directory as working directory,
// which may be in another module, such as benchmarks).
func moduleRoot() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	dirs := []string{}
	if ok {
		dirs = append(dirs, filepath.Dir(file))
	}
	if wd, err := os.Getwd(); err == nil {
		dirs = append(dirs, wd)
	}
	for _, d := range dirs {
		for dir := d; ; {
			b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
			if err == nil && bytes.Contains(b, []byte("module github.com/weftmesh/weft\n")) {
				return dir, nil
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				break
			}
			dir = parent
		}
	}
	return "", errors.New("weft module root not found")
}

// Option configures an agent started by [Start] or [StartCluster].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	dns      bool
	grpc     bool
	hcl      []string
	startMax time.Duration
}

// WithDNS turns on the agent's DNS interface on a free loopback port; see
// [Agent.DNSAddr].
func WithDNS() Option { return optionFunc(func(c *config) { c.dns = true }) }

// WithGRPC turns on the agent's plaintext gRPC port (xDS, peering) on a free
// loopback port; see [Agent.GRPCAddr].
func WithGRPC() Option { return optionFunc(func(c *config) { c.grpc = true }) }

// WithHCL adds an HCL configuration fragment, loaded after the ones this
// package writes (for example `acl { enabled = true ... }`).
func WithHCL(hcl string) Option {
	return optionFunc(func(c *config) {
		if hcl != "" {
			c.hcl = append(c.hcl, hcl)
		}
	})
}

// WithStartTimeout bounds how long [Start] waits for a leader (default
// 30 s). Values ≤ 0 are ignored.
func WithStartTimeout(d time.Duration) Option {
	return optionFunc(func(c *config) {
		if d > 0 {
			c.startMax = d
		}
	})
}

// ports are the agent's listening ports; -1 means off.
type ports struct {
	HTTP, DNS, GRPC, SerfLAN, SerfWAN, Server int
}

// Agent is one running (or stopped) Consul agent.
type Agent struct {
	t      testing.TB
	bin    string
	name   string
	dir    string
	dev    bool
	extra  []string // extra command-line arguments (cluster joins)
	cfg    config
	ports  ports
	client *api.Client

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *lockedBuffer
}

// skipOrFatal skips the test when no binary is installed, or fails it when
// $WEFT_CONSUL says one should be.
func binaryFor(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(EnvBinary) != "" {
			t.Fatalf("%v", err)
		}
		t.Skipf("%v", err)
	}
	return bin
}

// Start runs a `consul agent -dev` on 127.0.0.1 with free ports, waits for
// it to elect itself leader and registers its stop with t.Cleanup. It skips
// the test when the binary is missing (see [Binary]) unless $WEFT_CONSUL is
// set, in which case it fails.
func Start(t testing.TB, opts ...Option) *Agent {
	t.Helper()
	bin := binaryFor(t)
	cfg := newConfig(opts)
	a := newAgent(t, bin, "dev", true, cfg)
	a.mustStart()
	return a
}

func newConfig(opts []Option) config {
	cfg := config{startMax: 30 * time.Second}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	return cfg
}

func newAgent(t testing.TB, bin, name string, dev bool, cfg config) *Agent {
	a := &Agent{t: t, bin: bin, name: name, dir: t.TempDir(), dev: dev, cfg: cfg}
	if err := a.pickPorts(); err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(a.Stop)
	return a
}

// pickPorts draws free ports for the agent and makes its client.
func (a *Agent) pickPorts() error {
	n := 4
	if a.cfg.dns {
		n++
	}
	if a.cfg.grpc {
		n++
	}
	free, err := freePorts(n)
	if err != nil {
		return err
	}
	p := ports{DNS: -1, GRPC: -1}
	p.HTTP, p.SerfLAN, p.SerfWAN, p.Server = free[0], free[1], free[2], free[3]
	free = free[4:]
	if a.cfg.dns {
		p.DNS, free = free[0], free[1:]
	}
	if a.cfg.grpc {
		p.GRPC = free[0]
	}
	a.ports = p
	c, err := api.NewClient(a.apiConfig())
	if err != nil {
		return fmt.Errorf("consultest: client: %w", err)
	}
	a.client = c
	return nil
}

func (a *Agent) apiConfig() *api.Config {
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.HTTPAddr()
	cfg.Scheme = "http"
	cfg.Token = ""
	return cfg
}

// freePorts returns n distinct ports that were free on 127.0.0.1 for both
// TCP and UDP (serf and DNS use both) a moment ago. They are drawn at
// random below the kernel's ephemeral range (32768 and up on Linux), so
// the outgoing connections of other processes do not take them before the
// agent binds them.
func freePorts(n int) ([]int, error) {
	var out []int
	var held []func()
	defer func() {
		for _, c := range held {
			c()
		}
	}()
	for tries := 0; len(out) < n && tries < 1000; tries++ {
		port := 10000 + rand.IntN(22000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			l.Close()
			continue
		}
		held = append(held, func() { l.Close(); u.Close() })
		out = append(out, port)
	}
	if len(out) < n {
		return nil, fmt.Errorf("consultest: found only %d of %d free ports", len(out), n)
	}
	return out, nil
}

func (a *Agent) configHCL() string {
	var b strings.Builder
	fmt.Fprintf(&b, "node_name = %q\n", a.name)
	fmt.Fprintf(&b, "data_dir = %q\n", filepath.Join(a.dir, "data"))
	b.WriteString("bind_addr = \"127.0.0.1\"\nclient_addr = \"127.0.0.1\"\nadvertise_addr = \"127.0.0.1\"\n")
	b.WriteString("log_level = \"INFO\"\ndisable_update_check = true\n")
	fmt.Fprintf(&b, "ports {\n  http = %d\n  https = -1\n  dns = %d\n  grpc = %d\n  grpc_tls = -1\n  serf_lan = %d\n  serf_wan = %d\n  server = %d\n}\n",
		a.ports.HTTP, a.ports.DNS, a.ports.GRPC, a.ports.SerfLAN, a.ports.SerfWAN, a.ports.Server)
	for _, h := range a.cfg.hcl {
		b.WriteString(h)
		b.WriteString("\n")
	}
	return b.String()
}

// mustStart starts the process and waits for a leader, retrying with new
// ports when another process took one of them in between.
func (a *Agent) mustStart() {
	a.t.Helper()
	if err := a.startRetrying(); err != nil {
		a.t.Fatalf("%v", err)
	}
}

// startRetrying starts the process and waits for a leader, up to three
// times, with new ports after the first failure.
func (a *Agent) startRetrying() error {
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		if attempt > 0 {
			if err = a.pickPorts(); err != nil {
				continue
			}
		}
		if err = a.start(); err != nil {
			continue
		}
		if err = a.waitReady(a.cfg.startMax); err == nil {
			return nil
		}
		a.Kill()
	}
	return fmt.Errorf("consultest: agent %s: %v\n%s", a.name, err, a.Log())
}

func (a *Agent) start() error {
	if err := os.WriteFile(filepath.Join(a.dir, "weft.hcl"), []byte(a.configHCL()), 0o600); err != nil {
		return fmt.Errorf("consultest: write config: %w", err)
	}
	args := []string{"agent"}
	if a.dev {
		args = append(args, "-dev")
	}
	args = append(args, "-config-file", filepath.Join(a.dir, "weft.hcl"))
	args = append(args, a.extra...)
	cmd := exec.Command(a.bin, args...)
	log := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("consultest: start %s: %w", a.bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	a.mu.Lock()
	a.cmd, a.done, a.log = cmd, done, log
	a.mu.Unlock()
	return nil
}

// waitReady polls until the agent answers and knows a leader.
func (a *Agent) waitReady(max time.Duration) error {
	deadline := time.Now().Add(max)
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("consultest: agent exited during start (last: %v)", last)
		case <-tick.C:
		}
		leader, err := a.client.Status().Leader()
		if err == nil && leader != "" {
			if !a.dev {
				return nil
			}
			// A dev agent also needs its own node in the catalog before
			// registrations stick.
			if _, _, err = a.client.Catalog().Node(a.name, nil); err == nil {
				return nil
			}
		}
		if err == nil {
			err = errors.New("no leader yet")
		}
		last = err
	}
	return fmt.Errorf("consultest: no leader after %v: %v", max, last)
}

// HTTPAddr returns the agent's HTTP API address, 127.0.0.1:port.
func (a *Agent) HTTPAddr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports.HTTP)) }

// DNSAddr returns the agent's DNS address, or "" unless [WithDNS] was given.
func (a *Agent) DNSAddr() string {
	if a.ports.DNS <= 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports.DNS))
}

// GRPCAddr returns the agent's gRPC address, or "" unless [WithGRPC] was
// given.
func (a *Agent) GRPCAddr() string {
	if a.ports.GRPC <= 0 {
		return ""
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports.GRPC))
}

// ServerAddr returns the agent's server RPC address, as Consul reports
// leaders (127.0.0.1:port).
func (a *Agent) ServerAddr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(a.ports.Server))
}

// Name returns the agent's node name.
func (a *Agent) Name() string { return a.name }

// Client returns a consul/api client of the agent, without a token.
func (a *Agent) Client() *api.Client { return a.client }

// Config returns a fresh consul/api configuration pointing at the agent,
// for callers that want their own client (for example with a wrapped
// transport).
func (a *Agent) Config() *api.Config { return a.apiConfig() }

// Running reports whether the agent process is running.
func (a *Agent) Running() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		return false
	}
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// Stop asks the agent to leave gracefully (SIGINT) and waits for it to exit,
// killing it after 10 s. It does nothing when the agent is not running.
func (a *Agent) Stop() { a.signal(os.Interrupt, 10*time.Second) }

// Kill kills the agent at once (SIGKILL), as a crash would, and waits for
// the process to exit.
func (a *Agent) Kill() { a.signal(os.Kill, 10*time.Second) }

func (a *Agent) signal(sig os.Signal, max time.Duration) {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(max):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart starts the agent again on the same ports after [Agent.Stop] or
// [Agent.Kill] (stopping it first if it still runs) and waits for a
// leader. A -dev agent keeps its Raft state in memory: it comes back with
// an empty catalog and a Raft index lower than before; the services
// registered through the agent itself are kept in its data directory and
// return through anti-entropy shortly after, as with a real agent.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	var err error
	// The old process's ports can take a moment to be released.
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if err = a.start(); err == nil {
			if err = a.waitReady(a.cfg.startMax); err == nil {
				return
			}
			a.Kill()
		}
		time.Sleep(200 * time.Millisecond) // bounded retry of a failed bind, not a state wait
	}
	a.t.Fatalf("consultest: restart %s: %v\n%s", a.name, err, a.Log())
}

// Log returns what the agent has written to stdout and stderr since its
// last start.
func (a *Agent) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.log == nil {
		return ""
	}
	return a.log.String()
}

// Cluster is a set of Consul servers that form one cluster on loopback.
type Cluster struct {
	t      testing.TB
	agents []*Agent
}

// StartCluster runs n non-dev Consul servers on loopback with
// -bootstrap-expect=n that join each other, waits until every one of them
// knows the same leader and registers their stop with t.Cleanup.
func StartCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("consultest: cluster of %d servers", n)
	}
	bin := binaryFor(t)
	cfg := newConfig(opts)
	var err error
	for attempt := 0; attempt < 3; attempt++ {
		var c *Cluster
		if c, err = startCluster(t, bin, n, cfg); err == nil {
			return c
		}
		for _, a := range c.agents {
			a.Kill()
		}
	}
	t.Fatalf("%v", err)
	return nil
}

func startCluster(t testing.TB, bin string, n int, cfg config) (*Cluster, error) {
	c := &Cluster{t: t}
	for i := 0; i < n; i++ {
		acfg := cfg
		acfg.hcl = append([]string{fmt.Sprintf(`server = true
bootstrap_expect = %d
performance { raft_multiplier = 1 }
`, n)}, cfg.hcl...)
		c.agents = append(c.agents, newAgent(t, bin, fmt.Sprintf("server-%d", i), false, acfg))
	}
	for _, a := range c.agents {
		for _, b := range c.agents {
			if b != a {
				a.extra = append(a.extra, "-retry-join", net.JoinHostPort("127.0.0.1", strconv.Itoa(b.ports.SerfLAN)))
			}
		}
	}
	for _, a := range c.agents {
		if err := a.start(); err != nil {
			return c, err
		}
	}
	for _, a := range c.agents {
		if err := a.waitReady(60 * time.Second); err != nil {
			return c, fmt.Errorf("consultest: cluster server %s: %w\n%s", a.name, err, a.Log())
		}
	}
	if _, err := c.WaitLeader(60 * time.Second); err != nil {
		return c, err
	}
	return c, nil
}

// Agents returns the cluster's servers.
func (c *Cluster) Agents() []*Agent { return c.agents }

// Leader returns the server that the running servers agree is the leader.
func (c *Cluster) Leader() (*Agent, error) {
	var leader string
	for _, a := range c.agents {
		if !a.Running() {
			continue
		}
		l, err := a.client.Status().Leader()
		if err != nil {
			return nil, fmt.Errorf("consultest: leader from %s: %w", a.name, err)
		}
		if l == "" {
			return nil, fmt.Errorf("consultest: %s knows no leader", a.name)
		}
		if leader != "" && l != leader {
			return nil, fmt.Errorf("consultest: servers disagree on the leader: %s vs %s", leader, l)
		}
		leader = l
	}
	for _, a := range c.agents {
		if a.ServerAddr() == leader && a.Running() {
			return a, nil
		}
	}
	return nil, fmt.Errorf("consultest: leader %q is not a running server of the cluster", leader)
}

// Follower returns a running server that is not the leader the running
// servers agree on.
func (c *Cluster) Follower() (*Agent, error) {
	leader, err := c.Leader()
	if err != nil {
		return nil, err
	}
	for _, a := range c.agents {
		if a != leader && a.Running() {
			return a, nil
		}
	}
	return nil, errors.New("consultest: no running follower")
}

// WaitLeader polls [Cluster.Leader] until the running servers agree on a
// running leader, or fails after max.
func (c *Cluster) WaitLeader(max time.Duration) (*Agent, error) {
	deadline := time.Now().Add(max)
	var err error
	for time.Now().Before(deadline) {
		var a *Agent
		if a, err = c.Leader(); err == nil {
			return a, nil
		}
		time.Sleep(50 * time.Millisecond) // poll interval
	}
	return nil, fmt.Errorf("consultest: no agreed leader after %v: %w", max, err)
}

// lockedBuffer is a bytes.Buffer safe for the process's writes and the
// test's reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 4<<20 {
		return len(p), nil // enough to debug; drop the rest
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// RoundTripCounter is an http.RoundTripper that counts the requests it
// passes to Base. Tests use it to bound how many requests a watch loop
// makes. Base must not be nil.
type RoundTripCounter struct {
	Base http.RoundTripper

	mu sync.Mutex
	n  int
}

// RoundTrip implements http.RoundTripper.
func (c *RoundTripCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
	return c.Base.RoundTrip(r)
}

// Count returns the number of requests so far.
func (c *RoundTripCounter) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}
