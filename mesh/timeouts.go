package mesh

import (
	"io"
	"net/http"
	"time"
)

// Defaults of [ServerTimeouts].
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultBodyIdleTimeout   = 30 * time.Second
)

// ServerTimeouts are the timeouts of a [Server]. A zero field means its
// default; a negative one means no timeout.
type ServerTimeouts struct {
	// ReadHeader bounds the reading of a request's headers
	// ([http.Server.ReadHeaderTimeout]). Default
	// [DefaultReadHeaderTimeout].
	ReadHeader time.Duration
	// Read bounds the reading of a whole request, body included
	// ([http.Server.ReadTimeout]). Default: none, as a long upload is
	// legitimate; BodyIdle cuts one that stops.
	Read time.Duration
	// Write bounds the writing of a response ([http.Server.WriteTimeout]).
	// Default: none, as responses may stream.
	Write time.Duration
	// Idle bounds how long a connection waits for its next request
	// ([http.Server.IdleTimeout]). Default [DefaultIdleTimeout].
	Idle time.Duration
	// BodyIdle cuts a request whose body stops flowing: when a read of
	// the body waits this long for a byte, it fails, so the handler ends
	// and its slot under [WithConcurrencyLimit] is released. It holds for
	// HTTP/1.1 and HTTP/2 alike. Default [DefaultBodyIdleTimeout].
	BodyIdle time.Duration
}

// WithServerTimeouts sets the timeouts of a [Server] (see
// [ServerTimeouts]); zero fields keep their defaults.
func WithServerTimeouts(t ServerTimeouts) ServerOption {
	return serverOptionFunc(func(c *serverConfig) { c.timeouts = t })
}

// timeout returns d, def when d is zero, and 0 (none) when d is negative.
func timeout(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// applyTimeouts sets the timeouts of t on s, and returns h wrapped with
// the body idle timeout.
func applyTimeouts(s *http.Server, h http.Handler, t ServerTimeouts) http.Handler {
	s.ReadHeaderTimeout = timeout(t.ReadHeader, DefaultReadHeaderTimeout)
	s.ReadTimeout = timeout(t.Read, 0)
	s.WriteTimeout = timeout(t.Write, 0)
	s.IdleTimeout = timeout(t.Idle, DefaultIdleTimeout)
	idle := timeout(t.BodyIdle, DefaultBodyIdleTimeout)
	if idle == 0 {
		return h
	}
	whole := s.ReadTimeout
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil && r.Body != http.NoBody {
			b := &idleBody{ReadCloser: r.Body, rc: http.NewResponseController(w), idle: idle}
			if whole > 0 {
				b.limit = time.Now().Add(whole) // never later than the Read timeout
			}
			r.Body = b
		}
		h.ServeHTTP(w, r)
	})
}

// idleBody is a request body whose every read must see a byte within
// idle: before each read it moves the request's read deadline (of the
// connection for HTTP/1.1, of the stream for HTTP/2) idle ahead.
type idleBody struct {
	io.ReadCloser
	rc    *http.ResponseController
	idle  time.Duration
	limit time.Time // zero: none
	set   bool      // the deadline could be set
}

func (b *idleBody) Read(p []byte) (int, error) {
	dl := time.Now().Add(b.idle)
	if !b.limit.IsZero() && b.limit.Before(dl) {
		dl = b.limit
	}
	if err := b.rc.SetReadDeadline(dl); err == nil {
		b.set = true
	}
	n, err := b.ReadCloser.Read(p)
	if err != nil && b.set {
		// The body is done (or cut): leave the connection's deadlines
		// to the server again.
		_ = b.rc.SetReadDeadline(time.Time{})
		b.set = false
	}
	return n, err
}
