// Package calltel records the calls and events of a mesh client or server
// as OpenTelemetry spans, metrics and log records. It is the
// implementation behind package telemetry, which is its public face, and
// holds the per-call recorders that only mesh uses.
package calltel

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope under which the tracer and
// meter are obtained from their providers; package telemetry documents it.
const ScopeName = "github.com/weftmesh/weft/telemetry"

// ErrInstrument is wrapped by [New] when the meter provider refuses to
// create one of weft's instruments.
var ErrInstrument = errors.New("telemetry: cannot create instrument")

// Of returns the recorder a *telemetry.Telemetry holds, nil for a nil
// one. Package telemetry sets it when it is initialised; it is how mesh
// reaches the recorders of client calls, which are not public API. Its
// argument is typed any because this package cannot import telemetry.
var Of func(t any) *Telemetry

// Telemetry records the calls of a mesh client or server as OpenTelemetry
// spans and metrics, and mesh events as span events, metrics and log
// records: the implementation behind package telemetry's Telemetry.
//
// A nil *Telemetry records nothing: every method, and every method of
// the [Destination] it returns, is then a no-op that does not allocate.
// Build one with [New]; it is safe for concurrent use.
type Telemetry struct {
	tp     trace.TracerProvider
	tracer trace.Tracer
	// sampler, when set, decides before the tracer is asked for a span
	// (see decide).
	sampler sdktrace.Sampler
	prop    propagation.TextMapPropagator
	// w3c says prop is the default (W3C Trace Context and Baggage),
	// which attempts inject without the propagator's allocations.
	w3c bool
	// fields is how many fields prop may inject.
	fields int
	log    *slog.Logger
	route  func(*http.Request) string
	inst   instruments

	// methods bounds the gRPC method names used as metric attributes.
	methods *boundedSet
	// routes bounds the server routes used as metric attributes.
	routes *boundedSet

	now func() time.Time // the clock of the duration histograms

	mu    sync.Mutex // serialises Destination creation
	dests map[string]*Destination

	certs certificates
}

// Config is what [New] builds a Telemetry from; package telemetry's
// options fill it. Nil and zero fields take the defaults documented on
// those options.
type Config struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagator     propagation.TextMapPropagator
	Sampler        sdktrace.Sampler
	Logger         *slog.Logger
	Route          func(*http.Request) string
	MaxRPCMethods  int
	Now            func() time.Time
}

// DefaultMaxRPCMethods is the default of Config.MaxRPCMethods.
const DefaultMaxRPCMethods = 256

// maxRoutes bounds the routes (from Config.Route or server patterns) kept
// per destination as metric attributes; further routes become "_OTHER".
const maxRoutes = 256

// New returns a Telemetry configured by cfg, with its instruments
// created on the meter provider. It fails, wrapping [ErrInstrument], only
// when the meter provider refuses an instrument.
func New(cfg Config) (*Telemetry, error) {
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	w3c := cfg.Propagator == nil
	if w3c {
		cfg.Propagator = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxRPCMethods < 1 {
		cfg.MaxRPCMethods = DefaultMaxRPCMethods
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Telemetry{
		tp:      cfg.TracerProvider,
		tracer:  cfg.TracerProvider.Tracer(ScopeName),
		sampler: cfg.Sampler,
		prop:    cfg.Propagator,
		w3c:     w3c,
		fields:  len(cfg.Propagator.Fields()),
		log:     cfg.Logger,
		route:   cfg.Route,
		now:     cfg.Now,
		methods: newBoundedSet(cfg.MaxRPCMethods),
		routes:  newBoundedSet(maxRoutes),
		dests:   make(map[string]*Destination),
	}
	meter := cfg.MeterProvider.Meter(ScopeName)
	if err := t.inst.init(meter); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInstrument, err)
	}
	if _, err := meter.RegisterCallback(t.certs.observe(t), t.inst.certExpiry); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInstrument, err)
	}
	return t, nil
}

// Propagator returns the propagator t injects and extracts trace context
// with; nil for a nil t.
func (t *Telemetry) Propagator() propagation.TextMapPropagator {
	if t == nil {
		return nil
	}
	return t.prop
}

// durationBuckets are the bucket boundaries, in seconds, the semantic
// conventions advise for HTTP and RPC durations.
var durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// instruments are weft's metric instruments. Names follow OpenTelemetry
// semantic conventions v1.43.0 for HTTP and RPC; the mesh's own
// instruments are under "weft.".
type instruments struct {
	httpClient metric.Float64Histogram // http.client.request.duration
	httpServer metric.Float64Histogram // http.server.request.duration
	rpcClient  metric.Float64Histogram // rpc.client.call.duration
	rpcServer  metric.Float64Histogram // rpc.server.call.duration

	endpoints      metric.Int64Gauge           // weft.endpoints
	breakerChanges metric.Int64Counter         // weft.breaker.transitions
	retryExhausted metric.Int64Counter         // weft.retry.budget_exhausted
	rejections     metric.Int64Counter         // weft.request.rejections
	authzDenials   metric.Int64Counter         // weft.authorization.denials
	certExpiry     metric.Int64ObservableGauge // weft.certificate.expiry_timestamp
	discoveryErrs  metric.Int64Counter         // weft.discovery.errors
	ejections      metric.Int64Counter         // weft.endpoint.ejections
	routeRejects   metric.Int64Counter         // weft.route.rejections
}

func (in *instruments) init(m metric.Meter) error {
	var err, e error
	hist := func(name, desc string) metric.Float64Histogram {
		h, e := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(durationBuckets...))
		err = errors.Join(err, e)
		return h
	}
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, e := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		err = errors.Join(err, e)
		return c
	}
	in.httpClient = hist("http.client.request.duration", "Duration of HTTP client requests.")
	in.httpServer = hist("http.server.request.duration", "Duration of HTTP server requests.")
	in.rpcClient = hist("rpc.client.call.duration", "Measures the duration of an outgoing Remote Procedure Call (RPC).")
	in.rpcServer = hist("rpc.server.call.duration", "Measures the duration of an incoming Remote Procedure Call (RPC).")
	in.endpoints, e = m.Int64Gauge("weft.endpoints", metric.WithUnit("{endpoint}"),
		metric.WithDescription("Endpoints of a destination service, by state (known, ejected)."))
	err = errors.Join(err, e)
	in.breakerChanges = counter("weft.breaker.transitions", "{transition}", "Circuit breaker state changes, by the state entered.")
	in.retryExhausted = counter("weft.retry.budget_exhausted", "{retry}", "Retries not made because the retry budget was exhausted.")
	in.rejections = counter("weft.request.rejections", "{request}", "Requests refused by a rate limit, a concurrency limit or load shedding.")
	in.authzDenials = counter("weft.authorization.denials", "{denial}", "Peers refused by authorization.")
	in.certExpiry, e = m.Int64ObservableGauge("weft.certificate.expiry_timestamp", metric.WithUnit("s"),
		metric.WithDescription("Expiry time of the current X.509-SVID, in seconds since the Unix epoch."))
	err = errors.Join(err, e)
	in.discoveryErrs = counter("weft.discovery.errors", "{error}", "Errors reported by service discovery.")
	in.ejections = counter("weft.endpoint.ejections", "{ejection}", "Endpoints ejected by outlier detection.")
	in.routeRejects = counter("weft.route.rejections", "{update}", "Route table updates refused as invalid, by source.")
	return err
}
