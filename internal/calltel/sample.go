package calltel

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Sampling before the tracer.
//
// With a sampler of its own (Config.Sampler), weft asks it, with the
// parameters the SDK would pass, whether a span is to be sampled before
// it asks the tracer for the span. When the sampler drops it, weft does
// not call the tracer at all: the span context the span would have had —
// the parent's trace ID or a new one, a new span ID, the parent's flags
// without "sampled", the tracestate the sampler returns — is made here
// without allocating, propagated with flags 00 and, on servers, handed to
// the handler in a span of weft's own, so that the calls the handler
// makes continue the unsampled trace. When the sampler samples (or
// records), the span is started with the tracer as before, and the
// provider's own sampler has the last word.

// decide asks t's sampler whether the span named name, of kind, under
// the parent span of ctx is to be started with the tracer. It is, always,
// without a sampler, and when the sampler records or samples it. When it
// is not, sc is the span context the dropped span has.
func (t *Telemetry) decide(ctx context.Context, name string, kind trace.SpanKind) (sc trace.SpanContext, start bool) {
	if t.sampler == nil {
		return trace.SpanContext{}, true
	}
	psc := trace.SpanContextFromContext(ctx)
	tid := psc.TraceID()
	if !tid.IsValid() {
		tid = newTraceID()
	}
	res := t.sampler.ShouldSample(sdktrace.SamplingParameters{ParentContext: ctx, TraceID: tid, Name: name, Kind: kind})
	if res.Decision != sdktrace.Drop {
		return trace.SpanContext{}, true
	}
	return trace.NewSpanContext(trace.SpanContextConfig{
		TraceID:    tid,
		SpanID:     newSpanID(),
		TraceFlags: psc.TraceFlags() &^ trace.FlagsSampled,
		TraceState: res.Tracestate,
	}), false
}

// child returns the span context of a dropped span under the dropped
// span sc: same trace, flags and tracestate, a span ID of its own.
func child(sc trace.SpanContext) trace.SpanContext {
	return sc.WithSpanID(newSpanID())
}

// newTraceID returns a random, valid trace ID.
func newTraceID() trace.TraceID {
	var id trace.TraceID
	for !id.IsValid() {
		binary.BigEndian.PutUint64(id[:8], rand.Uint64())
		binary.BigEndian.PutUint64(id[8:], rand.Uint64())
	}
	return id
}

// newSpanID returns a random, valid span ID.
func newSpanID() trace.SpanID {
	var id trace.SpanID
	for !id.IsValid() {
		binary.BigEndian.PutUint64(id[:], rand.Uint64())
	}
	return id
}

// localSpan is the span of a dropped server span: it records nothing, as
// the SDK's non-recording span does, and it carries the span context the
// span would have had, so that spans and calls under it continue the
// trace. It lives in storage of the served call's own, so putting it in
// a context allocates only the context.
type localSpan struct {
	noop.Span
	sc trace.SpanContext
	tp trace.TracerProvider
}

// SpanContext returns the span's span context.
func (s *localSpan) SpanContext() trace.SpanContext { return s.sc }

// TracerProvider returns the provider of the tracer that would have
// recorded the span, as the SDK's non-recording span does.
func (s *localSpan) TracerProvider() trace.TracerProvider { return s.tp }

// unsampledContext returns the context under which the work of a dropped
// span whose parent is in ctx goes on: ctx itself, which costs nothing,
// unless a recording span is in it, which must not receive the events of
// the dropped span; then ctx with the dropped span's context sc.
func unsampledContext(ctx context.Context, sc trace.SpanContext) context.Context {
	if trace.SpanFromContext(ctx).IsRecording() {
		return trace.ContextWithSpanContext(ctx, sc)
	}
	return ctx
}

// maxTraceparentVersion is the highest traceparent version: 0xff is
// invalid.
const maxTraceparentVersion = 254

// extractW3C returns the remote span context of a traceparent value and
// its tracestate value, as propagation.TraceContext extracts it, without
// allocating unless there is a tracestate; the zero SpanContext when tp
// is absent or malformed.
func extractW3C(tp, ts string) trace.SpanContext {
	if tp == "" {
		return trace.SpanContext{}
	}
	var ver, flags [1]byte
	var scc trace.SpanContextConfig
	if !hexPart(ver[:], &tp) || ver[0] > maxTraceparentVersion ||
		!hexPart(scc.TraceID[:], &tp) || !hexPart(scc.SpanID[:], &tp) || !hexPart(flags[:], &tp) {
		return trace.SpanContext{}
	}
	if ver[0] == 0 && (tp != "" || flags[0] > 3) {
		// Version 00 has no further fields and no reserved flag bits.
		return trace.SpanContext{}
	}
	scc.TraceFlags = trace.TraceFlags(flags[0]) & (trace.FlagsSampled | trace.FlagsRandom)
	if ts != "" {
		// A malformed tracestate does not invalidate the traceparent.
		scc.TraceState, _ = trace.ParseTraceState(ts)
	}
	scc.Remote = true
	sc := trace.NewSpanContext(scc)
	if !sc.IsValid() {
		return trace.SpanContext{}
	}
	return sc
}

// hexPart decodes the next '-'-separated field of *h into dst, which it
// must fill exactly, in lower-case hexadecimal, and advances *h past it
// and its separator.
func hexPart(dst []byte, h *string) bool {
	part, rest, _ := strings.Cut(*h, "-")
	*h = rest
	if len(part) != 2*len(dst) {
		return false
	}
	for i := range dst {
		hi, ok1 := lowerHex(part[2*i])
		lo, ok2 := lowerHex(part[2*i+1])
		if !ok1 || !ok2 {
			return false
		}
		dst[i] = hi<<4 | lo
	}
	return true
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}
