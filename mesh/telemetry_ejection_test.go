package mesh

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/weftmesh/weft/internal/leaktest"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/weftmesh/weft/balancer"
	"github.com/weftmesh/weft/telemetry"
)

// An endpoint that outlier detection ejects shows in telemetry: the
// ejection counter, the ejected endpoint count and a log record.
func TestTelemetryOutlierEjection(t *testing.T) {
	leaktest.Check(t)
	r := newTelRig(t)
	r.serveHTTP("flaky", telAID, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	c := r.client(telClientID, WithBalancer(func(string) balancer.Policy {
		return balancer.Outlier(balancer.RoundRobin())
	}))
	hc := c.HTTPClient()
	// Five consecutive failures eject the only endpoint (at least one
	// endpoint may always be ejected).
	for i := 0; i < 5; i++ {
		code, _ := telGet(t, hc, "http://flaky/", nil)
		if code != http.StatusServiceUnavailable {
			t.Fatalf("call %d: status %d", i, code)
		}
	}
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	ejections, ejected := int64(-1), int64(-1)
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch m.Name {
			case "weft.endpoint.ejections":
				for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
					ejections = dp.Value
				}
			case "weft.endpoints":
				for _, dp := range m.Data.(metricdata.Gauge[int64]).DataPoints {
					if v, _ := dp.Attributes.Value(telemetry.EndpointStateKey); v == attribute.StringValue("ejected") {
						ejected = dp.Value
					}
				}
			}
		}
	}
	if ejections != 1 {
		t.Errorf("weft.endpoint.ejections = %d, want 1", ejections)
	}
	if ejected != 1 {
		t.Errorf("weft.endpoints{state=ejected} = %d, want 1", ejected)
	}
	if logs := r.logs.String(); !strings.Contains(logs, "weft.endpoint.ejected") || !strings.Contains(logs, "flaky-1") {
		t.Errorf("no ejection log record for flaky-1 in:\n%s", logs)
	}
}
