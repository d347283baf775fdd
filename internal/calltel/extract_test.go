package calltel

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// traceContextExtract is what propagation.TraceContext extracts from a
// traceparent and a tracestate.
func traceContextExtract(tp, ts string) trace.SpanContext {
	h := http.Header{}
	if tp != "" {
		h.Set("traceparent", tp)
	}
	if ts != "" {
		h.Set("tracestate", ts)
	}
	return trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(), propagation.HeaderCarrier(h)))
}

var traceparents = []struct{ tp, ts string }{
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ""},
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00", "vendor=opaque,other=1"},
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02", "not a tracestate"},
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03", ""},
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-04", ""},       // reserved flag in version 00
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra", ""}, // extra field in version 00
	{"01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09-extra", ""}, // a later version may add fields
	{"ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ""},       // version ff is invalid
	{"00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", ""},       // upper case
	{"00-00000000000000000000000000000000-b7ad6b7169203331-01", ""},       // zero trace ID
	{"00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", ""},       // zero span ID
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01", ""},        // short span ID
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1", ""},        // short flags
	{"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", ""},          // no flags
	{"0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", ""},        // short version
	{"00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01", ""},       // not hex
	{"00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01", ""},       // wrong separator
	{"", "vendor=opaque"},
}

// TestExtractW3C checks that the traceparent parser of the sampled-out
// path reads what propagation.TraceContext reads, valid or not.
func TestExtractW3C(t *testing.T) {
	for _, tc := range traceparents {
		got, want := extractW3C(tc.tp, tc.ts), traceContextExtract(tc.tp, tc.ts)
		if !got.Equal(want) || got.IsRemote() != want.IsRemote() {
			t.Errorf("extractW3C(%q, %q) = %v, TraceContext reads %v", tc.tp, tc.ts, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { extractW3C(traceparents[0].tp, "") }); n != 0 {
		t.Errorf("extractW3C allocates %v times without a tracestate", n)
	}
}

func FuzzExtractW3C(f *testing.F) {
	for _, tc := range traceparents {
		f.Add(tc.tp, tc.ts)
	}
	f.Fuzz(func(t *testing.T, tp, ts string) {
		got, want := extractW3C(tp, ts), traceContextExtract(tp, ts)
		if !got.Equal(want) || got.IsRemote() != want.IsRemote() {
			t.Fatalf("extractW3C(%q, %q) = %v, TraceContext reads %v", tp, ts, got, want)
		}
	})
}
