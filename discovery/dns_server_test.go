package discovery

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/weftmesh/weft/internal/leaktest"
)

// srvServer is a small authoritative DNS server on loopback UDP that
// answers SRV and A queries from tables the test sets. Consul's DNS
// interface cannot serve priorities or unresolvable targets, so this one
// does.
type srvServer struct {
	conn net.PacketConn
	done chan struct{}

	mu  sync.Mutex
	srv map[string][]dnsmessage.SRVResource
	a   map[string][4]byte
}

func startSRVServer(t *testing.T) *srvServer {
	t.Helper()
	conn, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &srvServer{conn: conn, done: make(chan struct{}), srv: map[string][]dnsmessage.SRVResource{}, a: map[string][4]byte{}}
	go s.serve()
	t.Cleanup(func() { conn.Close(); <-s.done })
	return s
}

func (s *srvServer) set(name string, srv []dnsmessage.SRVResource, a map[string][4]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv[name] = srv
	for k, v := range a {
		s.a[k] = v
	}
}

func (s *srvServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		resp := s.answer(h, q)
		if resp != nil {
			_, _ = s.conn.WriteTo(resp, from)
		}
	}
}

func (s *srvServer) answer(h dnsmessage.Header, q dnsmessage.Question) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := strings.ToLower(q.Name.String())
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true}
	srvs, haveSRV := s.srv[name]
	addr, haveA := s.a[name]
	if !haveSRV && !haveA {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	_ = b.StartQuestions()
	_ = b.Question(q)
	_ = b.StartAnswers()
	rr := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 0}
	switch {
	case q.Type == dnsmessage.TypeSRV && haveSRV:
		for _, r := range srvs {
			_ = b.SRVResource(rr, r)
		}
	case q.Type == dnsmessage.TypeA && haveA:
		_ = b.AResource(rr, dnsmessage.AResource{A: addr})
	}
	out, err := b.Finish()
	if err != nil {
		return nil
	}
	return out
}

func (s *srvServer) resolver() *net.Resolver {
	addr := s.conn.LocalAddr().String()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", addr)
	}}
}

func TestDNSPriorityWeightAndBadTargets(t *testing.T) {
	leaktest.Check(t)
	s := startSRVServer(t)
	target := func(n string) dnsmessage.Name { return dnsmessage.MustNewName(n) }
	s.set("_http._tcp.web.example.", []dnsmessage.SRVResource{
		{Priority: 10, Weight: 5, Port: 8080, Target: target("a.example.")},
		{Priority: 10, Weight: 1, Port: 8081, Target: target("b.example.")},
		{Priority: 10, Weight: 1, Port: 8082, Target: target("missing.example.")}, // does not resolve: skipped
		{Priority: 10, Weight: 1, Port: 0, Target: target("a.example.")},          // port 0: skipped
		{Priority: 20, Weight: 9, Port: 9090, Target: target("backup.example.")},  // lower priority: unused
	}, map[string][4]byte{"a.example.": {127, 0, 0, 1}, "b.example.": {127, 0, 0, 2}, "backup.example.": {127, 0, 0, 3}})
	var logs syncBuffer
	d := NewDNS(WithResolver(s.resolver()), WithSRV("http", "tcp"), WithInterval(100*time.Millisecond),
		WithDNSLogger(newTextLogger(&logs)))
	r, _ := watch(t, d, "web.example.")
	u, _ := r.waitFor(t, stateWait, "priority-10 set", hasIDs("127.0.0.1:8080", "127.0.0.2:8081"))
	for _, e := range u.Endpoints {
		if (e.ID == "127.0.0.1:8080") != (e.Weight == 5) {
			t.Errorf("weight of %s = %d", e.ID, e.Weight)
		}
	}
	for _, want := range []string{"missing.example", "port 0"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("no logged skip for %q:\n%s", want, logs.String())
		}
	}
	// The primary group goes away: the backup group is used.
	s.set("_http._tcp.web.example.", []dnsmessage.SRVResource{
		{Priority: 20, Weight: 9, Port: 9090, Target: target("backup.example.")},
	}, nil)
	r.waitFor(t, stateWait, "backup set", hasIDs("127.0.0.3:9090"))
}
