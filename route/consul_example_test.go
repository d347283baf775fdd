package route_test

import (
	"context"
	"log"
	"net/http"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/route"
)

// A route source that follows the service-router, -splitter, -resolver
// and -defaults entries of the services a process calls. Pass it to
// mesh.WithRoutes; its table changes as the entries change in Consul.
func ExampleNewConsul() {
	client, err := api.NewClient(api.DefaultConfig()) // CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN…
	if err != nil {
		log.Fatal(err)
	}
	routes, err := route.NewConsul(client, []string{"payments", "ledger"},
		route.WithOnReject(func(r route.Rejection) { log.Print(r) }))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go routes.Run(ctx)
	<-routes.Ready() // the first table: every chain read and translated

	d := routes.Table().Match("payments", &route.Request{Method: "GET", Path: "/charge", Header: http.Header{}}, 0)
	if d.Target != nil {
		log.Printf("GET /charge goes to %s by %s", d.Target.Destination, d.Rule.Name)
	}
	for _, w := range routes.Table().Warnings() {
		log.Printf("not applied: %v", w)
	}
}

// A process running as "web" that calls "payments": the limits and
// passive health check of its calls come from web's own service-defaults
// (UpstreamConfig), as Consul configures web's sidecar; unapplied fields
// are logged once each.
func ExampleWithConsulCaller() {
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		log.Fatal(err)
	}
	routes, err := route.NewConsul(client, []string{"payments"},
		route.WithConsulCaller("web"),
		route.WithOnWarning(func(source string, w *route.FieldError) { log.Printf("%s: not applied: %v", source, w) }))
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go routes.Run(ctx)
	<-routes.Ready() // the chain and web's service-defaults read

	d := routes.Table().Match("payments", &route.Request{Method: "GET", Path: "/", Header: http.Header{}}, 0)
	if p := d.Target.Destination.Policy.ConnectionPool; p != nil {
		log.Printf("at most %d calls in flight to payments", p.MaxRequests)
	}
}
