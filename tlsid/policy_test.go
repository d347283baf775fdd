package tlsid

import (
	"context"
	"errors"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/internal/leaktest"
)

func TestPolicy(t *testing.T) {
	leaktest.Check(t)
	p, err := NewPolicy(
		Rule{Name: "web reads", Peers: []string{"spiffe://example.org/web"}, Methods: []string{"GET", "HEAD"}, Paths: []string{"/orders"}},
		Rule{Name: "prod writes", Peers: []string{"spiffe://example.org/ns/prod/*"}, Methods: []string{"POST"}, Paths: []string{"/orders/"}},
		Rule{Name: "partner domain", Peers: []string{"spiffe://partner.org"}, Paths: []string{"/public"}},
		Rule{Name: "grpc service", Peers: []string{"*"}, Paths: []string{"/weft.demo.v1.Demo"}},
		Rule{Name: "no admin", Deny: true, Paths: []string{"/orders/admin"}},
		Rule{Name: "health", Paths: []string{"/healthz"}},
		Rule{Name: "no public deletes", Deny: true, Methods: []string{"DELETE"}, Paths: []string{"/public"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		peer, method, path string
		allow              bool
	}{
		{"spiffe://example.org/web", "GET", "/orders", true},
		{"spiffe://example.org/web", "GET", "/orders/42", true},
		{"spiffe://example.org/web", "HEAD", "/orders/42/", true},
		{"spiffe://example.org/web", "POST", "/orders", false},
		{"spiffe://example.org/web", "GET", "/ordersx", false},
		{"spiffe://example.org/web", "GET", "/orders/admin", false},
		{"spiffe://example.org/web", "GET", "/orders/./admin", false},
		{"spiffe://example.org/web", "GET", "/orders//admin/", false},
		{"spiffe://example.org/web", "GET", "/orders/x/../admin", false},
		{"spiffe://example.org/web", "GET", "/public/../orders/1", true},
		{"spiffe://example.org/web/x", "GET", "/orders", false},
		{"spiffe://example.org/ns/prod/api", "POST", "/orders", true},
		{"spiffe://example.org/ns/prod/api/v2", "POST", "/orders/7", true},
		{"spiffe://example.org/ns/prod", "POST", "/orders", false},
		{"spiffe://example.org/ns/production/api", "POST", "/orders", false},
		{"spiffe://partner.org/anything", "PUT", "/public/x", true},
		{"spiffe://partner.org/anything", "GET", "/orders", false},
		{"spiffe://partner.org/anything", "DELETE", "/public/x", false},
		{"spiffe://partner.org/anything", "delete", "/public/x", false}, // a deny ignores the method's case
		{"spiffe://partner.org/anything", "Delete", "/public/x", false},
		{"spiffe://example.org/web", "get", "/orders", false}, // an allow does not
		{"spiffe://partner.orgi/anything", "GET", "/public", false},
		{"spiffe://sub.partner.org/anything", "GET", "/public", false},
		{"spiffe://other.org/x", "POST", "/weft.demo.v1.Demo/Whoami", true},
		{"", "POST", "/weft.demo.v1.Demo/Whoami", false},
		{"", "GET", "/healthz", true},
		{"", "GET", "/", false},
		{"spiffe://example.org/web", "GET", "", false},
	}
	for _, tt := range tests {
		var id spiffeid.ID
		if tt.peer != "" {
			id = spiffeid.RequireFromString(tt.peer)
		}
		err := p.AuthorizeRequest(context.Background(), Request{Peer: id, Method: tt.method, Path: tt.path})
		if tt.allow && err != nil {
			t.Errorf("%s %s %s: denied (%v), want allowed", tt.peer, tt.method, tt.path, err)
		}
		if !tt.allow && !errors.Is(err, ErrUnauthorized) {
			t.Errorf("%s %s %s: %v, want denied", tt.peer, tt.method, tt.path, err)
		}
	}
}

func TestEmptyPolicyAllows(t *testing.T) {
	leaktest.Check(t)
	for _, p := range []*Policy{nil, {}} {
		if err := p.AuthorizeRequest(context.Background(), Request{Path: "/x"}); err != nil {
			t.Fatalf("empty policy: %v", err)
		}
	}
	p, err := NewPolicy()
	if err != nil || p.AuthorizeRequest(context.Background(), Request{}) != nil {
		t.Fatalf("NewPolicy(): %v", err)
	}
	onlyDeny, err := NewPolicy(Rule{Deny: true, Paths: []string{"/admin"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := onlyDeny.AuthorizeRequest(context.Background(), Request{Path: "/other"}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a deny-only policy allowed an unmatched request: %v", err)
	}
}

func TestCleanPath(t *testing.T) {
	leaktest.Check(t)
	for in, want := range map[string]string{
		"":                   "/",
		"/":                  "/",
		"/a":                 "/a",
		"/a/":                "/a",
		"//admin":            "/admin",
		"/a/../admin":        "/admin",
		"/a/./b":             "/a/b",
		"/../../etc":         "/etc",
		"a/b":                "/a/b",
		"/pkg.Svc/Method":    "/pkg.Svc/Method",
		"/public/..//admin/": "/admin",
	} {
		if got := CleanPath(in); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = CleanPath("/already/clean") }); n != 0 {
		t.Errorf("CleanPath of a clean path allocates %v times", n)
	}
}

func TestPolicyDoesNotAllocate(t *testing.T) {
	leaktest.Check(t)
	p, err := NewPolicy(
		Rule{Peers: []string{"spiffe://example.org/ns/prod/*", "spiffe://example.org"}, Methods: []string{"GET"}, Paths: []string{"/orders"}},
		Rule{Deny: true, Paths: []string{"/orders/admin"}},
	)
	if err != nil {
		t.Fatal(err)
	}
	r := Request{Peer: spiffeid.RequireFromString("spiffe://example.org/ns/prod/web"), Method: "GET", Path: "/orders/42"}
	ctx := context.Background()
	for _, r := range []Request{r, {Peer: r.Peer, Method: "GET", Path: "/orders/admin"}} {
		if n := testing.AllocsPerRun(100, func() { _ = p.AuthorizeRequest(ctx, r) }); n != 0 {
			t.Errorf("AuthorizeRequest(%s) allocates %v times", r.Path, n)
		}
	}
}
