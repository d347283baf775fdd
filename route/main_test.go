package route_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/weftmesh/weft/route"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// load parses and compiles a config file of testdata.
func load(t testing.TB, name string) *route.Table {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := route.Parse(data, route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	tab, err := route.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// mustParse parses a YAML config.
func mustParse(t testing.TB, y string) *route.Config {
	t.Helper()
	cfg, err := route.Parse([]byte(y), route.YAML)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
