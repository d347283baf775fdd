package tlsid

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/hashicorp/consul/api"
)

// TestIntentionsResistBypass decides requests crafted to get past deny
// permissions, or to be taken for what an allow names: none may be
// allowed where Consul's proxies, or an application reading the request
// the usual ways, would see a denied request.
func TestIntentionsResistBypass(t *testing.T) {
	hdr := func(kv ...string) http.Header {
		h := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Add(kv[i], kv[i+1])
		}
		return h
	}
	for _, tc := range []struct {
		name  string
		perms []*api.IntentionPermission
		req   Request // Peer is web's
		allow bool
	}{
		{"regex: decoded newline", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathRegex: "/admin/.*"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/admin/\nx"}, false},
		{"regex: decoded CR", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathRegex: "/admin.*"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/admin\r"}, false},
		{"trailing dot segment names a directory", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathPrefix: "/secret/"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/secret/x/.."}, false},
		{"backslash is a slash", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathPrefix: "/secret/"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: `/public\..\secret\x`}, false},
		{"deny written for the escaped path: %2F", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathRegex: ".*%2[Ff].*"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/a/b", EscapedPath: "/a%2fb"}, false},
		{"deny written for the escaped path: upper-case hex", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathPrefix: "/a%2F"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/a/b", EscapedPath: "/a%2fb"}, false},
		{"deny written for the escaped path: //", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathRegex: ".*//.*"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/a/b", EscapedPath: "/a//b"}, false},
		{"deny written for the escaped path: space", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathExact: "/a%20b"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/a b", EscapedPath: "/a%20b"}, false},
		{"deny matching the merged escaped path", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathExact: "/a/b%2Fc"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/a/b/c", EscapedPath: "/a//b%2Fc"}, false},
		{"allow the escaped path does not match", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{PathExact: "/a/b"})},
			Request{Method: "GET", Path: "/a/b", EscapedPath: "/a%2Fb"}, false},
		{"allow: unreserved escapes decoded, dot segments resolved", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{PathExact: "/a/b"})},
			Request{Method: "GET", Path: "/a/b", EscapedPath: "/x/%2E%2E/a/%62"}, true},
		{"allow: backslash", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{PathExact: "/a/b"})},
			Request{Method: "GET", Path: "/a/b", EscapedPath: `/a\b`}, true},
		{"trailing dot", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{PathExact: "/secret/"}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/secret/."}, false},
		{"CONNECT without a path is not under /", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "CONNECT", Path: ""}, false},
		{"CONNECT without a path, regex", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{PathRegex: ".*"})},
			Request{Method: "CONNECT", Path: ""}, false},
		{"OPTIONS * is not under /", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "OPTIONS", Path: "*"}, false},
		{"OPTIONS * matched as is", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{PathRegex: `\*`})},
			Request{Method: "OPTIONS", Path: "*"}, true},
		{"methods only: CONNECT allowed", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Methods: []string{"CONNECT"}})},
			Request{Method: "CONNECT", Path: ""}, true},
		{"lower-case method against a deny", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Methods: []string{"DELETE"}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "delete", Path: "/x"}, false},
		{"lower-case method against a :method deny", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: ":method", Exact: "DELETE"}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "delete", Path: "/x", Header: hdr(":method", "delete")}, false},
		{"lower-case method against a :method regex deny", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: ":method", Regex: "DEL.*"}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "delete", Path: "/x", Header: hdr(":method", "delete")}, false},
		{"lower-case method against a :method allow", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: ":method", Exact: "GET"}}})},
			Request{Method: "get", Path: "/x", Header: hdr(":method", "get")}, false},
		{"lower-case method against an allow", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Methods: []string{"GET"}})},
			Request{Method: "get", Path: "/x"}, false},
		{"deny header sent twice", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-debug", Exact: "1"}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/", Header: hdr("X-Debug", "1", "X-Debug", "1")}, false},
		{"deny header second of two", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-debug", Exact: "1"}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/", Header: hdr("X-Debug", "0", "X-Debug", "1")}, false},
		{"deny header with spaces", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-debug", Exact: "1"}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/", Header: hdr("X-Debug", " 1\t")}, false},
		{"allow header with spaces", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-role", Exact: "admin"}}})},
			Request{Method: "GET", Path: "/", Header: hdr("X-Role", " admin")}, false},
		{"allow header with spaces, prefix", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-role", Prefix: "ad"}}})},
			Request{Method: "GET", Path: "/", Header: hdr("X-Role", "admin ")}, true},
		{"inverted deny, one value of two", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-tenant", Exact: "public", Invert: true}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "GET", Path: "/", Header: hdr("X-Tenant", "public", "X-Tenant", "secret")}, false},
		{"allow header, joined value matches but one value does not", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-tenant", Prefix: "public"}}})},
			Request{Method: "GET", Path: "/", Header: hdr("X-Tenant", "public", "X-Tenant", "secret")}, false},
		{"allow header, every value matches", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-tenant", Prefix: "public"}}})},
			Request{Method: "GET", Path: "/", Header: hdr("X-Tenant", "public-a", "X-Tenant", "public-b")}, true},
		{"binary header value, deny matches when present", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-ticket-bin", Exact: "c3RvbGVu"}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "POST", Path: "/p.S/M", Header: hdr("X-Ticket-Bin", "stolen")}, false},
		{"binary header absent", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-ticket-bin", Exact: "c3RvbGVu"}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "POST", Path: "/p.S/M", Header: hdr()}, true},
		{"binary header value, allow never matches", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "x-ticket-bin", Exact: "b2s"}}})},
			Request{Method: "POST", Path: "/p.S/M", Header: hdr("X-Ticket-Bin", "ok")}, false},
		{"framing header net/http consumes: deny matches without it", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "Transfer-Encoding", Present: true}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "POST", Path: "/upload", Header: hdr()}, false},
		{"framing header: allow never matches", []*api.IntentionPermission{perm(allowI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "trailer", Present: true}}})},
			Request{Method: "POST", Path: "/upload", Header: hdr("Trailer", "X-T")}, false},
		{"gRPC transport header: deny matches without it", []*api.IntentionPermission{perm(denyI, api.IntentionHTTPPermission{Header: []api.IntentionHTTPHeaderPermission{{Name: "grpc-encoding", Present: true}}}), perm(allowI, api.IntentionHTTPPermission{PathPrefix: "/"})},
			Request{Method: "POST", Path: "/p.S/M", Header: hdr()}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in, err := CompileIntentions(consulTD, "api", []api.ConfigEntry{intentionsEntry("api", l7("web", tc.perms...))})
			if err != nil {
				t.Fatal(err)
			}
			r := tc.req
			r.Peer = consulID("web")
			err = in.AuthorizeRequest(context.Background(), r)
			if tc.allow && err != nil {
				t.Errorf("%v, want allowed", err)
			}
			if !tc.allow && !errors.Is(err, ErrUnauthorized) {
				t.Errorf("%v, want denied", err)
			}
		})
	}
}

func TestNormalizePathTrailingDots(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"/a/b/..", "/a/"}, {"/a/b/.", "/a/b/"}, {"/a/..", "/"}, {"/..", "/"}, {"/a/b", "/a/b"}, {"/a/b/", "/a/b/"}, {"/a/b/...", "/a/b/..."}, {"/a/.b", "/a/.b"}, {`/a\b`, "/a/b"}, {`/a\..\b\`, "/b/"},
	} {
		if got := NormalizePath(tt.in); got != tt.want {
			t.Errorf("NormalizePath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
