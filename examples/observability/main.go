// Command observability wires weft's telemetry to the exporters programs
// actually use: stdout for development (the default), OTLP over gRPC or
// HTTP to a collector, and a Prometheus /metrics endpoint through the
// OpenTelemetry Prometheus exporter (always on).
//
// It starts a small mesh in one process — a development CA, a weft server
// and a weft client over mutual TLS — makes a few HTTP calls, scrapes its
// own /metrics endpoint, prints the weft series, and exits. With no
// collector running, the OTLP exporters give up after -timeout: the
// program always runs to completion.
//
//	go run .                                   # spans and metrics to stdout
//	go run . -exporter=otlp-grpc -endpoint=127.0.0.1:4317
//	go run . -exporter=otlp-http -endpoint=127.0.0.1:4318
//	go run . -metrics=127.0.0.1:9464 -hold=1m  # keep /metrics up to scrape it
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/weftmesh/weft/discovery"
	"github.com/weftmesh/weft/internal/demo"
	"github.com/weftmesh/weft/mesh"
	"github.com/weftmesh/weft/telemetry"
	"github.com/weftmesh/weft/tlsid"
)

func main() {
	exporter := flag.String("exporter", "stdout", "where spans and metrics go besides Prometheus: stdout, otlp-grpc, otlp-http or none")
	endpoint := flag.String("endpoint", "", "OTLP collector host:port (default 127.0.0.1:4317 for gRPC, 127.0.0.1:4318 for HTTP)")
	metricsAddr := flag.String("metrics", "127.0.0.1:0", "address of the Prometheus /metrics endpoint")
	calls := flag.Int("calls", 5, "calls to make through the mesh")
	timeout := flag.Duration("timeout", 3*time.Second, "bound on each export and on shutdown")
	hold := flag.Duration("hold", 0, "keep serving /metrics this long before exiting")
	flag.Parse()
	if err := run(*exporter, *endpoint, *metricsAddr, *calls, *timeout, *hold, os.Stdout, nil); err != nil {
		log.Fatal(err)
	}
}

// run runs the example, writing what it does to out and, when
// exposition is not nil, the whole Prometheus exposition it scraped.
func run(exporter, endpoint, metricsAddr string, calls int, timeout, hold time.Duration, out, exposition io.Writer) error {
	ctx := context.Background()
	res := resource.NewSchemaless(semconv.ServiceName("observability-example"))

	// Metrics: the Prometheus exporter is a reader of the meter provider,
	// registered on its own registry (no global one).
	registry := prometheus.NewRegistry()
	prom, err := otelprom.New(otelprom.WithRegisterer(registry))
	if err != nil {
		return fmt.Errorf("prometheus exporter: %w", err)
	}
	mopts := []metric.Option{metric.WithResource(res), metric.WithReader(prom)}
	topts := []trace.TracerProviderOption{trace.WithResource(res)}

	switch exporter {
	case "stdout":
		se, err := stdouttrace.New(stdouttrace.WithWriter(out))
		if err != nil {
			return err
		}
		topts = append(topts, trace.WithBatcher(se))
		me, err := stdoutmetric.New(stdoutmetric.WithWriter(out))
		if err != nil {
			return err
		}
		mopts = append(mopts, metric.WithReader(metric.NewPeriodicReader(me, metric.WithInterval(time.Hour))))
	case "otlp-grpc":
		if endpoint == "" {
			endpoint = "127.0.0.1:4317"
		}
		te, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(endpoint), otlptracegrpc.WithInsecure(),
			otlptracegrpc.WithTimeout(timeout), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
		if err != nil {
			return err
		}
		topts = append(topts, trace.WithBatcher(te, trace.WithExportTimeout(timeout)))
		me, err := otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithEndpoint(endpoint), otlpmetricgrpc.WithInsecure(),
			otlpmetricgrpc.WithTimeout(timeout), otlpmetricgrpc.WithRetry(otlpmetricgrpc.RetryConfig{Enabled: false}))
		if err != nil {
			return err
		}
		mopts = append(mopts, metric.WithReader(metric.NewPeriodicReader(me, metric.WithTimeout(timeout))))
	case "otlp-http":
		if endpoint == "" {
			endpoint = "127.0.0.1:4318"
		}
		te, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(endpoint), otlptracehttp.WithInsecure(),
			otlptracehttp.WithTimeout(timeout), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
		if err != nil {
			return err
		}
		topts = append(topts, trace.WithBatcher(te, trace.WithExportTimeout(timeout)))
		me, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpoint(endpoint), otlpmetrichttp.WithInsecure(),
			otlpmetrichttp.WithTimeout(timeout), otlpmetrichttp.WithRetry(otlpmetrichttp.RetryConfig{Enabled: false}))
		if err != nil {
			return err
		}
		mopts = append(mopts, metric.WithReader(metric.NewPeriodicReader(me, metric.WithTimeout(timeout))))
	case "none":
	default:
		return fmt.Errorf("unknown exporter %q (stdout, otlp-grpc, otlp-http, none)", exporter)
	}
	tp := trace.NewTracerProvider(topts...)
	mp := metric.NewMeterProvider(mopts...)
	defer func() {
		// Bounded: with no collector, the last export fails after timeout.
		sctx, cancel := context.WithTimeout(context.Background(), 2*timeout)
		defer cancel()
		if err := errors.Join(tp.Shutdown(sctx), mp.Shutdown(sctx)); err != nil {
			fmt.Fprintf(out, "telemetry shutdown: %v\n", err)
		}
	}()

	// The Prometheus endpoint.
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{}))
	mln, err := net.Listen("tcp", metricsAddr)
	if err != nil {
		return err
	}
	msrv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = msrv.Serve(mln) }()
	defer msrv.Close()
	fmt.Fprintf(out, "Prometheus metrics on http://%s/metrics\n", mln.Addr())

	// weft's telemetry on those providers; events logged as JSON.
	tel, err := telemetry.New(telemetry.WithTracerProvider(tp), telemetry.WithMeterProvider(mp),
		telemetry.WithLogger(slog.New(slog.NewJSONHandler(out, nil))))
	if err != nil {
		return err
	}

	// A one-process mesh: server "hello" and a client, over mutual TLS.
	ca, err := tlsid.NewDevCA("example.org")
	if err != nil {
		return err
	}
	serverID := spiffeid.RequireFromString("spiffe://example.org/hello")
	clientID := spiffeid.RequireFromString("spiffe://example.org/caller")
	ssrc, err := ca.Source(serverID)
	if err != nil {
		return err
	}
	csrc, err := ca.Source(clientID)
	if err != nil {
		return err
	}
	app := http.NewServeMux()
	app.Handle("GET /hello/{name}", demo.Handler("hello-1", mesh.PeerID))
	srv, err := mesh.NewServer(app, mesh.WithIdentity(ssrc), mesh.WithTelemetry(tel))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	disc := &discovery.Static{}
	if err := disc.Set("hello", discovery.Endpoint{ID: "hello-1", Addr: ln.Addr().String()}); err != nil {
		return err
	}
	client, err := mesh.NewClient(mesh.WithDiscovery(disc), mesh.WithIdentity(csrc), mesh.WithTelemetry(tel))
	if err != nil {
		return err
	}
	defer client.Close()
	hc := client.HTTPClient()
	for i := range calls {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, _ := http.NewRequestWithContext(cctx, http.MethodGet, fmt.Sprintf("http://hello/hello/%d", i), nil)
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		fmt.Fprintf(out, "call %d: %s %s\n", i, resp.Status, body)
	}

	// Scrape our own /metrics and show the weft series.
	scraper := &http.Client{Transport: &http.Transport{}, Timeout: timeout}
	defer scraper.CloseIdleConnections()
	resp, err := scraper.Get("http://" + mln.Addr().String() + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var scraped bytes.Buffer
	if _, err := scraped.ReadFrom(resp.Body); err != nil {
		return err
	}
	if exposition != nil {
		if _, err := exposition.Write(scraped.Bytes()); err != nil {
			return err
		}
	}
	sc := bufio.NewScanner(&scraped)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "http_client_request_duration_seconds_count") ||
			strings.HasPrefix(line, "http_server_request_duration_seconds_count") {
			fmt.Fprintln(out, "scraped:", line)
		}
	}
	if hold > 0 {
		fmt.Fprintf(out, "serving /metrics for %v\n", hold)
		time.Sleep(hold)
	}
	return nil
}
