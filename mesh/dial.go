package mesh

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/weftmesh/weft/discovery"
)

// DefaultConnectTimeout bounds each TCP connect of a [Client] to an
// endpoint of a service whose route table sets no connect timeout
// (route.ConnectionPool.ConnectTimeout, a Consul resolver's
// ConnectTimeout), for HTTP and gRPC alike. The TLS handshake that
// follows a connect has a bound of its own.
const DefaultConnectTimeout = 10 * time.Second

// connectTimeout is the bound of a connect to an endpoint of services:
// the longest that the client's current route table sets for them, else
// [DefaultConnectTimeout]. It is read at each dial — dials are rare —
// so a change of table applies to the next connect and calls never pay
// for it.
func (c *Client) connectTimeout(services ...string) time.Duration {
	var longest time.Duration
	if c.cfg.routes != nil {
		t := c.cfg.routes.Table()
		for _, s := range services {
			longest = max(longest, t.ConnectTimeout(s))
		}
	}
	if longest == 0 {
		return DefaultConnectTimeout
	}
	return longest
}

// dialer returns how a cluster of service connects to its endpoints:
// TCP, bounded by the service's connect timeout at the time of the dial.
// A connect that does not complete in time fails with a [net.OpError]
// (Op "dial"), so nothing of the call was sent.
func (c *Client) dialer(service string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d := net.Dialer{Timeout: c.connectTimeout(service)}
		return d.DialContext(ctx, network, addr)
	}
}

// dial is the dialer of a gRPC connection: TCP to addr, bounded by the
// connect timeout of the services whose endpoint addr is (the dialled
// one, or others its routes send calls to; the longest when one address
// serves several), read at the time of the dial.
func (gc *grpcConn) dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Timeout: gc.client.connectTimeout(gc.servicesAt(addr)...)}
	return d.DialContext(ctx, "tcp", addr)
}

// servicesAt lists the services of the connection's clusters that hold
// an endpoint at addr; the dialled service when none does any more.
func (gc *grpcConn) servicesAt(addr string) []string {
	gc.mu.Lock()
	defer gc.mu.Unlock()
	var out []string
	for key, set := range gc.sets {
		if !slices.ContainsFunc(set, func(e discovery.Endpoint) bool { return e.Addr == addr }) {
			continue
		}
		switch t := gc.peers[key]; {
		case key == gc.cl.key:
			out = append(out, gc.cl.service)
		case t != nil:
			out = append(out, t.cl.service)
		}
	}
	if len(out) == 0 {
		out = append(out, gc.cl.service)
	}
	return out
}
