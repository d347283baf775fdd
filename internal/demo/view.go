package demo

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/weftmesh/weft/discovery"
)

// View is a discovery.Watcher that remembers, for each watch held
// through it, the last set the watch's callback has applied. Discovery
// updates reach watchers in the background; the examples wait on a View
// until a client has stopped choosing an instance before stopping it.
//
// Set Watcher before use. A View is safe for concurrent use.
type View struct {
	discovery.Watcher

	mu      sync.Mutex
	applied map[*byte][]discovery.Endpoint // by watch
}

// Watch implements discovery.Watcher: fn runs first, then the set it
// applied is recorded.
func (v *View) Watch(service string, fn func(discovery.Update)) (func(), error) {
	key := new(byte)
	stop, err := v.Watcher.Watch(service, func(u discovery.Update) {
		fn(u)
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.applied == nil {
			v.applied = map[*byte][]discovery.Endpoint{}
		}
		v.applied[key] = u.Endpoints
	})
	if err != nil {
		return nil, err
	}
	return func() {
		stop()
		v.mu.Lock()
		defer v.mu.Unlock()
		delete(v.applied, key)
	}, nil
}

// Holds reports whether any watch held through v has applied, last, a
// set with an endpoint whose ID is id.
func (v *View) Holds(id string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, eps := range v.applied {
		for _, ep := range eps {
			if ep.ID == id {
				return true
			}
		}
	}
	return false
}

// WaitWithout polls, every 5 ms, until no watch held through v applies
// endpoint id, for at most 30 seconds or until ctx ends.
func (v *View) WaitWithout(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for v.Holds(id) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("watchers still apply %s: %w", id, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}
