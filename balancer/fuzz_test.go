package balancer

import (
	"net/http"
	"strings"
	"testing"
)

// FuzzCookieValue checks the allocation-free Cookie header scan against
// net/http's parser: whenever net/http finds the cookie, the scan finds
// the same value, and the scan never panics or returns text that is not
// in the header.
func FuzzCookieValue(f *testing.F) {
	f.Add(`session=abc; theme=dark`, "session")
	f.Add(`a="quoted value"; b=2`, "a")
	f.Add(`;;=; x ; y=`, "y")
	f.Add(`session=1;session=2`, "session")
	f.Add(``, "")
	f.Fuzz(func(t *testing.T, line, name string) {
		v, ok := cookieValue(line, name)
		if ok && !strings.Contains(line, v) {
			t.Fatalf("value %q is not part of %q", v, line)
		}
		if !ok && v != "" {
			t.Fatalf("not found but value %q", v)
		}
		r := http.Request{Header: http.Header{"Cookie": {line}}}
		c, err := r.Cookie(name)
		if err != nil || name == "" {
			return
		}
		if !ok {
			t.Fatalf("net/http finds %s=%q in %q, the scan does not", name, c.Value, line)
		}
		// net/http skips values it finds invalid and takes a later
		// occurrence; the scan takes the first. Compare values when the
		// name occurs once.
		if v != c.Value && strings.Count(line, name) == 1 && !c.Quoted {
			t.Fatalf("%q in %q: scan %q, net/http %q", name, line, v, c.Value)
		}
	})
}
