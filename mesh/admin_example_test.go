package mesh_test

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
)

// The admin handler is mounted by the program, here on a loopback
// listener (without mesh.WithAdminAuthorizer it answers loopback callers
// only). Its /clusters lists the services the client has called, with
// each endpoint's state; its page, at /, shows the same live.
func ExampleClient_AdminHandler() {
	backend, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(backend, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer backend.Close()
	static, _ := discovery.NewStatic(map[string][]discovery.Endpoint{
		"payments": {{ID: "payments-1", Addr: backend.Addr().String(), Zone: "eu-1"}},
	})
	client, err := mesh.NewClient(mesh.WithDiscovery(static))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	resp, err := client.HTTPClient().Get("http://payments/charge")
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()

	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	admin := &http.Server{Handler: client.AdminHandler()}
	go admin.Serve(ln)
	defer admin.Close()

	resp, err = http.Get("http://" + ln.Addr().String() + "/clusters")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	var doc mesh.AdminClusters
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		log.Fatal(err)
	}
	for _, s := range doc.Services {
		for _, e := range s.Endpoints {
			fmt.Println(s.Service, e.ID, e.Zone, e.Health)
		}
	}
	// Output: payments payments-1 eu-1 healthy
}
