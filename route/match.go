package route

import (
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"google.golang.org/grpc/metadata"
)

// Request is what matching reads of a call. Build it on the caller's stack
// and pass its address: [Table.Match] neither keeps nor modifies it, and it
// does not escape.
type Request struct {
	// Method is the HTTP method; empty for gRPC.
	Method string
	// Path is the normalized path (the one authorization sees); for gRPC
	// the full method name, "/pkg.Service/Method".
	Path string
	// RawQuery is the URL's query without '?', as url.URL.RawQuery.
	RawQuery string
	// Header holds the HTTP request headers; nil for gRPC.
	Header http.Header
	// Metadata holds the outgoing gRPC metadata; nil for HTTP.
	Metadata metadata.MD
}

// header returns the first value of the header whose lower-case name is
// lower and canonical name canon, from Header or Metadata.
func (r *Request) header(lower, canon string) (string, bool) {
	var vs []string
	if r.Header != nil {
		vs = r.Header[canon]
	} else {
		vs = r.Metadata[lower]
	}
	if len(vs) == 0 {
		return "", false
	}
	return vs[0], true
}

// query returns the first value of the query parameter name. It allocates
// only when a key or value it must compare is percent- or plus-encoded.
func (r *Request) query(name string) (string, bool) {
	q := r.RawQuery
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name && (!escaped(k) || unescape(k) != name) {
			continue
		}
		if escaped(v) {
			v = unescape(v)
		}
		return v, true
	}
	return "", false
}

func escaped(s string) bool { return strings.ContainsAny(s, "%+") }

func unescape(s string) string {
	u, err := url.QueryUnescape(s)
	if err != nil {
		return s
	}
	return u
}

// strKind is how a compiled string matcher compares.
type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strRegex
	strPresent
	strAny // no matcher: everything matches
)

// strMatcher is a compiled [StringMatch] or [PathMatch].
type strMatcher struct {
	kind   strKind
	value  string
	re     *regexp.Regexp
	fold   bool // ignore case
	invert bool
}

// match reports whether v, present or not, matches.
func (m *strMatcher) match(v string, present bool) bool {
	if !present {
		return m.invert
	}
	return m.test(v) != m.invert
}

func (m *strMatcher) test(v string) bool {
	switch m.kind {
	case strExact:
		if m.fold {
			return strings.EqualFold(v, m.value)
		}
		return v == m.value
	case strPrefix:
		if m.fold {
			return len(v) >= len(m.value) && strings.EqualFold(v[:len(m.value)], m.value)
		}
		return strings.HasPrefix(v, m.value)
	case strSuffix:
		if m.fold {
			return len(v) >= len(m.value) && strings.EqualFold(v[len(v)-len(m.value):], m.value)
		}
		return strings.HasSuffix(v, m.value)
	case strRegex:
		return m.re.MatchString(v)
	}
	return true // strPresent, strAny
}

// headerMatcher is a compiled header match.
type headerMatcher struct {
	lower, canon string
	strMatcher
}

// queryMatcher is a compiled query parameter match.
type queryMatcher struct {
	name string
	strMatcher
}

// matcher is a compiled [Match] entry.
type matcher struct {
	path    strMatcher // strAny when the entry has no path
	methods []string
	headers []headerMatcher
	query   []queryMatcher
}

func (m *matcher) match(r *Request) bool {
	if m.path.kind != strAny && !m.path.test(r.Path) {
		return false
	}
	if m.methods != nil && !hasMethod(m.methods, r.Method) {
		return false
	}
	for i := range m.headers {
		h := &m.headers[i]
		if !h.match(r.header(h.lower, h.canon)) {
			return false
		}
	}
	for i := range m.query {
		q := &m.query[i]
		if !q.match(r.query(q.name)) {
			return false
		}
	}
	return true
}

func hasMethod(methods []string, m string) bool {
	if m == "" {
		return false
	}
	for _, x := range methods {
		if x == m {
			return true
		}
	}
	return false
}

// Decision is the outcome of [Table.Match]: the rule that took the request
// and, unless the rule answers itself (a redirect or a direct response),
// the backend chosen by weight. The zero Decision means the table has
// nothing for the service: call it as if there were no table.
type Decision struct {
	// Rule is the matched route, or the service's implicit catch-all;
	// nil when the table has no entry for the service.
	Rule *Rule
	// Target is the chosen backend; nil when Rule is nil or answers
	// itself.
	Target *Target
	// entry is the index of the match entry that matched, -1 for a rule
	// that matches every request.
	entry int
}

// Match finds the route of a call to service and chooses its backend with
// rnd, a uniformly random number from the caller (the weights take rnd
// modulo 10000; the same number may then serve the rule's fault and
// mirror decisions, which mix it). Routes are tried in order and the
// first match wins; a request no route matches goes to the service's
// default subset. Match takes no lock and does not allocate; a nil Table
// matches nothing.
func (t *Table) Match(service string, req *Request, rnd uint64) Decision {
	if t == nil {
		return Decision{}
	}
	s := t.services[service]
	if s == nil {
		return Decision{}
	}
	for i := range s.entries {
		if e := &s.entries[i]; e.match(req) {
			return Decision{Rule: e.rule, Target: e.rule.pick(rnd), entry: e.index}
		}
	}
	return Decision{Rule: s.fallback, Target: s.fallback.pick(rnd), entry: -1}
}

// pick chooses a target by weight.
func (r *Rule) pick(rnd uint64) *Target {
	switch len(r.Targets) {
	case 0:
		return nil
	case 1:
		return r.Targets[0]
	}
	x := uint32(rnd % TotalWeight)
	for i, c := range r.cumulative {
		if x < c {
			return r.Targets[i]
		}
	}
	return r.Targets[len(r.Targets)-1]
}

// RewritePath returns the path to send: path with the rule's rewrite
// applied, or path itself when the rule has none. A path rewrite replaces
// the prefix (or the whole path) the matching entry matched. It allocates
// only when it rewrites.
func (d Decision) RewritePath(path string) string {
	r := d.Rule
	switch {
	case r == nil:
		return path
	case r.rewriteRegex != nil:
		return r.rewriteRegex.ReplaceAllString(path, r.rewriteSubst)
	case !r.rewritePath || d.entry < 0:
		return path
	}
	pm := r.matchers[d.entry].path
	if pm.kind == strExact || len(path) < len(pm.value) {
		return r.rewriteTo
	}
	return r.rewriteTo + path[len(pm.value):]
}
