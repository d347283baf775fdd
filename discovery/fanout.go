package discovery

import (
	"fmt"
	"sync"
)

// fanout is the table of watched services behind a Watcher: one hub per
// service, shared by every subscriber of that service and reference
// counted, so a process runs one producer (a Consul long poll, a DNS loop)
// per service however many callers watch it.
type fanout struct {
	// start begins producing updates for a service into h and returns a
	// function that stops the producer and waits for it. nil means the
	// Watcher publishes by itself (Static) and hubs outlive subscribers.
	// The hub tells which service (and, for a target watch, which
	// target) to produce for.
	start func(h *hub) (stop func())

	mu   sync.Mutex
	hubs map[string]*hub
}

// hub holds the latest update of one service, or of one target of a
// service, and its subscribers.
type hub struct {
	key     string // in the table: the service name, or the target's String
	service string
	target  *Target // nil for a watch of the whole service

	mu    sync.Mutex
	last  Update
	known bool
	subs  map[*subscriber]struct{}
	stop  func() // the producer's stop; nil for published hubs
}

func (f *fanout) hub(service string) *hub { return f.hubFor(service, service, nil) }

// hubFor returns the hub of key, creating it for service and target.
func (f *fanout) hubFor(key, service string, target *Target) *hub {
	if f.hubs == nil {
		f.hubs = make(map[string]*hub)
	}
	h := f.hubs[key]
	if h == nil {
		h = &hub{key: key, service: service, target: target, subs: make(map[*subscriber]struct{})}
		f.hubs[key] = h
	}
	return h
}

// watch implements [Watcher.Watch] over the table.
func (f *fanout) watch(service string, fn func(Update)) (func(), error) {
	return f.watchHub(service, service, nil, fn)
}

// watchTarget implements [TargetWatcher.WatchTarget] over the table: a
// target has a hub of its own, apart from its service's.
func (f *fanout) watchTarget(t Target, fn func(Update)) (func(), error) {
	return f.watchHub(t.String(), t.Service, &t, fn)
}

func (f *fanout) watchHub(key, service string, target *Target, fn func(Update)) (func(), error) {
	if service == "" {
		return nil, fmt.Errorf("discovery: watch: empty service name")
	}
	if fn == nil {
		return nil, fmt.Errorf("discovery: watch %q: nil callback", key)
	}
	f.mu.Lock()
	h := f.hubFor(key, service, target)
	s := newSubscriber(fn)
	h.mu.Lock()
	h.subs[s] = struct{}{}
	first := len(h.subs) == 1 && h.stop == nil && f.start != nil
	if h.known {
		s.offer(h.last)
	}
	h.mu.Unlock()
	if first {
		h.stop = f.start(h)
	}
	f.mu.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() { f.unsubscribe(h, s) })
	}, nil
}

func (f *fanout) unsubscribe(h *hub, s *subscriber) {
	s.close()
	f.mu.Lock()
	h.mu.Lock()
	delete(h.subs, s)
	var stop func()
	if len(h.subs) == 0 && f.start != nil {
		stop, h.stop = h.stop, nil
		delete(f.hubs, h.key)
	}
	h.mu.Unlock()
	f.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// publish records u as the current state of the hub's service and offers
// it to every subscriber.
func (h *hub) publish(u Update) {
	u.Service = h.service
	h.mu.Lock()
	h.last, h.known = u, true
	for s := range h.subs {
		s.offer(u)
	}
	h.mu.Unlock()
}

// current returns the latest update and whether there is one.
func (h *hub) current() (Update, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.last, h.known
}

// subscriber delivers updates to one callback from its own goroutine,
// keeping only the newest undelivered update.
type subscriber struct {
	fn func(Update)

	mu      sync.Mutex
	pending Update
	wake    chan struct{}
	quit    chan struct{}
	done    chan struct{}
}

func newSubscriber(fn func(Update)) *subscriber {
	s := &subscriber{
		fn:   fn,
		wake: make(chan struct{}, 1),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.run()
	return s
}

func (s *subscriber) offer(u Update) {
	s.mu.Lock()
	s.pending = u
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *subscriber) run() {
	defer close(s.done)
	for {
		select {
		case <-s.quit:
			return
		case <-s.wake:
		}
		select {
		case <-s.quit:
			return
		default:
		}
		s.mu.Lock()
		u := s.pending
		s.mu.Unlock()
		s.fn(u)
	}
}

func (s *subscriber) close() {
	close(s.quit)
	<-s.done
}
