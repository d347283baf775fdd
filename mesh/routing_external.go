package mesh

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/route"
)

// externals are the transports of the external services routes send to
// (route.ExternalService, Istio's ServiceEntry), one per service name,
// built on first use and rebuilt when a table changes the service's
// addresses or TLS settings. The zero value is ready for use.
type externals struct {
	mu     sync.Mutex
	m      map[string]*external
	closed bool
}

// external is how calls reach one external service: its own TLS
// (server name and roots, not mesh mutual TLS) and a round robin over
// its addresses.
type external struct {
	cfg       *route.External // what it was built from
	transport *http.Transport
	bal       *balancer.Balancer
}

// get returns the transport of the external service name as cfg
// describes it.
func (x *externals) get(name string, cfg *route.External) (*external, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return nil, ErrClosed
	}
	e := x.m[name]
	if e != nil && (e.cfg == cfg || sameExternal(e.cfg, cfg)) {
		return e, nil
	}
	ne, err := newExternal(cfg)
	if err != nil {
		return nil, err
	}
	if e != nil {
		e.transport.CloseIdleConnections()
	}
	if x.m == nil {
		x.m = make(map[string]*external)
	}
	x.m[name] = ne
	return ne, nil
}

// close closes the idle connections of every transport; later calls
// fail with [ErrClosed].
func (x *externals) close() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.closed = true
	for _, e := range x.m {
		e.transport.CloseIdleConnections()
	}
}

func sameExternal(a, b *route.External) bool {
	return a.DNS == b.DNS && a.ServerName == b.ServerName && a.CAFile == b.CAFile &&
		slices.EqualFunc(a.Endpoints, b.Endpoints, func(x, y discovery.Endpoint) bool { return x.Addr == y.Addr })
}

// newExternal builds the transport of cfg: TLS 1.2 or later, verifying
// the server's certificate against cfg's CA file (the system roots when
// it has none) and its server name (each address's host when it has
// none). DNS names are resolved at dial time.
func newExternal(cfg *route.External) (*external, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading the CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	e := &external{
		cfg: cfg,
		transport: &http.Transport{
			DialContext:         dialer.DialContext,
			TLSClientConfig:     tc,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
			IdleConnTimeout:     90 * time.Second,
			MaxIdleConnsPerHost: 16,
		},
		bal: balancer.New(nil),
	}
	e.bal.Update(cfg.Endpoints)
	return e, nil
}

// errExternal marks the errors of calls to external services.
var errExternal = errors.New("mesh: external service")

// callExternal sends r, under ctx, to the external service dec's target
// names, over the service's own TLS: an address in turn, the route's
// header changes, rewrites and authority applied. The Host sent is the
// route's authority, else the service's server name, else the address's
// host. There is one attempt per call: retries, hedging, breakers and
// telemetry are the mesh services'.
func (c *Client) callExternal(ctx context.Context, r *http.Request, dec *route.Decision) (*http.Response, error) {
	dest := dec.Target.Destination
	e, err := c.externals.get(dest.Service, dest.External)
	if err != nil {
		closeBody(r)
		return nil, fmt.Errorf("%w %q: %w", errExternal, dest.Service, err)
	}
	ep, err := e.bal.Pick(balancer.Info{Context: ctx, HTTP: r})
	if err != nil {
		closeBody(r)
		return nil, fmt.Errorf("%w %q: %w", errExternal, dest.Service, err)
	}
	out := r.WithContext(ctx)
	u := *r.URL
	u.Scheme, u.Host = "https", ep.Addr
	out.URL = &u
	out.Host = dest.External.ServerName
	if out.Host == "" {
		out.Host, _, _ = net.SplitHostPort(ep.Addr)
	}
	routeRequest(dec, out)
	resp, err := roundTrip(e.transport, out)
	res := balancer.Success
	if err != nil || resp.StatusCode >= 500 {
		res = balancer.Failure
	}
	ep.Done(balancer.Outcome{Result: res})
	if err != nil {
		return nil, fmt.Errorf("%w %q: %w", errExternal, dest.Service, err)
	}
	dec.Rule.Response.ApplyHTTP(resp.Header)
	dec.Target.Response.ApplyHTTP(resp.Header)
	return resp, nil
}
