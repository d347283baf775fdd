package route

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/weftmesh/weft/discovery"
)

// ConsulFilterForTest exposes the translation of Consul subset filters to
// the package's external tests.
var ConsulFilterForTest = consulFilter

// UpstreamConfigForTest exposes the translation of a caller's upstream
// configuration to the package's external tests.
var UpstreamConfigForTest = applyUpstreamConfig

// TestConsulSettings checks the watch defaults (discovery's) and that
// out-of-range and nil options are ignored.
func TestConsulSettings(t *testing.T) {
	c, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []Option
		want consulSettings
	}{
		{"defaults", nil, defaultConsulSettings()},
		{"ignored", []Option{nil, WithConsulWait(0), WithConsulRate(-1), WithConsulBackoff(0, -1), WithConsulQueryMargin(0), WithConsulDatacenter("")}, defaultConsulSettings()},
		{"set", []Option{WithConsulWait(time.Hour), WithConsulRate(3), WithConsulBackoff(time.Second, time.Millisecond), WithConsulQueryMargin(time.Second), WithConsulDatacenter("dc2")},
			consulSettings{wait: 10 * time.Minute, limit: 3, backoffMin: time.Second, backoffMax: time.Second, margin: time.Second, datacenter: "dc2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewConsul(c, []string{"web"}, tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if src.set != tc.want {
				t.Errorf("settings %+v, want %+v", src.set, tc.want)
			}
			if src.Table() == nil || src.Table().Has("web") {
				t.Error("a table before Run")
			}
		})
	}
	if discovery.DefaultConsulWait != defaultConsulSettings().wait {
		t.Error("the default wait is not discovery's")
	}
}
