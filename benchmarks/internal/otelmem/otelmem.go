// Package otelmem gives the benchmarks weft telemetry with an in-memory
// OpenTelemetry SDK: spans go through the SDK's batch span processor to
// an exporter that counts them and drops them (so memory stays flat over
// a long run), and metrics are aggregated by the SDK in memory for a
// reader that is never collected. The cost measured is the cost of
// recording, as with a real exporter, minus the export itself.
package otelmem

import (
	"context"
	"errors"
	"sync/atomic"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/weftmesh/weft/telemetry"
)

// Exporter counts the spans exported to it and drops them. It is safe
// for concurrent use; the zero value is ready.
type Exporter struct {
	spans atomic.Int64
}

// ExportSpans implements [sdktrace.SpanExporter].
func (e *Exporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.spans.Add(int64(len(spans)))
	return nil
}

// Shutdown implements [sdktrace.SpanExporter].
func (e *Exporter) Shutdown(context.Context) error { return nil }

// Spans returns how many spans were exported.
func (e *Exporter) Spans() int64 { return e.spans.Load() }

// Setup is weft telemetry on an in-memory SDK.
type Setup struct {
	// Telemetry is what mesh.WithTelemetry takes.
	Telemetry *telemetry.Telemetry
	// Exporter receives the sampled spans.
	Exporter *Exporter

	tp *sdktrace.TracerProvider
	mp *sdkmetric.MeterProvider
}

// New returns telemetry that samples with sampler, as a program that
// samples some of its traces configures it: weft decides with sampler
// (telemetry.WithSampler), and the tracer provider records every span
// weft asks it for.
func New(sampler sdktrace.Sampler) (*Setup, error) {
	s := &Setup{Exporter: &Exporter{}}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(s.Exporter))
	s.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	t, err := telemetry.New(telemetry.WithSampler(sampler), telemetry.WithTracerProvider(s.tp), telemetry.WithMeterProvider(s.mp))
	if err != nil {
		return nil, errors.Join(err, s.Shutdown(context.Background()))
	}
	s.Telemetry = t
	return s, nil
}

// Flush exports the spans still queued in the batch processor.
func (s *Setup) Flush(ctx context.Context) error { return s.tp.ForceFlush(ctx) }

// Shutdown stops the SDK's goroutines.
func (s *Setup) Shutdown(ctx context.Context) error {
	return errors.Join(s.tp.Shutdown(ctx), s.mp.Shutdown(ctx))
}
