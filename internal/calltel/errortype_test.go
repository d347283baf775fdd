package calltel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"testing"
)

// TestErrorType checks the error.type of transport errors. The errors are
// built here as crypto/tls and net report them: a real handshake cannot
// be made to fail in each of these ways on demand (mesh's
// TestTelemetryServerRefusals covers a real refused handshake).
func TestErrorType(t *testing.T) {
	refused := errors.New("tlsid: peer not authorized")
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"handshake refused by our authorizer", &HandshakeError{Err: refused}, "tls"},
		{"handshake alert from the peer", &HandshakeError{Err: &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}}, "tls"},
		{"alert from the peer after the handshake", fmt.Errorf("read: %w", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}), "tls"},
		{"certificate verification", &tls.CertificateVerificationError{Err: refused}, "tls"},
		{"handshake out of time", &HandshakeError{Err: context.DeadlineExceeded}, "timeout"},
		{"handshake cancelled", &HandshakeError{Err: context.Canceled}, "canceled"},
		{"connection refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, "connection"},
		{"anything else", errors.New("boom"), "_OTHER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := errorType(tc.err); got != tc.want {
				t.Errorf("errorType(%v) = %q, want %q", tc.err, got, tc.want)
			}
		})
	}
}
