package route

import (
	"net/http"
	"net/textproto"
	"sort"
	"strings"

	"golang.org/x/net/http/httpguts"
	"google.golang.org/grpc/metadata"
)

// HeaderRules are compiled [HeaderOps]: header changes for HTTP headers
// and gRPC metadata alike. Methods on a nil *HeaderRules do nothing.
type HeaderRules struct {
	remove []headerName
	set    []headerValue
	add    []headerValue
}

type headerName struct{ lower, canon string }

type headerValue struct {
	headerName
	value string
}

func newHeaderName(name string) headerName {
	return headerName{lower: strings.ToLower(name), canon: textproto.CanonicalMIMEHeaderKey(name)}
}

// ApplyHTTP changes h: removes, then sets, then adds.
func (r *HeaderRules) ApplyHTTP(h http.Header) { r.apply(h, false) }

// ApplyMetadata changes md as ApplyHTTP changes headers, with the
// lower-case keys of metadata.
func (r *HeaderRules) ApplyMetadata(md metadata.MD) { r.apply(md, true) }

func (r *HeaderRules) apply(m map[string][]string, lower bool) {
	if r == nil || m == nil {
		return
	}
	k := func(n headerName) string {
		if lower {
			return n.lower
		}
		return n.canon
	}
	for _, n := range r.remove {
		delete(m, k(n))
	}
	for _, kv := range r.set {
		m[k(kv.headerName)] = []string{kv.value}
	}
	for _, kv := range r.add {
		m[k(kv.headerName)] = append(m[k(kv.headerName)], kv.value)
	}
}

// compileHeaders checks and compiles ops at path; nil when ops changes
// nothing.
func (c *compiler) compileHeaders(path string, ops *HeaderOps) *HeaderRules {
	if ops == nil {
		return nil
	}
	r := &HeaderRules{}
	for _, n := range ops.Remove {
		if c.headerName(path+".remove", n) {
			r.remove = append(r.remove, newHeaderName(n))
		}
	}
	r.set = c.headerValues(path+".set", ops.Set)
	r.add = c.headerValues(path+".add", ops.Add)
	if len(r.remove)+len(r.set)+len(r.add) == 0 {
		return nil
	}
	return r
}

func (c *compiler) headerValues(path string, m map[string]string) []headerValue {
	var out []headerValue
	for _, k := range sortedKeys(m) {
		p := path + key(k)
		if !c.headerName(p, k) {
			continue
		}
		if !httpguts.ValidHeaderFieldValue(m[k]) {
			c.errorf(p, "value %q is not a valid header value", m[k])
			continue
		}
		out = append(out, headerValue{newHeaderName(k), m[k]})
	}
	return out
}

// headerName checks a header name that a rule sets, adds, removes or
// matches: a valid HTTP field name, which is also a valid gRPC metadata
// key once lower-cased, and not a pseudo-header or Host.
func (c *compiler) headerName(path, name string) bool {
	switch {
	case name == "":
		c.errorf(path, "empty header name")
	case strings.HasPrefix(name, ":") || strings.EqualFold(name, "host"):
		c.errorf(path, "%q cannot be matched or changed here: use rewrite.authority for the authority", name)
	case !httpguts.ValidHeaderFieldName(name) || strings.ContainsAny(name, "!#$%&'*+^`|~"):
		c.errorf(path, "%q is not a valid header name (letters, digits, '-', '_', '.')", name)
	default:
		return true
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
