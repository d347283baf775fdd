package mesh

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/internal/leaktest"
	"github.com/weftmesh/weft/tlsid"
)

// TestGRPCRapidReset: a client that opens and resets streams in a loop
// (CVE-2023-44487) over a mutual TLS connection has that connection
// closed by a weft gRPC server; grpc-go alone bounds the handlers but
// keeps serving it. Other callers are served throughout.
func TestGRPCRapidReset(t *testing.T) {
	leaktest.Check(t)
	env := newTestEnv(t, 0)
	gopts, err := GRPCServerOptions(WithIdentity(env.source(testServerID)))
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(gopts...)
	demo.Register(gs, "target", PeerID)
	addr := serveGRPC(t, gs)

	tlsConfig, err := tlsid.ClientConfig(env.source(testClientID), tlsid.AuthorizeAny())
	if err != nil {
		t.Fatal(err)
	}
	tlsConfig.NextProtos = []string{"h2"}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, tlsConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", demo.WhoamiMethod}, {":authority", "target"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hb.Bytes()
	// 10 000 streams opened and reset at once: ten times the default limit.
	var writeErr error
	for i := uint32(0); i < 10000 && writeErr == nil; i++ {
		id := 2*i + 1
		writeErr = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true})
		if writeErr == nil {
			writeErr = fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	}
	if writeErr == nil {
		writeErr = fr.WritePing(false, [8]byte{1})
	}
	// The connection must end: a read fails (EOF or reset) before the
	// deadline. A PING answer alone says it is still served.
	_ = conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	closed := writeErr != nil
	for !closed {
		f, err := fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the connection is still open after 10 000 resets")
			}
			closed = true
			break
		}
		if _, ok := f.(*http2.GoAwayFrame); ok {
			closed = true
		}
	}

	// Other callers are served.
	if err := env.discovery.Set("target", discovery.Endpoint{ID: "t1", Addr: addr}); err != nil {
		t.Fatal(err)
	}
	cc, err := env.client().DialGRPC("target")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := demo.Whoami(testContext(t, 10*time.Second), cc); err != nil {
		t.Fatalf("a caller after the attack: %v", err)
	}
}

// BenchmarkResetScan: the cost, per 16 KiB read, of following the frames
// a gRPC client sends.
func BenchmarkResetScan(b *testing.B) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	for buf.Len() < 16<<10 {
		_ = fr.WriteData(1, false, make([]byte, 1000))
		_ = fr.WriteRSTStream(3, http2.ErrCodeCancel)
	}
	data := buf.Bytes()
	c := &resetCounter{limit: rate.NewLimiter(rate.Inf, 1)}
	now := time.Now()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		c.scan(data, now)
	}
}
