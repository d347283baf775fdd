package jaegertest

import (
	"context"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestStart starts a real Jaeger and reads its (empty) list of traces.
func TestStart(t *testing.T) {
	j := Start(t)
	traces, err := j.Traces(context.Background(), "nobody")
	if err != nil {
		t.Fatalf("%v\n%s", err, j.Log())
	}
	if len(traces) != 0 {
		t.Errorf("%d traces of a service that sent none", len(traces))
	}
}
