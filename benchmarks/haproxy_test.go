package benchmarks

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// The sidecar model, with HAProxy from the distribution's packages:
//
//	client ──plain──► outbound proxy ──mTLS──► inbound proxy ──plain──► server
//
// Each proxy is its own process, as a sidecar is. The one-hop variant is
// the client speaking mutual TLS to the inbound proxy directly. Listeners
// are opened here on 127.0.0.1:0 and handed to HAProxy as inherited file
// descriptors (bind fd@N), so no port is ever guessed.

// sidecars is a running pair of HAProxy processes.
type sidecars struct {
	inbound, outbound *exec.Cmd
	// Addresses clients use: the outbound proxy (plaintext, HTTP/1.1 and
	// h2c) and the inbound proxy (mutual TLS, HTTP/1.1 and h2).
	outHTTP, outGRPC, inHTTP, inGRPC string
}

// noHAProxy says why the sidecar rows are skipped.
const noHAProxy = "haproxy not installed (apt-get install -y haproxy; run.sh does it as root): sidecar rows skipped"

// haproxyPath returns HAProxy's path, or skips tb when it is not installed.
func haproxyPath(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("haproxy")
	if err != nil {
		tb.Skip(noHAProxy)
	}
	return p
}

const haproxyDefaults = `global
	maxconn 4096
	log stderr format raw local0 emerg

defaults
	mode http
	log global
	timeout connect 5s
	timeout client 60s
	timeout server 60s
	option http-keep-alive
	http-reuse always
`

// startSidecars starts the inbound proxy (in front of the server's plain
// HTTP and gRPC listeners) and the outbound proxy (in front of the
// inbound one); both stop when tb ends.
func startSidecars(tb testing.TB, srv *serverProc) *sidecars {
	tb.Helper()
	bin := haproxyPath(tb)
	e := getEnv(tb)
	in := filepath.Join(e.dir, "inbound.pem")
	out := filepath.Join(e.dir, "outbound.pem")
	ca := filepath.Join(e.dir, "bundle.pem")

	s := &sidecars{}
	inLns := listeners(tb, 2)
	s.inHTTP, s.inGRPC = inLns[0].Addr().String(), inLns[1].Addr().String()
	inCfg := haproxyDefaults + fmt.Sprintf(`
frontend in_http
	bind fd@3 ssl crt %[1]s ca-file %[2]s verify required ssl-min-ver TLSv1.3 alpn http/1.1
	default_backend app_http

frontend in_grpc
	bind fd@4 ssl crt %[1]s ca-file %[2]s verify required ssl-min-ver TLSv1.3 alpn h2
	default_backend app_grpc

backend app_http
	server app %[3]s

backend app_grpc
	server app %[4]s proto h2
`, in, ca, srv.addr(tb, "http-plain"), srv.addr(tb, "grpc-plain"))
	s.inbound = startHAProxy(tb, bin, "inbound", inCfg, inLns)

	outLns := listeners(tb, 2)
	s.outHTTP, s.outGRPC = outLns[0].Addr().String(), outLns[1].Addr().String()
	outCfg := haproxyDefaults + fmt.Sprintf(`
frontend out_http
	bind fd@3
	default_backend mesh_http

frontend out_grpc
	bind fd@4 proto h2
	default_backend mesh_grpc

backend mesh_http
	server inbound %[3]s ssl crt %[1]s ca-file %[2]s verify required ssl-min-ver TLSv1.3 alpn http/1.1

backend mesh_grpc
	server inbound %[4]s ssl crt %[1]s ca-file %[2]s verify required ssl-min-ver TLSv1.3 alpn h2
`, out, ca, s.inHTTP, s.inGRPC)
	s.outbound = startHAProxy(tb, bin, "outbound", outCfg, outLns)
	return s
}

// listeners opens n listeners on 127.0.0.1:0.
func listeners(tb testing.TB, n int) []*net.TCPListener {
	tb.Helper()
	var lns []*net.TCPListener
	for range n {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			tb.Fatal(err)
		}
		lns = append(lns, ln)
	}
	return lns
}

// startHAProxy checks cfg and runs HAProxy in the foreground with lns as
// file descriptors 3, 4, ...; it is stopped when tb ends. This process
// closes its own copies of the listeners once HAProxy has them.
func startHAProxy(tb testing.TB, bin, name, cfg string, lns []*net.TCPListener) *exec.Cmd {
	tb.Helper()
	path := filepath.Join(getEnv(tb).dir, name+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	var files []*os.File
	for _, ln := range lns {
		f, err := ln.File()
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, f)
	}
	defer func() {
		for i := range lns {
			files[i].Close()
			lns[i].Close()
		}
	}()
	check := exec.Command(bin, "-c", "-f", path)
	check.ExtraFiles = files
	if out, err := check.CombinedOutput(); err != nil {
		tb.Fatalf("haproxy %s: configuration rejected: %v\n%s", name, err, out)
	}
	cmd := exec.Command(bin, "-db", "-f", path)
	cmd.ExtraFiles = files
	cmd.Stderr = os.Stderr // HAProxy's alerts and warnings
	setParentDeath(cmd)
	if err := cmd.Start(); err != nil {
		tb.Fatalf("haproxy %s: %v", name, err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		waitOrKill(cmd, 10*time.Second)
	})
	return cmd
}

// cpu returns the CPU sources of the proxies a path goes through.
func (s *sidecars) cpu(hops int) []cpuSource {
	if hops == 1 {
		return []cpuSource{procCPU(s.inbound.Process.Pid)}
	}
	return []cpuSource{procCPU(s.inbound.Process.Pid), procCPU(s.outbound.Process.Pid)}
}
