package balancer

import (
	"math/rand/v2"
	"sync/atomic"
)

// RoundRobin returns a policy that takes the endpoints in turn. Each picker
// starts at a random offset, so a fleet of clients built at the same time
// does not send its first requests to the same endpoint.
func RoundRobin() Policy { return roundRobin{} }

type roundRobin struct{}

func (roundRobin) Build(eps []*Endpoint) Picker {
	p := &roundRobinPicker{endpoints: eps}
	p.next.Store(rand.Uint32())
	return p
}

type roundRobinPicker struct {
	endpoints []*Endpoint
	next      atomic.Uint32
}

func (p *roundRobinPicker) Pick(Info) (*Endpoint, error) {
	n := p.next.Add(1)
	return p.endpoints[n%uint32(len(p.endpoints))], nil
}
