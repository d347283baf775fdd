package mesh_test

import (
	"fmt"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/mesh"
)

// Every spelling of a path comes to the same normalized path, which is
// what a server's policies, rate limits and handler see.
func ExampleNormalizePath() {
	for _, p := range []string{"/report", "//report", "/./report", "/x/../report", "/docs//"} {
		fmt.Println(mesh.NormalizePath(p))
	}
	// Output:
	// /report
	// /report
	// /report
	// /report
	// /docs/
}

// A naming template gives the identity each service's servers must
// present; discovery.WithNaming puts it on the endpoints of a static or
// DNS discovery, and a client checks it on every connection.
func ExampleWithRequiredIdentities() {
	naming, err := discovery.NamingTemplate("spiffe://example.org/ns/prod/sa/{service}")
	if err != nil {
		fmt.Println(err)
		return
	}
	id, _ := naming("payments")
	fmt.Println(id)
	static, _ := discovery.NewStatic(map[string][]discovery.Endpoint{
		"payments": {{ID: "p1", Addr: "10.0.0.7:8443"}},
	})
	_ = discovery.WithNaming(static, naming) // give it to mesh.WithDiscovery
	_, err = mesh.NewClient(mesh.WithRequiredIdentities())
	fmt.Println(err)
	// Output:
	// spiffe://example.org/ns/prod/sa/payments
	// mesh: new client: required server identities need WithIdentity
}
