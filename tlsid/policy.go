package tlsid

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ErrBadRule reports a [Rule] that cannot be compiled: a malformed peer
// pattern, method or path.
var ErrBadRule = errors.New("tlsid: bad policy rule")

// Request is what a [RequestPolicy] decides on: who calls (the verified
// peer ID, zero when the call did not come over mutual TLS), with which
// HTTP method (gRPC calls are "POST"), on which path (the decoded HTTP
// URL path or the gRPC full method, "/package.Service/Method"; package
// mesh gives it in the form of [NormalizePath], and [Policy] and
// [Intentions] normalize it again themselves, so a non-canonical path
// cannot slip past them), and with which headers (gRPC calls: the
// request metadata). It is plain data, passed by value.
type Request struct {
	Peer   spiffeid.ID
	Method string
	Path   string
	// EscapedPath is the path as the client sent it, percent-encoded and
	// not normalized, when it differs from Path (HTTP requests); empty
	// otherwise. [Intentions] match it as Consul's proxies would see it.
	EscapedPath string
	// Header reads the request's headers; nil means none.
	Header Headers
}

// Headers reads a request's header values by name. [http.Header]
// implements it, canonicalizing the name; package mesh gives gRPC calls
// their metadata, with names lowercased. Values returns nil when the
// header is absent; the caller must not modify the slice.
type Headers interface {
	Values(name string) []string
}

// RequestPolicy decides whether a request may proceed. AuthorizeRequest
// returns nil to allow the request, an error wrapping [ErrUnauthorized] to
// deny it, and any other error when it cannot decide (the request is then
// refused as unavailable, never allowed). It is called concurrently, once
// per request, on the request's goroutine.
type RequestPolicy interface {
	AuthorizeRequest(ctx context.Context, r Request) error
}

// Rule is one allow or deny rule of a [Policy]. Each non-empty field
// narrows what the rule matches; an empty field matches anything.
//
// Peers holds patterns for the caller's ID: "*" is any verified peer;
// "spiffe://example.org" any ID of that trust domain (trust domains are
// compared whole: not example.orgi, not example.org.evil);
// "spiffe://example.org/ns/prod/*" any ID strictly below that path, in
// whole segments; any other ID matches itself exactly. With Peers empty
// the rule matches callers with and without an ID.
//
// Methods holds HTTP methods, compared exactly ("GET") by an allow rule
// and regardless of case by a deny rule (a server may take "delete" for
// DELETE); gRPC calls are "POST". A list that names GET also matches HEAD, as servers answer HEAD
// with their GET handlers ([http.ServeMux] does, RFC 9110 §9.3.2): a rule
// on GET covers HEAD.
//
// Paths holds canonical path prefixes compared by whole segments: "/admin"
// matches "/admin" and "/admin/users", not "/administrator"; "/" matches
// every path. For gRPC, "/pkg.Service" matches every method of the
// service and "/pkg.Service/Method" one method.
//
// The zero Rule is an allow rule that matches every request. A Rule is
// plain data, compiled by [NewPolicy]; changing it afterwards changes
// nothing.
type Rule struct {
	// Name identifies the rule in errors and logs.
	Name    string
	Deny    bool
	Peers   []string
	Methods []string
	Paths   []string
}

// Policy is a compiled, immutable list of [Rule]s: a request is denied if
// any deny rule matches it, else allowed if any allow rule matches it,
// else denied — once there is any rule at all, what is not allowed is
// denied. A policy with no rules allows everything.
//
// The zero value allows everything. A Policy is safe for concurrent use;
// deciding on a request does not allocate.
type Policy struct {
	rules      []rule
	defaultErr error
}

type rule struct {
	deny     bool
	anyCall  bool // Peers empty: callers with or without an ID
	anyPeer  bool // "*"
	exact    []spiffeid.ID
	domains  []spiffeid.TrustDomain
	prefixes []string // "spiffe://td/path/" prefixes
	methods  []string
	paths    []string
	err      error // returned when a deny rule matches
}

// NewPolicy compiles rules into a [Policy], failing with [ErrBadRule] on
// the first rule it cannot compile.
func NewPolicy(rules ...Rule) (*Policy, error) {
	p := &Policy{rules: make([]rule, 0, len(rules))}
	for i, r := range rules {
		name := r.Name
		if name == "" {
			name = fmt.Sprintf("#%d", i)
		}
		c, err := compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("%w %s: %w", ErrBadRule, name, err)
		}
		c.err = fmt.Errorf("%w: denied by rule %s", ErrUnauthorized, name)
		p.rules = append(p.rules, c)
	}
	p.defaultErr = fmt.Errorf("%w: no rule allows the request", ErrUnauthorized)
	return p, nil
}

func compileRule(r Rule) (rule, error) {
	c := rule{deny: r.Deny, anyCall: len(r.Peers) == 0}
	for _, pat := range r.Peers {
		switch {
		case pat == "*":
			c.anyPeer = true
		case strings.HasSuffix(pat, "/*"):
			id, err := ParseID(strings.TrimSuffix(pat, "/*"))
			if err != nil {
				return c, fmt.Errorf("peer %q: %w", truncate(pat), err)
			}
			if id.Path() == "" {
				c.domains = append(c.domains, id.TrustDomain())
			} else {
				c.prefixes = append(c.prefixes, id.String()+"/")
			}
		default:
			id, err := ParseID(pat)
			if err != nil {
				return c, fmt.Errorf("peer %q: %w", truncate(pat), err)
			}
			if id.Path() == "" {
				c.domains = append(c.domains, id.TrustDomain())
			} else {
				c.exact = append(c.exact, id)
			}
		}
	}
	for _, m := range r.Methods {
		if !isToken(m) {
			return c, fmt.Errorf("method %q is not an HTTP method token", truncate(m))
		}
		c.methods = append(c.methods, m)
	}
	if slices.Contains(c.methods, http.MethodGet) && !slices.Contains(c.methods, http.MethodHead) {
		c.methods = append(c.methods, http.MethodHead)
	}
	for _, p := range r.Paths {
		if p != "/" {
			p = strings.TrimSuffix(p, "/")
		}
		if p == "" || p[0] != '/' || CleanPath(p) != p || strings.ContainsAny(p, "?#%") {
			return c, fmt.Errorf("path %q is not a canonical absolute path", truncate(p))
		}
		c.paths = append(c.paths, p)
	}
	return c, nil
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`()<>@,;:\"/[]?={}`, c) >= 0 {
			return false
		}
	}
	return true
}

// AuthorizeRequest implements [RequestPolicy]. It cleans r.Path with
// [CleanPath] itself, so a non-canonical path cannot slip past a rule.
func (p *Policy) AuthorizeRequest(_ context.Context, r Request) error {
	if p == nil || len(p.rules) == 0 {
		return nil
	}
	reqPath := CleanPath(r.Path)
	allowed := false
	for i := range p.rules {
		ru := &p.rules[i]
		if !ru.matches(r.Peer, r.Method, reqPath) {
			continue
		}
		if ru.deny {
			return ru.err
		}
		allowed = true
	}
	if allowed {
		return nil
	}
	return p.defaultErr
}

func (r *rule) matches(peer spiffeid.ID, method, reqPath string) bool {
	if !r.matchPeer(peer) {
		return false
	}
	if len(r.methods) > 0 {
		ok := false
		for _, m := range r.methods {
			if m == method || r.deny && strings.EqualFold(m, method) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if len(r.paths) > 0 {
		ok := false
		for _, p := range r.paths {
			if pathHasPrefix(reqPath, p) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func (r *rule) matchPeer(peer spiffeid.ID) bool {
	if r.anyCall {
		return true
	}
	if peer.IsZero() {
		return false
	}
	if r.anyPeer {
		return true
	}
	for _, id := range r.exact {
		if id == peer {
			return true
		}
	}
	for _, td := range r.domains {
		if peer.MemberOf(td) {
			return true
		}
	}
	s := peer.String()
	for _, p := range r.prefixes {
		if len(s) > len(p) && strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// pathHasPrefix reports whether the clean path p starts with the clean
// prefix pre in whole segments.
func pathHasPrefix(p, pre string) bool {
	if pre == "/" {
		return true
	}
	if !strings.HasPrefix(p, pre) {
		return false
	}
	return len(p) == len(pre) || p[len(pre)] == '/'
}

// CleanPath returns the canonical form of a decoded URL path, the form
// policies match: rooted, with "." and ".." segments resolved and runs of
// slashes collapsed, without a trailing slash (path.Clean). A path that
// is already canonical is returned as is, without allocating. "%2F" in a
// request URI is a slash once decoded (net/http's URL.Path), so it is
// cleaned like one.
func CleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		return path.Clean("/" + p)
	}
	return path.Clean(p)
}
