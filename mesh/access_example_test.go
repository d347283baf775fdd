package mesh_test

import (
	"fmt"
	"log"
	"net"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/tlsid"
)

// A request policy on a server: web may read orders, nobody reaches the
// admin pages, whatever the spelling of the path, and everything else is
// denied. Denials answer 403 and are counted.
func ExampleWithAccessPolicy() {
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		log.Fatal(err)
	}
	serverSrc, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/orders"))
	clientSrc, _ := ca.Source(spiffeid.RequireFromString("spiffe://example.org/web"))

	policy, err := tlsid.NewPolicy(
		tlsid.Rule{Name: "web reads", Peers: []string{"spiffe://example.org/web"}, Methods: []string{"GET"}, Paths: []string{"/orders"}},
		tlsid.Rule{Name: "no admin", Deny: true, Paths: []string{"/orders/admin"}},
	)
	if err != nil {
		log.Fatal(err)
	}
	stats := &mesh.AccessStats{}
	srv, err := mesh.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.URL.Path)
	}), mesh.WithIdentity(serverSrc), mesh.WithAccessPolicy(policy), mesh.WithAccessStats(stats))
	if err != nil {
		log.Fatal(err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	static, _ := discovery.NewStatic(map[string][]discovery.Endpoint{"orders": {{ID: "orders-1", Addr: ln.Addr().String()}}})
	client, err := mesh.NewClient(mesh.WithDiscovery(static), mesh.WithIdentity(clientSrc))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	for _, path := range []string{"/orders/42", "/orders/42/../admin", "/orders//admin", "/orders%2Fadmin", "/users"} {
		resp, err := client.HTTPClient().Get("http://orders" + path)
		if err != nil {
			log.Fatal(err)
		}
		resp.Body.Close()
		fmt.Println(path, resp.StatusCode)
	}
	fmt.Println("denied:", stats.Denied())
	// Output:
	// /orders/42 200
	// /orders/42/../admin 403
	// /orders//admin 403
	// /orders%2Fadmin 403
	// /users 403
	// denied: 4
}
