package discovery_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/discovery"
)

func ExampleStatic() {
	var s discovery.Static
	got := make(chan discovery.Update, 1)
	stop, err := s.Watch("payments", func(u discovery.Update) { got <- u })
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	if err := s.Set("payments",
		discovery.Endpoint{ID: "p1", Addr: "10.0.0.1:8080"},
		discovery.Endpoint{ID: "p2", Addr: "10.0.0.2:8080", Weight: 3},
	); err != nil {
		log.Fatal(err)
	}
	u := <-got
	for _, e := range u.Endpoints {
		fmt.Println(e.ID, e.Addr, e.EffectiveWeight())
	}
	// Output:
	// p1 10.0.0.1:8080 1
	// p2 10.0.0.2:8080 3
}

// A Consul watcher pushes the healthy instances of a service to every
// subscriber; one blocking query per service serves them all.
func ExampleNewConsul() {
	cfg := api.DefaultConfig() // CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, ...
	w, err := discovery.NewConsul(cfg, discovery.WithTags("v2"), discovery.WithZoneKey("zone"))
	if err != nil {
		log.Fatal(err)
	}
	stop, err := w.Watch("payments", func(u discovery.Update) {
		if u.Err != nil {
			log.Printf("consul: %v (still using %d instances)", u.Err, len(u.Endpoints))
			return
		}
		log.Printf("payments: %d healthy instances", len(u.Endpoints))
	})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
	if st, ok := w.Status("payments"); ok {
		log.Printf("index %d, data at most %v old", st.Index, st.LastContact)
	}
}

// Register announces this process with a TTL check that the Registration
// keeps passing, and drains it on shutdown.
func ExampleRegister() {
	ctx := context.Background()
	reg, err := discovery.Register(ctx, api.DefaultConfig(), discovery.Instance{
		ID: "payments-1", Name: "payments", Address: "10.0.0.1", Port: 8080,
		Meta: map[string]string{"zone": "eu-west-1a"},
	}, discovery.WithTTLCheck(10*time.Second), discovery.WithDeregisterCriticalAfter(time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	// ... serve; then, on shutdown, before closing the listener:
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := reg.Drain(ctx); err != nil {
		log.Print(err)
	}
}

// A DNS watcher reads SRV records, here from Consul's DNS interface on
// its default port.
func ExampleNewDNS() {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, "127.0.0.1:8600")
	}}
	w := discovery.NewDNS(discovery.WithResolver(r), discovery.WithInterval(5*time.Second))
	stop, err := w.Watch("payments.service.consul", func(u discovery.Update) {
		log.Printf("%d instances, error %v", len(u.Endpoints), u.Err)
	})
	if err != nil {
		log.Fatal(err)
	}
	defer stop()
}
