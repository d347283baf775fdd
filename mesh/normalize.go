package mesh

import (
	"context"
	"net/http"
	"strings"

	"github.com/weftmesh/weft/tlsid"
)

// NormalizePath returns the normalized form of a decoded URL path (an
// [http.Request]'s URL.Path), the one form in which a weft server's
// access policies, route rate limits and the handler's routing all see a
// request's path:
//
//   - percent-encodings are decoded (net/http has done so in URL.Path;
//     this covers Istio's BASE decoding of unreserved bytes, and "%2F"
//     is a slash, as with Istio's DECODE_AND_MERGE_SLASHES, so that a
//     policy and [http.ServeMux] agree on the segments);
//   - a backslash is a slash, as with Envoy's normalize_path (Istio's
//     BASE);
//   - "." and ".." segments are resolved (RFC 3986 §5.2.4), a last one
//     leaving a trailing slash ("/docs/x/.." is "/docs/");
//   - runs of slashes are merged (Istio's MERGE_SLASHES);
//   - the path is rooted; a trailing slash is kept, as it routes
//     differently ("/docs/" is a subtree for ServeMux, "/docs" is not).
//
// A normalized path is a fixed point: NormalizePath(NormalizePath(p)) ==
// NormalizePath(p). An already normalized path is returned without
// allocating.
func NormalizePath(p string) string {
	if normalized(p) {
		return p
	}
	return tlsid.NormalizePath(p)
}

// normalized reports whether p is rooted, has no backslash and no empty,
// "." or ".." segment, except that it may end with a slash.
func normalized(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	start := 1
	for i := 1; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			if p[i] == '\\' {
				return false
			}
			continue
		}
		seg := p[start:i]
		switch {
		case seg == "." || seg == "..":
			return false
		case seg == "" && i < len(p):
			return false // "//"
		}
		start = i + 1
	}
	return true
}

// normalizeRequest returns r with its URL path normalized ([NormalizePath]),
// RawPath and Opaque cleared and RequestURI rewritten to match, or r itself when its
// path is already in that form. Asterisk-form ("OPTIONS *") and
// authority-form (CONNECT host:port) targets are not paths and stay as
// they are; a CONNECT request with a path is normalized like any other,
// as ServeMux routes it by that path.
func normalizeRequest(r *http.Request) *http.Request {
	if r.URL.RawPath == "" && normalized(r.URL.Path) {
		return r
	}
	if r.URL.Path == "*" || r.URL.Path == "" && r.Method == http.MethodConnect {
		return r
	}
	// The path as sent stays known to the access policies (accessHandler).
	r2 := r.WithContext(context.WithValue(r.Context(), escapedPathKey{}, r.URL.EscapedPath()))
	u := *r.URL
	u.Path, u.RawPath, u.Opaque = NormalizePath(r.URL.Path), "", ""
	r2.URL = &u
	r2.RequestURI = u.RequestURI()
	return r2
}

// escapedPathKey is the context key of the escaped path a request was
// sent with, when normalizeRequest changed it.
type escapedPathKey struct{}

// sentPath returns the path r was sent with, percent-encoded, or "" when
// it is r.URL.Path itself.
func sentPath(r *http.Request) string {
	p, ok := r.Context().Value(escapedPathKey{}).(string)
	if !ok {
		p = r.URL.EscapedPath()
	}
	if p == r.URL.Path {
		return ""
	}
	return p
}

// normalizeHandler normalizes the path of every request before h, the
// server's first step after the handshake: every later decision (access
// policy, rate limits, telemetry, the handler's routing) sees the same
// path. A request whose path has a NUL byte ("%00"), or whose target has
// a "#" (which net/http leaves in the path, and a fragment may not be
// sent), is refused with 400 Bad Request, as Envoy refuses them: no later
// step can be trusted to read it alike.
func normalizeHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.IndexByte(r.URL.Path, 0) >= 0 || strings.IndexByte(r.RequestURI, '#') >= 0 {
			http.Error(w, "bad request path", http.StatusBadRequest)
			return
		}
		h.ServeHTTP(w, normalizeRequest(r))
	})
}
