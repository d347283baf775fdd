package telemetry

import (
	"log/slog"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/weftmesh/weft/internal/calltel"
)

// ScopeName is the instrumentation scope under which weft's tracer and
// meter are obtained from their providers.
const ScopeName = calltel.ScopeName

// ErrInstrument is wrapped by [New] when the meter provider refuses to
// create one of weft's instruments.
var ErrInstrument = calltel.ErrInstrument

// Telemetry records the calls of a mesh client or server as OpenTelemetry
// spans and metrics, and mesh events as span events, metrics and log
// records. mesh takes one through its WithTelemetry option and records
// its client calls with it; a program wires the server side of its own
// handlers with [Telemetry.Handler] and the gRPC server interceptors.
//
// A nil *Telemetry records nothing: every method is then a no-op that
// does not allocate, which is how mesh runs when no telemetry is
// configured. Build one with [New]; it is safe for concurrent use.
type Telemetry struct {
	rec *calltel.Telemetry
}

func init() {
	calltel.Of = func(t any) *calltel.Telemetry {
		tel, _ := t.(*Telemetry)
		return tel.recorder()
	}
}

// recorder returns the implementation t wraps, nil for a nil t.
func (t *Telemetry) recorder() *calltel.Telemetry {
	if t == nil {
		return nil
	}
	return t.rec
}

type config = calltel.Config

// Option configures [New].
type Option interface{ apply(*config) }

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTracerProvider sets where spans go. The default is the global
// provider of go.opentelemetry.io/otel at the time [New] is called. A nil
// tp is ignored.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp != nil {
			c.TracerProvider = tp
		}
	})
}

// WithMeterProvider sets where metrics go. The default is the global
// provider of go.opentelemetry.io/otel at the time [New] is called. A nil
// mp is ignored.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.MeterProvider = mp
		}
	})
}

// WithPropagator sets how trace context crosses process boundaries (HTTP
// headers, gRPC metadata). The default is W3C Trace Context plus W3C
// Baggage. A nil p is ignored.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) {
		if p != nil {
			c.Propagator = p
		}
	})
}

// WithSampler makes weft decide with s which of its spans are sampled,
// before it asks the tracer provider for them. When s drops a span, weft
// does not call the tracer at all: it propagates the trace context with
// the sampled flag cleared (the parent's trace ID, or a new one for a new
// trace, a new span ID, the tracestate s returns) and hands a server's
// handler a non-recording span that carries it, allocating next to
// nothing. When s records or samples a span, weft starts it with the
// tracer provider, whose own sampler has the last word: give the provider
// [sdktrace.AlwaysSample] (or keep its default, ParentBased(AlwaysSample),
// with a parent-based s) so that it records what s samples.
//
// s is asked with the parameters the SDK's tracer would pass it: the
// parent's context, the trace ID, the span's name and kind; no attributes
// or links. The attempts of a call whose span s dropped are dropped with
// it, as a parent-based sampler would drop them. For a new trace s sees a
// trace ID of weft's; when s samples it, the provider draws the trace ID
// the trace gets.
//
// Without WithSampler, the tracer provider decides alone, and a span it
// drops costs what the SDK's non-recording spans cost. A nil s is
// ignored.
func WithSampler(s sdktrace.Sampler) Option {
	return optionFunc(func(c *config) {
		if s != nil {
			c.Sampler = s
		}
	})
}

// WithLogger sets the logger that mesh events (breaker changes,
// ejections, certificate rotations, discovery errors, authorization
// denials) are written to. The default discards them. A nil l is ignored.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.Logger = l
		}
	})
}

// WithClock sets the clock that times calls, attempts and served
// requests for the duration histograms; tests inject a fake one to
// record exact durations. The default is time.Now. Spans keep the
// tracer provider's timestamps. A nil now is ignored.
func WithClock(now func() time.Time) Option {
	return optionFunc(func(c *config) {
		if now != nil {
			c.Now = now
		}
	})
}

// WithRoute sets how an HTTP request is mapped to its route template
// ("/users/{id}"), the http.route / url.template attribute of spans and
// metrics. route must return values from a small fixed set (a template,
// never the raw path), or "" for none. On the server side the default is
// the pattern of the [http.ServeMux] that served the request
// ([http.Request.Pattern]); on the client side there is no route by
// default. A nil route is ignored.
func WithRoute(route func(r *http.Request) string) Option {
	return optionFunc(func(c *config) {
		if route != nil {
			c.Route = route
		}
	})
}

// WithMaxRPCMethods bounds how many distinct gRPC method names are used
// as metric attributes; calls to further methods are recorded as
// "_OTHER", as the semantic conventions say. The default is
// [DefaultMaxRPCMethods]. Values below 1 are ignored.
func WithMaxRPCMethods(n int) Option {
	return optionFunc(func(c *config) {
		if n >= 1 {
			c.MaxRPCMethods = n
		}
	})
}

// DefaultMaxRPCMethods is the default bound of [WithMaxRPCMethods].
const DefaultMaxRPCMethods = calltel.DefaultMaxRPCMethods

// New returns a Telemetry configured by opts, with its instruments
// created on the meter provider. It fails, wrapping [ErrInstrument], only
// when the meter provider refuses an instrument.
func New(opts ...Option) (*Telemetry, error) {
	var cfg config
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	rec, err := calltel.New(cfg)
	if err != nil {
		return nil, err
	}
	return &Telemetry{rec: rec}, nil
}

// Propagator returns the propagator t injects and extracts trace context
// with; nil for a nil t.
func (t *Telemetry) Propagator() propagation.TextMapPropagator {
	return t.recorder().Propagator()
}
