// Package telemetry records what happened to calls through the mesh as
// OpenTelemetry traces and RED metrics (rate, errors, duration), with the
// mesh's own facts (destination service, chosen endpoint, balancing
// policy, attempt number, retry or hedge, breaker state, peer SPIFFE ID,
// authorization decision) as attributes. It depends on the OpenTelemetry
// API, and on the SDK's Sampler interface for [WithSampler]; the program
// chooses the SDK and the exporters (examples/observability wires OTLP,
// Prometheus and stdout).
//
// A [Telemetry] is built by [New] from a tracer provider, a meter provider
// and a propagator ([WithTracerProvider], [WithMeterProvider],
// [WithPropagator]; by default the otel globals and W3C Trace Context plus
// Baggage), and optionally a sampler of its own ([WithSampler]). mesh takes one through its WithTelemetry option; without it,
// mesh holds a nil *Telemetry, every recorder is a no-op and nothing is
// allocated.
//
// # Spans
//
// mesh records each client call to a destination with retries or
// hedging as a span of kind internal named "{method} {service}" (HTTP) or
// "{rpc.method}" (gRPC); each attempt of it (the first, every retry,
// every hedge) is a child span of kind client, which carries the trace
// context to the server. A call that cannot have more than one attempt
// has no span of its own: its attempt's client span carries the call's
// attributes, as the semantic conventions have it for a request that is
// not resent, and the trace is one span lighter. The recorders of client
// calls are internal to weft; a program gets them through mesh.Client and
// mesh.DialGRPC. The
// server span ([Telemetry.Handler], [Telemetry.UnaryServerInterceptor])
// continues that trace; a malformed traceparent is ignored and a new trace
// starts. Attribute names follow the OpenTelemetry semantic conventions
// v1.43.0 (http.request.method, http.response.status_code, http.route,
// url.template, server.address, rpc.system.name, rpc.method,
// rpc.response.status_code, error.type), plus weft's own keys
// ([ServiceKey], [EndpointKey], [PolicyKey], [AttemptKey], [RetryKey],
// [HedgeKey], [BreakerStateKey], [PeerIDKey], [AuthzDecisionKey]).
//
// # Metrics
//
// http.client.request.duration and rpc.client.call.duration are recorded
// per attempt, http.server.request.duration and rpc.server.call.duration
// per served request, all in seconds: their count is the request rate,
// their count with error.type set the error rate. Attribute values come
// from fixed sets only: HTTP methods outside RFC 9110 become "_OTHER", routes
// are templates ([WithRoute], or the [http.ServeMux] pattern), at most
// 256 routes and [DefaultMaxRPCMethods] gRPC methods are kept, raw paths
// never are. Mesh state goes to weft.endpoints,
// weft.endpoint.ejections, weft.breaker.transitions,
// weft.retry.budget_exhausted, weft.request.rejections,
// weft.authorization.denials, weft.certificate.expiry_timestamp,
// weft.discovery.errors and weft.route.rejections through the recorder methods
// ([Telemetry.BreakerChanged], [Telemetry.Rejected], ...), which also add
// span events and log/slog records. weft.certificate.expiry_timestamp
// is a time, in seconds since the Unix epoch (a Prometheus exporter
// names it weft_certificate_expiry_timestamp_seconds). error.type of a
// failed HTTP attempt is "timeout", "canceled", "tls" (a handshake or
// certificate failure, or an alert from the peer), "connection" or
// "_OTHER".
//
// # Secrets
//
// Header values are never recorded; url.full is recorded without its
// query; error texts pass through [Redact] before they reach a span
// status or a log record.
//
// # Cost
//
// The instrumentation is written on the OpenTelemetry API directly
// rather than through otelhttp and otelgrpc, which cost more per call
// (see BenchmarkTelemetryHTTP and BenchmarkTelemetryGRPC in mesh, which
// measure both): attribute sets of metric series are built once per
// series and reused; span attributes are built only when the span is
// recording and given to it in one batch; attempt spans under a call span
// do not repeat the call's destination; single-attempt calls make one
// client span, not two. The trace context of an attempt is written into
// storage of the attempt's own, and the request's header is copied only
// when there is a field to add; an unsampled call still propagates its
// trace context (sampled=0), so that the services it calls follow the
// decision.
//
// With [WithSampler], a span the sampler drops is never asked of the
// tracer: its trace context is made and propagated by weft, and what an
// unsampled call allocates is what carrying that context takes — on a
// client, the call's own state (one allocation) and the copy of the
// request's header (two) or what grpc-go's AppendToOutgoingContext
// allocates (four); on a server, the request's state (one), the
// context handed to the handler (one) and, for HTTP, the request copy
// that carries it (one) or, for gRPC, grpc-go's copy of the incoming
// traceparent (one) (TestUnsampledAllocations). A nil *Telemetry
// costs nothing: no allocation on any path (TestNilIsFree).
package telemetry
