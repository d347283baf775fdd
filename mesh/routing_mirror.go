package mesh

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/weftmesh/weft/route"
)

// MaxMirrorCompareBody is how much of each body a [MirrorComparison]
// holds: the first 64 KiB.
const MaxMirrorCompareBody = 64 << 10

// MirrorResponse is what one side of a mirrored call received.
type MirrorResponse struct {
	// Status is the response's status; 0 when the call failed (Err).
	Status int
	// Header is a copy of the response's headers; nil when it failed.
	Header http.Header
	// Body is the start of the body, at most [MaxMirrorCompareBody]
	// bytes: for the primary, what the caller read of it.
	Body []byte
	// Truncated is true when the body went on past Body.
	Truncated bool
	// Err is the call's error; nil when it got a response.
	Err error
}

// MirrorComparison is a mirrored call's two answers: the primary, which
// the caller received, and the shadow, from the mirror's destination.
type MirrorComparison struct {
	// Service is the called service; Route the name of the route that
	// mirrored the call; Mirror its mirror's destination ("svc/subset").
	Service, Route, Mirror string
	// Method and Path are the request's.
	Method, Path string
	// Primary and Shadow are the two answers.
	Primary, Shadow MirrorResponse
}

// WithMirrorCompare has the client call fn with both answers of each
// call a route mirrors ([WithRoutes]): the primary's once the caller has
// read its body to the end or closed it, the shadow's once the mirror has
// answered. fn runs on the goroutine that completes the pair — the
// mirror's, or the caller's in Read or Close of the body — so it must not
// block; it is never called when the caller leaves the primary body
// open, nor for a mirror dropped (too many in flight, a body that cannot
// be replayed). Calls are concurrent. Holding each body's first
// [MaxMirrorCompareBody] bytes costs the memory; without this option
// mirrors read nothing. A nil fn is ignored.
func WithMirrorCompare(fn func(MirrorComparison)) ClientOption {
	return clientOptionFunc(func(c *clientConfig) {
		if fn != nil {
			c.mirrorCompare = fn
		}
	})
}

// mirrorHook is the hook of [WithMirrorCompare].
type mirrorHook = func(MirrorComparison)

// mirrorCompare gathers the two answers of a mirrored call and hands
// them to the hook once both are in. A nil *mirrorCompare does nothing.
type mirrorCompare struct {
	fn   func(MirrorComparison)
	c    MirrorComparison
	left atomic.Int32 // answers still to come
}

// newMirrorCompare returns the comparison of r's mirrored call, nil
// without a hook.
func (c *Client) newMirrorCompare(r *http.Request, dec *route.Decision) *mirrorCompare {
	fn := c.cfg.mirrorCompare
	if fn == nil {
		return nil
	}
	m := &mirrorCompare{fn: fn, c: MirrorComparison{
		Service: dec.Rule.Service, Route: dec.Rule.Name, Mirror: dec.Rule.Mirror.Destination.String(),
		Method: r.Method, Path: r.URL.Path,
	}}
	m.left.Store(2)
	return m
}

func (m *mirrorCompare) done() {
	if m.left.Add(-1) == 0 {
		m.fn(m.c)
	}
}

// shadow records the mirror's answer, reading the start of its body.
func (m *mirrorCompare) shadow(resp *http.Response, err error) {
	if m == nil {
		return
	}
	m.c.Shadow = MirrorResponse{Err: err}
	if resp != nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, MaxMirrorCompareBody+1))
		m.c.Shadow = MirrorResponse{Status: resp.StatusCode, Header: resp.Header.Clone(), Body: body}
		if len(body) > MaxMirrorCompareBody {
			m.c.Shadow.Body, m.c.Shadow.Truncated = body[:MaxMirrorCompareBody], true
		}
	}
	m.done()
}

// primary records the caller's answer, and returns resp with its body
// copied, up to the bound, as the caller reads it.
func (m *mirrorCompare) primary(resp *http.Response, err error) *http.Response {
	if m == nil {
		return resp
	}
	if resp == nil {
		m.c.Primary = MirrorResponse{Err: err}
		m.done()
		return resp
	}
	m.c.Primary = MirrorResponse{Status: resp.StatusCode, Header: resp.Header.Clone()}
	resp.Body = &teeBody{ReadCloser: resp.Body, m: m}
	return resp
}

// teeBody keeps the start of a primary body as the caller reads it.
type teeBody struct {
	io.ReadCloser
	m         *mirrorCompare
	buf       []byte
	truncated bool
	once      sync.Once
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	keep := max(min(n, MaxMirrorCompareBody-len(b.buf)), 0)
	b.buf = append(b.buf, p[:keep]...)
	b.truncated = b.truncated || n > keep
	if err != nil {
		b.finish()
	}
	return n, err
}

func (b *teeBody) Close() error {
	err := b.ReadCloser.Close()
	b.finish()
	return err
}

func (b *teeBody) finish() {
	b.once.Do(func() {
		b.m.c.Primary.Body, b.m.c.Primary.Truncated = b.buf, b.truncated
		b.m.done()
	})
}
