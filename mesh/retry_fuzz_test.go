package mesh

import (
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"
)

// FuzzRetryAfter: any Retry-After value parses to a non-negative wait or
// to nothing, without panicking.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "1", "120", "-1", "Wed, 21 Oct 2015 07:28:00 GMT", "", "1.5", "99999999999999999999", " 3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		resp := &http.Response{Header: http.Header{"Retry-After": []string{v}}}
		d, ok := retryAfter(resp, time.Unix(1_700_000_000, 0))
		if d < 0 || (!ok && d != 0) {
			t.Fatalf("Retry-After %q: %v %v", v, d, ok)
		}
	})
}

// FuzzPushback: any grpc-retry-pushback-ms value is a non-negative wait,
// or "do not retry" (negative), without panicking.
func FuzzPushback(f *testing.F) {
	for _, s := range []string{"0", "500", "-1", "abc", "", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := pushback(metadata.Pairs(RetryPushbackKey, v))
		if !ok {
			t.Fatalf("pushback %q not seen", v)
		}
		if d < -1 {
			t.Fatalf("pushback %q: %v", v, d)
		}
	})
}
