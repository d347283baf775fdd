// Command routing shows weft's traffic management in one process, with
// no outside service: two versions of a "shop" service and an "audit"
// service, all over mutual TLS 1.3 with identities from an in-process
// development CA, and a client routed by the table below — a 90/10
// canary split, header routing to the canary, a fault that aborts half
// of the checkout calls, and a mirror of the search calls to audit. It
// then prints what each instance received, and shows an invalid update
// refused while the table stays.
//
//	go run ./examples/routing
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/route"
	"github.com/weftmesh/weft/tlsid"
)

// routes is the route table, as it would be in a file (route.NewFile).
const routes = `
services:
  shop:
    defaultSubset: v1
    subsets:
      v1: {meta: {version: v1}}
      v2: {meta: {version: v2}}
    routes:
      - name: beta-users
        match: [{headers: {x-user-group: {exact: beta}}}]
        backends: [{subset: v2}]
      - name: checkout
        match: [{path: {prefix: /checkout}}]
        fault: {abort: {httpStatus: 503, percent: 50}}
      - name: search
        match: [{path: {prefix: /search}}]
        mirror: {service: audit, percent: 100}
      - name: canary
        backends: [{subset: v1, weight: 9000}, {subset: v2, weight: 1000}]
`

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "routing:", err)
		os.Exit(1)
	}
}

// instance is a running server that counts the requests it received by
// path.
type instance struct {
	name string
	addr string
	srv  *mesh.Server
	mu   sync.Mutex
	got  map[string]int
}

func (in *instance) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	in.mu.Lock()
	in.got[r.URL.Path]++
	in.mu.Unlock()
	fmt.Fprintf(w, "%s %s", in.name, r.URL.Path)
}

func (in *instance) received() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	var parts []string
	for p, n := range in.got {
		parts = append(parts, fmt.Sprintf("%s ×%d", p, n))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

func (in *instance) count(path string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.got[path]
}

func start(ca *tlsid.DevCA, id spiffeid.ID, name string) (*instance, error) {
	src, err := ca.Source(id)
	if err != nil {
		return nil, err
	}
	in := &instance{name: name, got: map[string]int{}}
	if in.srv, err = mesh.NewServer(in, mesh.WithIdentity(src)); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	go func() { _ = in.srv.Serve(ln) }()
	in.addr = ln.Addr().String()
	return in, nil
}

func run(ctx context.Context, out io.Writer) error {
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		return err
	}
	serverID := spiffeid.RequireFromString("spiffe://example.org/shop")
	var instances []*instance
	for _, name := range []string{"shop-v1", "shop-v2", "audit"} {
		in, err := start(ca, serverID, name)
		if err != nil {
			return err
		}
		defer in.srv.Close()
		instances = append(instances, in)
	}
	v1, v2, audit := instances[0], instances[1], instances[2]
	static := &discovery.Static{}
	if err := static.Set("shop",
		discovery.Endpoint{ID: v1.name, Addr: v1.addr, Identity: serverID, Meta: map[string]string{"version": "v1"}},
		discovery.Endpoint{ID: v2.name, Addr: v2.addr, Identity: serverID, Meta: map[string]string{"version": "v2"}}); err != nil {
		return err
	}
	if err := static.Set("audit", discovery.Endpoint{ID: audit.name, Addr: audit.addr, Identity: serverID}); err != nil {
		return err
	}

	// The route table, and a logger for the updates it refuses.
	cfg, err := route.Parse([]byte(routes), route.YAML)
	if err != nil {
		return err
	}
	logger := slog.New(slog.NewTextHandler(out, nil))
	table, err := route.NewStatic(cfg, mesh.ReportRouteRejections(logger, nil))
	if err != nil {
		return err
	}
	src, err := ca.Source(spiffeid.RequireFromString("spiffe://example.org/frontend"))
	if err != nil {
		return err
	}
	client, err := mesh.NewClient(mesh.WithDiscovery(static), mesh.WithIdentity(src),
		mesh.WithAuthorizer(tlsid.AuthorizeID(serverID)), mesh.WithRoutes(table), mesh.WithLogger(logger))
	if err != nil {
		return err
	}
	defer client.Close()
	hc := client.HTTPClient()
	get := func(path string, header http.Header) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://shop"+path, nil)
		if err != nil {
			return 0, "", err
		}
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}

	fmt.Fprintln(out, "canary: 1000 calls of /catalog, 90% to v1 and 10% to v2")
	for range 1000 {
		if code, _, err := get("/catalog", nil); err != nil || code != http.StatusOK {
			return fmt.Errorf("catalog: %d %v", code, err)
		}
	}
	fmt.Fprintf(out, "  v1 served %d, v2 served %d\n", v1.count("/catalog"), v2.count("/catalog"))

	fmt.Fprintln(out, "header routing: 50 calls of /account with x-user-group: beta")
	for range 50 {
		code, body, err := get("/account", http.Header{"X-User-Group": {"beta"}})
		if err != nil || code != http.StatusOK || !strings.HasPrefix(body, "shop-v2 ") {
			return fmt.Errorf("beta call answered %d %q %v, want shop-v2", code, body, err)
		}
	}
	fmt.Fprintf(out, "  v2 served all %d\n", v2.count("/account"))

	fmt.Fprintln(out, "fault: 200 calls of /checkout, half aborted with 503 before they are sent")
	aborted := 0
	for range 200 {
		code, _, err := get("/checkout", nil)
		switch {
		case err != nil:
			return err
		case code == http.StatusServiceUnavailable:
			aborted++
		case code != http.StatusOK:
			return fmt.Errorf("checkout: %d", code)
		}
	}
	fmt.Fprintf(out, "  %d aborted by the client, %d reached a server\n", aborted, v1.count("/checkout")+v2.count("/checkout"))

	fmt.Fprintln(out, "mirror: 20 calls of /search, each copied to audit in the background")
	for range 20 {
		if code, _, err := get("/search", nil); err != nil || code != http.StatusOK {
			return fmt.Errorf("search: %d %v", code, err)
		}
	}
	client.Close() // waits for the mirrored calls
	fmt.Fprintf(out, "  audit received %d copies\n", audit.count("/search"))

	fmt.Fprintln(out, "\nwhat each instance received:")
	for _, in := range instances {
		fmt.Fprintf(out, "  %-8s %s\n", in.name, in.received())
	}

	fmt.Fprintln(out, "\nan update with weights that do not sum is refused; the table stays:")
	bad, err := route.Parse([]byte(strings.Replace(routes, "weight: 1000", "weight: 500", 1)), route.YAML)
	if err != nil {
		return err
	}
	var ve *route.ValidationError
	if err := table.Update(bad); !errors.As(err, &ve) {
		return fmt.Errorf("invalid update: %v", err)
	}
	if audit.count("/search") != 20 || v2.count("/account") != 50 {
		return errors.New("a call went astray")
	}
	return nil
}
