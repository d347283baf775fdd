package telemetry

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
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope under which weft's tracer and
// meter are obtained from their providers.
const ScopeName = "github.com/weftmesh/weft/telemetry"

// ErrInstrument is wrapped by [New] when the meter provider refuses to
// create one of weft's instruments.
var ErrInstrument = errors.New("telemetry: cannot create instrument")

// Telemetry records the calls of a mesh client or server as OpenTelemetry
// spans and metrics, and mesh events as span events, metrics and log
// records.
//
// A nil *Telemetry records nothing: every method, and every method of
// the [Destination] it returns, is then a no-op that does not allocate,
// which is how mesh runs when no telemetry is configured. Build one with
// [New]; it is safe for concurrent use.
type Telemetry struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
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

type config struct {
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	prop   propagation.TextMapPropagator
	log    *slog.Logger
	route  func(*http.Request) string
	maxRPC int
	now    func() time.Time
}

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
			c.tp = tp
		}
	})
}

// WithMeterProvider sets where metrics go. The default is the global
// provider of go.opentelemetry.io/otel at the time [New] is called. A nil
// mp is ignored.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.mp = mp
		}
	})
}

// WithPropagator sets how trace context crosses process boundaries (HTTP
// headers, gRPC metadata). The default is W3C Trace Context plus W3C
// Baggage. A nil p is ignored.
func WithPropagator(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) {
		if p != nil {
			c.prop = p
		}
	})
}

// WithLogger sets the logger that mesh events (breaker changes,
// ejections, certificate rotations, discovery errors, authorization
// denials) are written to. The default discards them. A nil l is ignored.
func WithLogger(l *slog.Logger) Option {
	return optionFunc(func(c *config) {
		if l != nil {
			c.log = l
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
			c.now = now
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
			c.route = route
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
			c.maxRPC = n
		}
	})
}

// DefaultMaxRPCMethods is the default bound of [WithMaxRPCMethods].
const DefaultMaxRPCMethods = 256

// maxRoutes bounds the routes (from [WithRoute] or server patterns) kept
// per destination as metric attributes; further routes become "_OTHER".
const maxRoutes = 256

// New returns a Telemetry configured by opts, with its instruments
// created on the meter provider. It fails, wrapping [ErrInstrument], only
// when the meter provider refuses an instrument.
func New(opts ...Option) (*Telemetry, error) {
	cfg := config{maxRPC: DefaultMaxRPCMethods, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o.apply(&cfg)
		}
	}
	if cfg.tp == nil {
		cfg.tp = otel.GetTracerProvider()
	}
	if cfg.mp == nil {
		cfg.mp = otel.GetMeterProvider()
	}
	if cfg.prop == nil {
		cfg.prop = propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	t := &Telemetry{
		tracer:  cfg.tp.Tracer(ScopeName),
		prop:    cfg.prop,
		log:     cfg.log,
		route:   cfg.route,
		now:     cfg.now,
		methods: newBoundedSet(cfg.maxRPC),
		routes:  newBoundedSet(maxRoutes),
		dests:   make(map[string]*Destination),
	}
	meter := cfg.mp.Meter(ScopeName)
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

	endpoints      metric.Int64Gauge           // weft.endpoint.count
	breakerChanges metric.Int64Counter         // weft.breaker.transitions
	retryExhausted metric.Int64Counter         // weft.retry.budget_exhausted
	rejections     metric.Int64Counter         // weft.request.rejections
	authzDenials   metric.Int64Counter         // weft.authorization.denials
	certExpiry     metric.Int64ObservableGauge // weft.certificate.expiry
	discoveryErrs  metric.Int64Counter         // weft.discovery.errors
	ejections      metric.Int64Counter         // weft.endpoint.ejections
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
	in.endpoints, e = m.Int64Gauge("weft.endpoint.count", metric.WithUnit("{endpoint}"),
		metric.WithDescription("Endpoints of a destination service, by state (known, ejected)."))
	err = errors.Join(err, e)
	in.breakerChanges = counter("weft.breaker.transitions", "{transition}", "Circuit breaker state changes, by the state entered.")
	in.retryExhausted = counter("weft.retry.budget_exhausted", "{retry}", "Retries not made because the retry budget was exhausted.")
	in.rejections = counter("weft.request.rejections", "{request}", "Requests refused by a rate limit, a concurrency limit or load shedding.")
	in.authzDenials = counter("weft.authorization.denials", "{denial}", "Peers refused by authorization.")
	in.certExpiry, e = m.Int64ObservableGauge("weft.certificate.expiry", metric.WithUnit("s"),
		metric.WithDescription("Expiry time of the current X.509-SVID, in seconds since the Unix epoch."))
	err = errors.Join(err, e)
	in.discoveryErrs = counter("weft.discovery.errors", "{error}", "Errors reported by service discovery.")
	in.ejections = counter("weft.endpoint.ejections", "{ejection}", "Endpoints ejected by outlier detection.")
	return err
}
