package mesh

import (
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// DefaultMaxStreamResets is the default of [WithStreamResetLimit]: the
// stream resets per second a gRPC client may send on one connection.
const DefaultMaxStreamResets = 1000

// errTooManyResets ends a gRPC connection whose client resets streams
// faster than the server allows.
var errTooManyResets = errors.New("mesh: the client reset too many streams")

// WithStreamResetLimit bounds the streams a client may reset
// (RST_STREAM) on one connection to a gRPC server built with
// [GRPCServerOptions]: perSecond a second, with bursts as large. A
// connection over the limit is closed — the rapid-reset attack
// (CVE-2023-44487) opens and cancels streams in a loop, each of which
// costs the server a handler start. grpc-go bounds the handlers running
// at once but keeps serving such a connection. The default is
// [DefaultMaxStreamResets]; a negative perSecond turns the limit off,
// zero is ignored.
//
// The limit rides on the server's transport credentials: a
// [grpc.Creds] given after weft's options replaces it.
func WithStreamResetLimit(perSecond int) ServerOption {
	return serverOptionFunc(func(c *serverConfig) {
		if perSecond != 0 {
			c.maxResets = perSecond
		}
	})
}

// resetLimitCredentials wraps the server credentials c (nil: plaintext)
// so that each connection counts the RST_STREAM frames its client sends
// and is closed past perSecond a second; c itself when the limit is off.
func resetLimitCredentials(c credentials.TransportCredentials, perSecond int) credentials.TransportCredentials {
	if c == nil {
		c = insecure.NewCredentials()
	}
	if perSecond == 0 {
		perSecond = DefaultMaxStreamResets
	}
	if perSecond < 0 {
		return c
	}
	return &resetLimited{TransportCredentials: c, perSecond: perSecond}
}

type resetLimited struct {
	credentials.TransportCredentials
	perSecond int
}

func (c *resetLimited) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	return &resetCounter{
		Conn:     conn,
		limit:    rate.NewLimiter(rate.Limit(c.perSecond), c.perSecond),
		preamble: len(http2Preface),
	}, info, nil
}

func (c *resetLimited) Clone() credentials.TransportCredentials {
	return &resetLimited{TransportCredentials: c.TransportCredentials.Clone(), perSecond: c.perSecond}
}

// http2Preface is what an HTTP/2 client sends before its first frame.
const http2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frameRSTStream is the type of an HTTP/2 RST_STREAM frame (RFC 9113 §6.4).
const frameRSTStream = 0x3

// resetCounter is the server side of a gRPC connection that follows the
// HTTP/2 frames its client sends — only their 9-byte headers are
// looked at, nothing is copied — and closes the connection when
// RST_STREAM frames come faster than its limit allows. Reads come from
// the one goroutine of grpc-go's reader.
type resetCounter struct {
	net.Conn
	limit    *rate.Limiter
	preamble int // bytes of the preface still to pass
	hdr      [9]byte
	hdrN     int // bytes of hdr filled
	skip     int // payload bytes of the current frame still to pass
	closing  sync.Once
}

func (c *resetCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.scan(p[:n], time.Now()) {
		c.closing.Do(func() { _ = c.Conn.Close() })
		return 0, errTooManyResets
	}
	return n, err
}

// scan follows the frames in b, read at now; it reports false when a
// reset came over the limit.
func (c *resetCounter) scan(b []byte, now time.Time) bool {
	for len(b) > 0 {
		switch {
		case c.preamble > 0:
			k := min(c.preamble, len(b))
			c.preamble -= k
			b = b[k:]
		case c.skip > 0:
			k := min(c.skip, len(b))
			c.skip -= k
			b = b[k:]
		default:
			k := copy(c.hdr[c.hdrN:], b)
			c.hdrN += k
			b = b[k:]
			if c.hdrN < len(c.hdr) {
				return true
			}
			c.hdrN = 0
			c.skip = int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
			if c.hdr[3] == frameRSTStream && !c.limit.AllowN(now, 1) {
				return false
			}
		}
	}
	return true
}
