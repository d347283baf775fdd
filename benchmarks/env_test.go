package benchmarks

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/weftmesh/weft/tlsid"
)

// The trust domain and identities of the benchmarks. Every row, bare or
// weft or proxied, uses keys issued by one tlsid.DevCA.
const trustDomain = "bench.weft.test"

var (
	serverID = spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(trustDomain), "/server")
	clientID = spiffeid.RequireFromPath(spiffeid.RequireTrustDomainFromString(trustDomain), "/client")
)

// env is what every benchmark shares: a dev CA, a directory with the
// server's and the proxies' keys, the client's identity, and the server
// binary.
type env struct {
	dir        string
	ca         *tlsid.DevCA
	client     *tlsid.DevSource
	clientSVID *x509svid.SVID
	serverBin  string
}

var (
	envOnce sync.Once
	envVal  *env
	envErr  error
)

// getEnv returns the shared environment, creating it on first use.
func getEnv(tb testing.TB) *env {
	tb.Helper()
	envOnce.Do(func() { envVal, envErr = newEnv() })
	if envErr != nil {
		tb.Fatalf("benchmark environment: %v", envErr)
	}
	return envVal
}

// cleanupEnv removes the shared environment's files.
func cleanupEnv() {
	if envVal != nil {
		_ = os.RemoveAll(envVal.dir)
	}
}

func newEnv() (*env, error) {
	dir, err := os.MkdirTemp("", "weft-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{dir: dir}
	fail := func(err error) (*env, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if e.ca, err = tlsid.NewDevCA(trustDomain, tlsid.WithSVIDTTL(24*time.Hour)); err != nil {
		return fail(err)
	}
	if e.client, err = e.ca.Source(clientID); err != nil {
		return fail(err)
	}
	if e.clientSVID, err = e.client.GetX509SVID(); err != nil {
		return fail(err)
	}
	// The bundle, the server's SVID (for benchserver) and the sidecars'
	// certificate-and-key files (for HAProxy).
	var roots []byte
	for _, c := range e.ca.Bundle().X509Authorities() {
		roots = append(roots, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if err := os.WriteFile(filepath.Join(dir, "bundle.pem"), roots, 0o600); err != nil {
		return fail(err)
	}
	for _, f := range []struct {
		id        spiffeid.ID
		cert, key string
	}{
		{serverID, "svid.pem", "svid.key"},
		// A sidecar carries its workload's identity.
		{serverID, "inbound.pem", "inbound.pem"},
		{clientID, "outbound.pem", "outbound.pem"},
	} {
		svid, err := e.ca.Issue(f.id)
		if err != nil {
			return fail(err)
		}
		certs, key, err := svid.Marshal()
		if err != nil {
			return fail(err)
		}
		if f.cert == f.key {
			certs = append(certs, key...)
			err = os.WriteFile(filepath.Join(dir, f.cert), certs, 0o600)
		} else if err = os.WriteFile(filepath.Join(dir, f.cert), certs, 0o600); err == nil {
			err = os.WriteFile(filepath.Join(dir, f.key), key, 0o600)
		}
		if err != nil {
			return fail(err)
		}
	}
	// The server binary: $WEFT_BENCHSERVER when set (run.sh builds it once),
	// else built here.
	e.serverBin = os.Getenv("WEFT_BENCHSERVER")
	if e.serverBin == "" {
		e.serverBin = filepath.Join(dir, "benchserver")
		// The go command on PATH: the one running these tests.
		cmd := exec.Command("go", "build", "-o", e.serverBin, "./cmd/benchserver")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fail(fmt.Errorf("building benchserver: %v\n%s", err, out))
		}
	}
	return e, nil
}

// bareClientTLS is the client side of bare mutual TLS: the client's SVID
// and the CA's bundle, with go-spiffe's own config and no weft code.
func (e *env) bareClientTLS() *tls.Config {
	return tlsconfig.MTLSClientConfig(e.clientSVID, e.ca.Bundle(), tlsconfig.AuthorizeID(serverID))
}

// serverProc is a running benchserver.
type serverProc struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *bufio.Reader
	addrs map[string]string
	mu    sync.Mutex // serialises control commands
}

// startServer starts a benchserver process; it is stopped when tb ends.
func startServer(tb testing.TB, args ...string) *serverProc {
	tb.Helper()
	e := getEnv(tb)
	cmd := exec.Command(e.serverBin, append([]string{"-dir", e.dir, "-td", trustDomain}, args...)...)
	cmd.Stderr = os.Stderr
	setParentDeath(cmd)
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start benchserver: %v", err)
	}
	s := &serverProc{cmd: cmd, in: in, out: bufio.NewReader(stdout)}
	tb.Cleanup(s.stop)
	line, err := readLine(s.out, 30*time.Second)
	if err != nil {
		tb.Fatalf("benchserver addresses: %v", err)
	}
	if err := json.Unmarshal([]byte(line), &s.addrs); err != nil {
		tb.Fatalf("benchserver addresses %q: %v", line, err)
	}
	return s
}

// readLine reads a line from r, giving up after d.
func readLine(r *bufio.Reader, d time.Duration) (string, error) {
	type result struct {
		line string
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := r.ReadString('\n')
		ch <- result{strings.TrimSpace(line), err}
	}()
	select {
	case res := <-ch:
		return res.line, res.err
	case <-time.After(d):
		return "", errors.New("benchserver: no answer")
	}
}

// addr returns the address of the named listener.
func (s *serverProc) addr(tb testing.TB, name string) string {
	a, ok := s.addrs[name]
	if !ok {
		tb.Fatalf("benchserver has no listener %q", name)
	}
	return a
}

// CPU returns the CPU time the server process has used.
func (s *serverProc) CPU() (time.Duration, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := io.WriteString(s.in, "cpu\n"); err != nil {
		return 0, err
	}
	line, err := readLine(s.out, 10*time.Second)
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(line, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("benchserver cpu %q: %w", line, err)
	}
	return time.Duration(ns), nil
}

// stop ends the server: end of input, then a kill if it lingers.
func (s *serverProc) stop() {
	_ = s.in.Close()
	waitOrKill(s.cmd, 10*time.Second)
}

// waitOrKill waits for cmd to exit, killing it after d.
func waitOrKill(cmd *exec.Cmd, d time.Duration) {
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
	}
}

// cpuSource reports the CPU time some process has used so far.
type cpuSource interface {
	CPU() (time.Duration, error)
}

// selfCPU is this process's CPU time (user + system).
type selfCPU struct{}

func (selfCPU) CPU() (time.Duration, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, err
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}

// procCPU is the CPU time of another process, from /proc/<pid>/stat, in
// clock ticks (10 ms): precise enough over a benchmark of a second.
type procCPU int

func (p procCPU) CPU() (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", int(p)))
	if err != nil {
		return 0, err
	}
	// Fields after the command name (which may hold spaces) in ")".
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", int(p))
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", int(p))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", int(p), err)
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(ut+st) * tick, nil
}

// cpuMeter measures the CPU time of a set of processes across a
// benchmark's timed loop.
type cpuMeter struct {
	srcs  []cpuSource
	start time.Duration
}

func (m *cpuMeter) total(b *testing.B) time.Duration {
	var t time.Duration
	for _, s := range m.srcs {
		c, err := s.CPU()
		if err != nil {
			b.Fatalf("cpu time: %v", err)
		}
		t += c
	}
	return t
}

// startCPU starts measuring this process and srcs, and resets the timer.
func startCPU(b *testing.B, srcs ...cpuSource) *cpuMeter {
	m := &cpuMeter{srcs: append([]cpuSource{selfCPU{}}, srcs...)}
	m.start = m.total(b)
	b.ResetTimer()
	return m
}

// stop stops the timer and reports the CPU time per operation of every
// process measured (client, server, proxies), as cpu-ns/op.
func (m *cpuMeter) stop(b *testing.B) {
	b.StopTimer()
	d := m.total(b) - m.start
	b.ReportMetric(float64(d.Nanoseconds())/float64(b.N), "cpu-ns/op")
}

// httpGet makes one GET and reads the whole answer.
func httpGet(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != 64 {
		return fmt.Errorf("GET %s: %s, %d bytes", url, resp.Status, n)
	}
	return nil
}
