package discovery

import (
	"strconv"
	"testing"

	"github.com/hashicorp/consul/api"
)

// FuzzValidateAddr checks that ValidateAddr never panics and that what it
// accepts has a host and a port in range.
func FuzzValidateAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1:80", "[::1]:443", "::1:80", "h:0", "h:65536", "", ":", "[]:1", "a b:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		if ValidateAddr(addr) != nil {
			return
		}
		e := Endpoint{ID: "x", Addr: addr}
		if err := e.Validate(); err != nil {
			t.Fatalf("ValidateAddr accepts %q but Validate does not: %v", addr, err)
		}
	})
}

// FuzzConsulEntry feeds arbitrary addresses, ports, IDs, tags and meta
// from a Consul answer to the conversion: it must never panic, and every
// endpoint it accepts must validate.
func FuzzConsulEntry(f *testing.F) {
	f.Add("id", "127.0.0.1", "10.0.0.1", 80, "tag", "k", "v", 1)
	f.Add("id", "[::1]", "", 65535, "", "", "", 0)
	f.Add("", "::1:80", "", 0, "\xff", "", "\xff", -1)
	f.Add("x", "1.2.3.4:80", "h", 70000, "t", "zone", "z", 1<<40)
	w := &Consul{cfg: consulConfig{passingOnly: true, zoneKey: "zone"}}
	f.Fuzz(func(t *testing.T, id, addr, nodeAddr string, port int, tag, k, v string, weight int) {
		e := &api.ServiceEntry{
			Node: &api.Node{Address: nodeAddr, Meta: map[string]string{k: v}},
			Service: &api.AgentService{ID: id, Address: addr, Port: port, Tags: []string{tag},
				Meta: map[string]string{k: v}, Weights: api.AgentWeights{Passing: weight}},
		}
		ep, err := w.endpoint(e, w.cfg.passingOnly)
		if err != nil {
			return
		}
		if err := ep.Validate(); err != nil {
			t.Fatalf("accepted an invalid endpoint %+v: %v", ep, err)
		}
		if ep.ID != id || ep.Addr[len(ep.Addr)-len(strconv.Itoa(port)):] != strconv.Itoa(port) {
			t.Fatalf("endpoint %+v does not match its entry (id %q port %d)", ep, id, port)
		}
	})
}
