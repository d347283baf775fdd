package balancer

import (
	"net/textproto"
	"net/url"
	"strings"

	"google.golang.org/grpc/metadata"
)

// KeyFunc returns the key that [RingHash] and [Maglev] hash to choose an
// endpoint; requests with the same key go to the same endpoint while the
// set is unchanged. An empty key means the request has none: it goes to
// a random endpoint. A KeyFunc is called concurrently and should not
// allocate.
type KeyFunc func(Info) string

// HeaderKey returns a KeyFunc that reads the request header name: the
// first value of the HTTP header, or for gRPC the first value of the
// outgoing metadata key (name in lower case), from [Info.Metadata] or,
// when that is nil, from the context's outgoing metadata (grpc-go's
// lookup there costs one allocation; callers that have the metadata at
// hand pass it in Info.Metadata).
func HeaderKey(name string) KeyFunc {
	canonical := textproto.CanonicalMIMEHeaderKey(name)
	lower := strings.ToLower(name)
	return func(info Info) string {
		if info.HTTP != nil {
			if v := info.HTTP.Header[canonical]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		if info.Metadata != nil {
			if v := info.Metadata[lower]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		if info.Context != nil {
			if v := metadata.ValueFromOutgoingContext(info.Context, lower); len(v) > 0 {
				return v[0]
			}
		}
		return ""
	}
}

// CookieKey returns a KeyFunc that reads the value of the HTTP cookie
// name (unquoted), without allocating; gRPC requests have no key.
func CookieKey(name string) KeyFunc {
	return func(info Info) string {
		if info.HTTP == nil {
			return ""
		}
		for _, line := range info.HTTP.Header["Cookie"] {
			if v, ok := cookieValue(line, name); ok {
				return v
			}
		}
		return ""
	}
}

// QueryKey returns a KeyFunc that reads the first value of the query
// parameter name of the HTTP request's URL, decoded as url.ParseQuery
// decodes it (a pair with a semicolon or a bad escape is skipped). It
// allocates only to decode a name or value that holds an escape ('%' or
// '+'). gRPC requests have no query: their key is empty, so they go to a
// random endpoint, as HTTP requests without the parameter do.
func QueryKey(name string) KeyFunc {
	return func(info Info) string {
		if info.HTTP == nil || info.HTTP.URL == nil {
			return ""
		}
		return queryValue(info.HTTP.URL.RawQuery, name)
	}
}

// queryValue finds the first value of name in a raw query ("a=1&b=2").
func queryValue(query, name string) string {
	for query != "" {
		var pair string
		pair, query, _ = strings.Cut(query, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, ok := unescapeQuery(k)
		if !ok || k != name {
			continue
		}
		if v, ok = unescapeQuery(v); ok {
			return v
		}
	}
	return ""
}

// unescapeQuery decodes s as a query component, without allocating when
// it holds no escape.
func unescapeQuery(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, true
	}
	u, err := url.QueryUnescape(s)
	return u, err == nil
}

// cookieValue finds name in a Cookie header line ("a=1; b=2") and returns
// its value, stripped of one pair of double quotes.
func cookieValue(line, name string) (string, bool) {
	if name == "" {
		return "", false
	}
	for line != "" {
		var part string
		part, line, _ = strings.Cut(line, ";")
		part = strings.TrimSpace(part)
		k, v, _ := strings.Cut(part, "=") // "name" alone has an empty value, as for net/http
		if strings.TrimSpace(k) != name {
			continue
		}
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		return v, true
	}
	return "", false
}

// hashKey is a stable 64-bit hash of s: FNV-1a, finished with splitmix64
// for avalanche. The same key hashes alike in every process, so a fleet of
// clients sends a key to the same endpoint.
func hashKey(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return mix64(h)
}
