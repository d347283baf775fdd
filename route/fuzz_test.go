package route_test

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/weftmesh/weft/route"
)

// FuzzParse feeds arbitrary bytes to the parser, the validator and the
// compiler: none panics, Compile accepts exactly what Validate accepts,
// and a compiled table survives a round trip through its config with the
// same version.
func FuzzParse(f *testing.F) {
	seed, err := os.ReadFile("testdata/routes.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(goodV1))
	f.Add([]byte(`{"services": {"web": {"routes": [{"match": [{"path": {"regex": "(a"}}]}]}}}`))
	f.Add([]byte(base + "      - backends: [{subset: v1, weight: 5000}, {subset: v2, weight: 5000}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := route.Parse(data, route.Detect)
		if err != nil {
			return
		}
		_, verr := route.Validate(cfg)
		tab, cerr := route.Compile(cfg)
		if (verr == nil) != (cerr == nil) {
			t.Fatalf("Validate: %v; Compile: %v", verr, cerr)
		}
		if cerr != nil {
			return
		}
		again, err := route.Compile(tab.Config())
		if err != nil {
			t.Fatalf("the table's own config is refused: %v", err)
		}
		if again.Version() != tab.Version() {
			t.Fatalf("version %s after a round trip, was %s", again.Version(), tab.Version())
		}
		for _, svc := range tab.Services() {
			d := tab.Match(svc, &route.Request{Method: "GET", Path: "/a/b", RawQuery: "x=1"}, 42)
			if d.Rule == nil {
				t.Fatalf("service %s: no rule", svc)
			}
			_ = d.RewritePath("/a/b")
		}
	})
}

// FuzzMatch matches arbitrary requests against the test table: no panic,
// every request of a routed service gets a rule, and a target unless the
// rule answers itself.
func FuzzMatch(f *testing.F) {
	tab := load(f, "routes.yaml")
	f.Add("GET", "/api/charge", "x-canary", "true", "debug=1", uint64(9000), false)
	f.Add("", "/pkg.Echo/Say", "x-user", "a@example.org", "", uint64(1), true)
	f.Add("HEAD", "/old/x", "x-beta", "", "de%62ug=%31&x", uint64(0), false)
	f.Add("POST", "/V9/..", "", "", "%zz=1&debug", ^uint64(0), false)
	f.Fuzz(func(t *testing.T, method, path, hname, hvalue, query string, rnd uint64, grpc bool) {
		req := route.Request{Method: method, Path: path, RawQuery: query}
		svc := "payments"
		if grpc {
			svc = "echo"
			req.Metadata = metadata.MD{strings.ToLower(hname): {hvalue}}
		} else {
			req.Header = http.Header{http.CanonicalHeaderKey(hname): {hvalue}}
		}
		d := tab.Match(svc, &req, rnd)
		switch {
		case d.Rule == nil:
			t.Fatal("no rule")
		case d.Target == nil && d.Rule.Redirect == nil && d.Rule.DirectResponse == nil:
			t.Fatalf("rule %s: no target", d.Rule.Name)
		case d.Target != nil && d.Target.Destination.Service == "":
			t.Fatalf("rule %s: a target with no service", d.Rule.Name)
		}
		_ = d.RewritePath(path)
	})
}
