package discovery_test

import (
	"fmt"
	"time"

	"github.com/weftmesh/weft/discovery"
)

// HoldLastSet keeps delivering the last non-empty set, marked with
// HeldSince, when every instance disappears at once.
func ExampleHoldLastSet() {
	static, err := discovery.NewStatic(map[string][]discovery.Endpoint{"api": {{ID: "a", Addr: "10.0.0.1:80"}}})
	if err != nil {
		panic(err)
	}
	w := discovery.HoldLastSet(static, 30*time.Second)
	updates := make(chan discovery.Update, 4)
	stop, err := w.Watch("api", func(u discovery.Update) { updates <- u })
	if err != nil {
		panic(err)
	}
	defer stop()
	u := <-updates
	fmt.Println(len(u.Endpoints), "endpoint, held:", !u.HeldSince.IsZero())
	_ = static.Set("api") // every instance gone at once
	u = <-updates
	fmt.Println(len(u.Endpoints), "endpoint, held:", !u.HeldSince.IsZero())
	// Output:
	// 1 endpoint, held: false
	// 1 endpoint, held: true
}
