// Command consul runs the demo service against a real Consul agent: it
// starts `consul agent -dev` on loopback (from .bin/consul, or
// $WEFT_CONSUL), registers three instances of the demo service with TTL
// health checks, calls them over mutual TLS through a mesh.Client whose
// discovery is the Consul watcher, with identities from Consul's Connect
// CA and Consul's intentions enforced by the servers: a deny intention
// makes the calls fail with 403, removing it restores them. It then
// drains one instance and shows the next calls go to the other two.
//
//	make tools                 # builds .bin/consul once
//	go run ./examples/consul
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "consul example:", err)
		os.Exit(1)
	}
}

const (
	service       = "demo"
	clientService = "consul-example"
)

// instance is one running, registered copy of the demo service.
type instance struct {
	name  string
	addr  string
	srv   *mesh.Server
	reg   *discovery.Registration
	serve chan error
}

func run(ctx context.Context, out io.Writer) error {
	agent, err := startAgent(ctx)
	if err != nil {
		return err
	}
	defer agent.stop()
	fmt.Fprintf(out, "consul agent -dev on %s\n", agent.addr)
	consulCfg := api.DefaultNonPooledConfig()
	consulCfg.Address = agent.addr

	// Identities from Consul's Connect CA: the leaf certificates of the
	// "demo" and "consul-example" services, renewed and rotated by Consul.
	consulClient, err := api.NewClient(consulCfg)
	if err != nil {
		return err
	}
	serverSrc, err := tlsid.NewConsulSource(ctx, consulClient, service)
	if err != nil {
		return err
	}
	defer serverSrc.Close()
	clientSrc, err := tlsid.NewConsulSource(ctx, consulClient, clientService)
	if err != nil {
		return err
	}
	defer clientSrc.Close()
	svid, err := clientSrc.GetX509SVID()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "identities from Consul's CA, trust domain %s; this client is %s\n", clientSrc.TrustDomain(), svid.ID)
	// The servers ask Consul's intentions about every caller (cached 1 s).
	intentions, err := tlsid.NewConsulIntentions(consulClient, service, tlsid.WithIntentionsTTL(time.Second))
	if err != nil {
		return err
	}

	// Three instances, each registered in Consul with a TTL check whose
	// heartbeat the Registration keeps.
	var instances []*instance
	defer func() {
		for _, in := range instances {
			_ = in.reg.Deregister(context.Background())
			_ = in.srv.Close()
			<-in.serve
		}
	}()
	for i := 1; i <= 3; i++ {
		in, err := start(ctx, consulCfg, serverSrc, intentions, fmt.Sprintf("demo-%d", i))
		if err != nil {
			return err
		}
		instances = append(instances, in)
		fmt.Fprintf(out, "registered %s at %s\n", in.name, in.addr)
	}

	watcher, err := discovery.NewConsul(consulCfg)
	if err != nil {
		return err
	}
	// The view tells when the client has applied a change of the set.
	view := &demo.View{Watcher: watcher}
	client, err := mesh.NewClient(mesh.WithDiscovery(view), mesh.WithIdentity(clientSrc))
	if err != nil {
		return err
	}
	defer client.Close()
	hc := client.HTTPClient()

	if _, err := calls(ctx, out, hc, 6); err != nil {
		return err
	}

	// An operator denies consul-example → demo; within the cache TTL the
	// servers refuse the calls with 403. Removing the intention restores
	// them.
	if _, err := consulClient.Connect().IntentionUpsert(&api.Intention{
		SourceName: clientService, DestinationName: service, Action: api.IntentionActionDeny,
	}, nil); err != nil {
		return fmt.Errorf("create intention: %w", err)
	}
	fmt.Fprintf(out, "intention: deny %s → %s\n", clientService, service)
	if err := waitStatus(ctx, out, hc, http.StatusForbidden); err != nil {
		return err
	}
	if _, err := consulClient.Connect().IntentionDeleteExact(clientService, service, nil); err != nil {
		return fmt.Errorf("delete intention: %w", err)
	}
	fmt.Fprintf(out, "intention removed\n")
	if err := waitStatus(ctx, out, hc, http.StatusOK); err != nil {
		return err
	}

	drained := instances[0]
	instances = instances[1:]
	fmt.Fprintf(out, "draining %s: maintenance, wait for watchers, deregister, shut down\n", drained.name)
	start := time.Now()
	if err := drained.reg.Drain(ctx); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	// The drain grace covers watchers on a quiet machine; the demo checks
	// its client has seen the change before it shuts the instance down.
	if err := view.WaitWithout(ctx, drained.name); err != nil {
		return err
	}
	if err := drained.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-drained.serve
	fmt.Fprintf(out, "drained in %v\n", time.Since(start).Round(10*time.Millisecond))

	answered, err := calls(ctx, out, hc, 6)
	if err != nil {
		return err
	}
	if answered[drained.name] != 0 {
		return fmt.Errorf("%s answered %d calls after it was drained", drained.name, answered[drained.name])
	}
	return nil
}

// waitStatus calls the demo service, 100 ms apart, until it answers with
// status want, for at most 30 seconds: an intention reaches the agent's
// cache, then the servers' decision cache, eventually.
func waitStatus(ctx context.Context, out io.Writer, hc *http.Client, want int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := 0
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+service+"/", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == want {
			fmt.Fprintf(out, "  call answered %s\n", resp.Status)
			return nil
		}
		last = resp.StatusCode
		select {
		case <-ctx.Done():
			return fmt.Errorf("calls never answered %d (last %d): %w", want, last, ctx.Err())
		case <-tick.C:
		}
	}
}

// calls makes n calls to the demo service, prints who answered and
// returns how many calls each instance answered.
func calls(ctx context.Context, out io.Writer, hc *http.Client, n int) (map[string]int, error) {
	count := map[string]int{}
	for i := 0; i < n; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+service+"/", nil)
		if err != nil {
			return nil, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("call %d: %w", i+1, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("call %d: status %d: %s", i+1, resp.StatusCode, body)
		}
		fmt.Fprintf(out, "  %s\n", body)
		name, _, _ := strings.Cut(string(body), " ")
		count[name]++
	}
	var names []string
	for k := range count {
		names = append(names, k)
	}
	sort.Strings(names)
	fmt.Fprintf(out, "%d calls answered by %s\n", n, strings.Join(names, ", "))
	return count, nil
}

func start(ctx context.Context, cfg *api.Config, src tlsid.Source, policy tlsid.RequestPolicy, name string) (*instance, error) {
	srv, err := mesh.NewServer(demo.Handler(name, mesh.PeerID), mesh.WithIdentity(src), mesh.WithAccessPolicy(policy))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	in := &instance{name: name, addr: ln.Addr().String(), srv: srv, serve: make(chan error, 1)}
	go func() { in.serve <- srv.Serve(ln) }()
	in.reg, err = discovery.Register(ctx, cfg, discovery.Instance{
		ID: name, Name: service, Address: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port,
	}, discovery.WithTTLCheck(10*time.Second), discovery.WithDeregisterCriticalAfter(time.Minute))
	if err != nil {
		srv.Close()
		<-in.serve
		return nil, err
	}
	return in, nil
}

// agent is a `consul agent -dev` child process.
type agent struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
	dir  string
}

// startAgent runs a dev agent on free loopback ports and waits for it to
// have a leader.
func startAgent(ctx context.Context) (*agent, error) {
	bin := os.Getenv("WEFT_CONSUL")
	if bin == "" {
		bin = filepath.Join(".bin", "consul")
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("no Consul binary at %s (run `make tools` from the repository root to build .bin/consul, or set WEFT_CONSUL): %w", bin, err)
	}
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "weft-consul-example-")
	if err != nil {
		return nil, err
	}
	hcl := fmt.Sprintf(`node_name = "weft-example"
bind_addr = "127.0.0.1"
client_addr = "127.0.0.1"
log_level = "WARN"
ports {
  http = %d
  https = -1
  dns = -1
  grpc = -1
  grpc_tls = -1
  serf_lan = %d
  serf_wan = %d
  server = %d
}
`, ports[0], ports[1], ports[2], ports[3])
	conf := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(conf, []byte(hcl), 0o600); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	cmd := exec.Command(bin, "agent", "-dev", "-config-file", conf)
	log, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	a := &agent{addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), cmd: cmd, done: make(chan struct{}), dir: dir}
	go func() { _ = cmd.Wait(); close(a.done) }()

	cfg := api.DefaultNonPooledConfig()
	cfg.Address = a.addr
	c, err := api.NewClient(cfg)
	if err != nil {
		a.stop()
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		leader, err := c.Status().Leader()
		if err == nil && leader != "" {
			if _, _, err = c.Catalog().Node("weft-example", nil); err == nil {
				return a, nil
			}
		}
		select {
		case <-a.done:
			b, _ := os.ReadFile(filepath.Join(dir, "agent.log"))
			a.stop()
			return nil, fmt.Errorf("consul agent exited:\n%s", b)
		case <-ctx.Done():
			a.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			a.stop()
			return nil, errors.New("consul agent elected no leader within 30s")
		}
	}
}

// stop asks the agent to leave, kills it after 10 s, and removes its
// directory.
func (a *agent) stop() {
	_ = a.cmd.Process.Signal(os.Interrupt)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		_ = a.cmd.Process.Kill()
		<-a.done
	}
	os.RemoveAll(a.dir)
}

// freePorts returns n ports that were free on loopback (TCP and UDP).
func freePorts(n int) ([]int, error) {
	var out []int
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for tries := 0; len(out) < n && tries < 100; tries++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			l.Close()
			continue
		}
		closers = append(closers, func() { l.Close(); u.Close() })
		out = append(out, port)
	}
	if len(out) < n {
		return nil, errors.New("no free ports")
	}
	return out, nil
}
