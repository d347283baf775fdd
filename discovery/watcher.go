package discovery

// Watcher tells its subscribers where the instances of a service are.
//
// Watch subscribes fn to the endpoint sets of service. Each call of fn gets
// the full current [Update]; updates to one subscriber are delivered in
// order, one at a time, from a goroutine the Watcher owns, and intermediate
// updates may be coalesced when fn is slow. A subscriber that joins after
// a set is known gets it at once. fn must not block for long and must not
// call stop.
//
// stop ends the subscription: once it returns, fn is not called again and
// the subscription's goroutine has exited. stop may be called more than
// once.
//
// Implementations are safe for concurrent use.
type Watcher interface {
	Watch(service string, fn func(Update)) (stop func(), err error)
}
