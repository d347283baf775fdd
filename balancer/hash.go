package balancer

import (
	"net/textproto"
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
